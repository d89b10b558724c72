"""The language-model machinery of rlrun.rlhf.lm against hand-worked sequences: masks, padding, sampling after EOS,
the loss on response tokens only, top-k / top-p filtering."""

from __future__ import annotations

import math

import pytest
import torch

from rlrun.rlhf.lm import (collate_pairs, collate_responses, cross_entropy_loss, filter_logits, left_pad,
                           length_buckets, pair_logprobs, positions, summed_logprobs,
                           response_mask_of, sample)

EOS, PAD = 5, 6


def test_response_mask_stops_after_the_first_eos():
    response = torch.tensor([[1, 2, EOS, 3, EOS], [EOS, 1, 1, 1, 1], [1, 2, 3, 4, 4]])
    assert response_mask_of(response, EOS).tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_collate_pairs_marks_response_tokens_and_padding():
    batch = collate_pairs([([1, 2], [3, EOS]), ([1], [2, 3, 4, EOS])], PAD)
    assert batch.input_ids.tolist() == [[1, 2, 3, EOS, PAD], [1, 2, 3, 4, EOS]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert batch.response_mask.tolist() == [[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]]


def test_left_pad_and_positions_start_at_the_first_real_token():
    ids, mask = left_pad([[7, 8, 9], [4]], PAD)
    assert ids.tolist() == [[7, 8, 9], [PAD, PAD, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions(mask).tolist() == [[0, 1, 2], [0, 0, 0]]


class TableModel(torch.nn.Module):
    """A "language model" whose next-token logits depend only on the current token: logits[token] = table[token].
    Enough to hand-compute log-probabilities; it ignores masks and positions, as the tests only read masked entries."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table.clone())

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, cache=None, **_):
        class Out:
            pass

        out = Out()
        out.logits = self.table[input_ids]
        out.cache = "cache"
        return out


def test_sft_loss_counts_only_response_tokens():
    vocab = 7
    table = torch.zeros(vocab, vocab)
    table[1, 2] = 4.0  # after token 1, token 2 is likely: the prompt's own transition, which must not count
    model = TableModel(table)
    batch = collate_pairs([([1, 2], [3, EOS])], PAD)
    logits = model(batch.input_ids).logits[:, :-1]
    loss = cross_entropy_loss(logits, batch.input_ids[:, 1:], batch.response_mask[:, 1:])
    # predicted response tokens: 3 after 2 and EOS after 3, both from uniform rows: loss log 7 each
    assert loss.item() == pytest.approx(math.log(vocab), abs=1e-6)
    full = cross_entropy_loss(logits, batch.input_ids[:, 1:], batch.attention_mask[:, 1:])
    p12 = math.exp(4.0) / (math.exp(4.0) + vocab - 1)
    assert full.item() == pytest.approx((-math.log(p12) + 2 * math.log(vocab)) / 3, abs=1e-6)
    summed, per_token = pair_logprobs(model, collate_responses([([1, 2], [3, EOS])], PAD, EOS))
    assert summed.item() == pytest.approx(-2 * math.log(vocab), abs=1e-6)  # the prompt's transition never counts
    assert per_token[0].tolist() == pytest.approx([-math.log(vocab)] * 2, abs=1e-6)


def test_collate_responses_aligns_responses_after_left_padded_prompts():
    batch = collate_responses([([1, 2], [3, EOS]), ([1], [2, 3, 4])], PAD, EOS)
    assert batch.query.tolist() == [[1, 2], [PAD, 1]]
    assert batch.query_mask.tolist() == [[1, 1], [0, 1]]
    assert batch.response.tolist() == [[3, EOS, PAD], [2, 3, 4]]
    assert batch.response_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch.ended.tolist() == [True, False]  # the second was cut before its EOS


def test_padded_batch_log_probs_equal_each_sequence_alone():
    # a real GPT-2 with the LM head on the response positions only: padding on both sides must change nothing
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=11, n_positions=16, n_embd=16,
                                                                 n_layer=2, n_head=2)).eval()
    pairs = [([1, 2, 3], [4, EOS]), ([7], [8, 9, 2, EOS]), ([3, 3], [1])]
    summed, per_token = pair_logprobs(model, collate_responses(pairs, PAD, EOS))
    for row, (prompt, response) in enumerate(pairs):
        ids = torch.tensor([prompt + response])
        alone = model(input_ids=ids).logits[0].log_softmax(-1)  # no padding, no masks, every position's logits
        expected = [alone[len(prompt) - 1 + t, token].item() for t, token in enumerate(response)]
        assert per_token[row, :len(response)].tolist() == pytest.approx(expected, abs=1e-5)
        assert per_token[row, len(response):].abs().sum().item() == 0.0
        assert summed[row].item() == pytest.approx(sum(expected), abs=1e-5)
    # the same through length buckets (the long pair goes alone, the others together), back in the input's order
    longer = pairs + [([1] * 6, [2] * 9)]
    bucketed = summed_logprobs(model, longer, PAD, EOS, torch.device("cpu"))
    assert bucketed[:3].tolist() == pytest.approx(summed.tolist(), abs=1e-5)
    ids = torch.tensor([longer[3][0] + longer[3][1]])
    alone = model(input_ids=ids).logits[0].log_softmax(-1)
    assert bucketed[3].item() == pytest.approx(sum(alone[5 + t, 2].item() for t in range(9)), abs=1e-5)


def test_length_buckets_minimize_padding_plus_call_overhead():
    # three short sequences and a long one: together 4 * (10 + 30) + 64 = 224 positions, apart 3 * 4 + 64 + 40 + 64 = 180
    assert length_buckets([(2, 2), (10, 30), (2, 2), (2, 2)], overhead_tokens=64) == [[0, 2, 3], [1]]
    # with a costly call they share one: 160 + 1000 < 52 + 2 * 1000; the group lists them shortest first
    assert length_buckets([(2, 2), (10, 30), (2, 2), (2, 2)], overhead_tokens=1000) == [[0, 2, 3, 1]]
    # free calls: every distinct length alone (any merge pads); equal lengths share a call
    assert length_buckets([(1, 3), (1, 1), (1, 2)], overhead_tokens=0) == [[1], [2], [0]]
    assert length_buckets([(3, 4)] * 5) == [[0, 1, 2, 3, 4]]


def test_sampling_pads_after_eos_and_masks_it():
    vocab = 7
    table = torch.full((vocab, vocab), -1e9)
    table[1, 2] = 0.0  # 1 -> 2 -> EOS deterministically; 3 -> 4 -> 4 -> ... never ends
    table[2, EOS] = 0.0
    table[3, 4] = 0.0
    table[4, 4] = 0.0
    table[EOS, 1] = 0.0  # after EOS the model would go on; the sampler must not
    table[PAD, 1] = 0.0
    samples = sample(TableModel(table), [[1], [0, 3]], max_new_tokens=4, eos_token_id=EOS, pad_token_id=PAD,
                     generator=torch.Generator().manual_seed(0))
    assert samples.response.tolist() == [[2, EOS, PAD, PAD], [4, 4, 4, 4]]
    assert samples.response_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert samples.ended.tolist() == [True, False]
    assert samples.query.tolist() == [[PAD, 1], [0, 3]]


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_logits(logits, top_k=2, top_p=1.0))
    assert kept.tolist() == [[True, True, False, False]]
    # nucleus 0.7: 0.5 alone is short of it, 0.5 + 0.3 reaches it; the rest is cut
    kept = torch.isfinite(filter_logits(logits, top_k=0, top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(logits, top_k=0, top_p=0.5))
    assert kept.tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_logits(logits, 0, 1.0)).all()


def test_ppo_losses_by_hand():
    from rlrun.algos.ppo_rlhf import ppo_losses

    # two tokens of one response and a padded third; ratios e^0.5 = 1.6487 (clipped at 1.2) and e^-0.1 = 0.9048
    old = torch.tensor([[-1.0, -2.0, -3.0]])
    new = torch.tensor([[-0.5, -2.1, 9.0]])
    adv = torch.tensor([[1.0, -2.0, 5.0]])
    mask = torch.tensor([[1, 1, 0]])
    values, old_values, returns = torch.tensor([[0.5, 0.0, 7.0]]), torch.zeros(1, 3), torch.tensor([[1.0, -1.0, 0.0]])
    out = ppo_losses(new, old, values, old_values, adv, returns, mask, cliprange=0.2, cliprange_value=0.2)
    r1, r2 = math.exp(0.5), math.exp(-0.1)
    # token 1: max(-1 * 1.6487, -1 * 1.2) = -1.2; token 2: max(2 * 0.9048, 2 * 0.9048) = 1.8097
    assert out["policy_loss"].item() == pytest.approx((-1.2 + 2 * r2) / 2, abs=1e-6)
    # token 1: V = 0.5, clipped 0.2, R = 1: max(0.25, 0.64); token 2: V = 0, R = -1: max(1, 1)
    assert out["value_loss"].item() == pytest.approx(0.5 * (0.64 + 1.0) / 2, abs=1e-6)
    assert out["clipfrac"].item() == pytest.approx(0.5)  # |r1 - 1| > 0.2, |r2 - 1| < 0.2
    assert out["approx_kl"].item() == pytest.approx((0.5 * 0.25 + 0.5 * 0.01) / 2, abs=1e-7)
    assert r1 > 1.2
