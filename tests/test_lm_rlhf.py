"""Language-model RLHF, the parts apart from the loops: demonstrations and K-way rankings files, and the DPO, IPO
and cDPO losses, the per-token KL penalty, token-level GAE and the adaptive KL coefficient, against hand-computed
values."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlrun.core.config import ConfigError
from rlrun.rlhf.objectives import AdaptiveKLController, best_of_n_kl, dpo_loss, kl_penalized_rewards, token_gae
from rlrun.rlhf.preference_data import TextPair, load_demonstrations, load_rankings, ranking_pairs


def write_lines(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


# ---- files ----------------------------------------------------------------------------------------------

def test_rankings_expand_into_every_pair_with_ties(tmp_path):
    path = write_lines(tmp_path / "rankings.jsonl", [
        {"prompt": "Q?", "responses": ["a", "b", "c"], "ranking": [2, 1, 2]},  # b best, a and c tie
        {"prompt": "R?", "responses": ["x", "y"], "ranking": [1, 2]},
    ])
    rankings = load_rankings(path)
    assert rankings[0].pairs() == [(0, 1, 0.0), (0, 2, 0.5), (1, 2, 1.0)]
    pairs, labels = ranking_pairs(rankings)
    assert pairs == [TextPair("Q?", "b", "a"), TextPair("Q?", "a", "c"), TextPair("Q?", "b", "c"),
                     TextPair("R?", "x", "y")]
    assert labels == [1.0, 0.5, 1.0, 1.0]  # K-choose-2 = 3 + 1 comparisons


@pytest.mark.parametrize("record, expected", [
    ({"prompt": "Q", "responses": ["a"], "ranking": [1]}, "expected a list of at least 2 responses"),
    ({"prompt": "Q", "responses": ["a", " "], "ranking": [1, 2]}, "responses[1] is empty"),
    ({"prompt": "Q", "responses": ["a", "b"], "ranking": [1]}, "expected one integer rank >= 1 per response (2)"),
    ({"prompt": "Q", "responses": ["a", "b"], "ranking": [0, 1]}, "expected one integer rank >= 1"),
    ({"prompt": "Q", "responses": ["a", "b"]}, "has no key 'ranking'"),
])
def test_a_bad_ranking_names_its_line(tmp_path, record, expected):
    good = {"prompt": "Q", "responses": ["a", "b"], "ranking": [1, 1]}
    path = write_lines(tmp_path / "rankings.jsonl", [good, record])
    with pytest.raises(ConfigError) as info:
        load_rankings(path)
    assert str(info.value).startswith(f"{path} line 2") and expected in str(info.value), str(info.value)


def test_demonstrations_load_and_an_empty_response_names_its_line(tmp_path):
    path = write_lines(tmp_path / "sft.jsonl", [{"prompt": "", "response": "Hello."}, {"prompt": "Hi", "response": "Yo"}])
    assert [(d.prompt, d.response) for d in load_demonstrations(path)] == [("", "Hello."), ("Hi", "Yo")]
    bad = write_lines(tmp_path / "bad.jsonl", [{"prompt": "Hi", "response": "Yo"}, {"prompt": "Hi", "response": ""}])
    with pytest.raises(ConfigError, match=r"bad.jsonl line 2: response is empty"):
        load_demonstrations(bad)
    with pytest.raises(ConfigError, match=r"line 1 has no key 'response'"):
        load_demonstrations(write_lines(tmp_path / "keys.jsonl", [{"prompt": "Hi", "answer": "Yo"}]))


# ---- DPO ------------------------------------------------------------------------------------------------
# log pi(y_w) = -1, log pi(y_l) = -3, log pi_ref(y_w) = log pi_ref(y_l) = -2: h = 2; beta = 0.5, beta h = 1
LOGPS = [torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0])]


def test_dpo_ipo_and_cdpo_losses_by_hand():
    losses, chosen, rejected = dpo_loss(*LOGPS, beta=0.5)
    assert losses.item() == pytest.approx(math.log(1 + math.exp(-1)))  # -log sigmoid(1) = 0.31326
    assert (chosen.item(), rejected.item()) == (0.5, -0.5)  # beta (log pi - log pi_ref)
    smoothed, _, _ = dpo_loss(*LOGPS, beta=0.5, label_smoothing=0.1)
    assert smoothed.item() == pytest.approx(0.9 * math.log(1 + math.exp(-1)) + 0.1 * math.log(1 + math.e))
    ipo, _, _ = dpo_loss(*LOGPS, beta=0.5, loss_type="ipo")
    assert ipo.item() == pytest.approx((2 - 1 / (2 * 0.5)) ** 2)  # (h - 1/(2 beta))^2 = 1


def test_dpo_gradient_raises_the_chosen_and_lowers_the_rejected_log_probability():
    chosen, rejected = torch.tensor([-1.0], requires_grad=True), torch.tensor([-3.0], requires_grad=True)
    dpo_loss(chosen, rejected, LOGPS[2], LOGPS[3], beta=0.5)[0].sum().backward()
    # d/d log pi(y_w) of -log sigmoid(beta h) = -beta sigmoid(-beta h) = -0.5 / (1 + e)
    assert chosen.grad.item() == pytest.approx(-0.5 / (1 + math.e)) and rejected.grad.item() == pytest.approx(0.5 / (1 + math.e))


@pytest.mark.parametrize("kwargs, message", [({"beta": 0.0}, "beta=0.0: expected a number > 0"),
                                             ({"beta": 0.1, "loss_type": "hinge"}, "loss_type='hinge'"),
                                             ({"beta": 0.1, "label_smoothing": 0.5}, "label_smoothing=0.5")])
def test_bad_dpo_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dpo_loss(*LOGPS, **kwargs)


# ---- PPO-RLHF --------------------------------------------------------------------------------------------
# one response of 3 tokens, EOS at t = 2, then a pad token: log-ratios 0.5, 0, 0.5 (the pad's is masked)
LOGPROBS = torch.tensor([[-1.0, -2.0, -0.5, -3.0]])
REFERENCE = torch.tensor([[-1.5, -2.0, -1.0, -9.0]])
MASK = torch.tensor([[1, 1, 1, 0]])


def test_the_kl_penalty_is_per_token_and_the_score_comes_at_the_last_token():
    rewards, kl = kl_penalized_rewards(torch.tensor([2.0]), LOGPROBS, REFERENCE, MASK, kl_coef=0.2)
    torch.testing.assert_close(kl, torch.tensor([[0.5, 0.0, 0.5, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.1, 0.0, 1.9, 0.0]]))  # -0.2 kl; + 2 at EOS
    with pytest.raises(ValueError, match="kl_coef=-0.1: expected a number >= 0"):
        kl_penalized_rewards(torch.tensor([2.0]), LOGPROBS, REFERENCE, MASK, kl_coef=-0.1)


def test_token_gae_stops_at_the_eos_by_hand():
    rewards = torch.tensor([[-0.1, 0.0, 1.9, 0.0]])
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0]])  # the value after EOS is never used
    advantages, returns = token_gae(rewards, values, MASK, gamma=1.0, gae_lambda=0.5)
    # t=2: 1.9 + 0 - 3 = -1.1; t=1: (0 + 3 - 2) + .5(-1.1) = 0.45; t=0: (-0.1 + 2 - 1) + .5(.45) = 1.125
    torch.testing.assert_close(advantages, torch.tensor([[1.125, 0.45, -1.1, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[2.125, 2.45, 1.9, 0.0]]))


def test_the_adaptive_kl_coefficient_moves_toward_the_target_by_at_most_a_fifth_per_horizon():
    control = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    assert control.update(kl=9.0, steps=512) == pytest.approx(0.1 * (1 + 0.2 * 512 / 10_000))  # error clipped at .2
    assert control.update(kl=5.0, steps=512) == pytest.approx(0.1 * (1 + 0.2 * 0.0512) * (1 - 1 / 6 * 0.0512))
    fixed = AdaptiveKLController(0.1, target=None, horizon=10_000)
    assert fixed.update(kl=100.0, steps=512) == 0.1
    restored = AdaptiveKLController(1.0, target=6.0, horizon=10_000)
    restored.load_state_dict(control.state_dict())
    assert restored.value == control.value


def test_best_of_n_kl_by_hand():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert best_of_n_kl(16) == pytest.approx(math.log(16) - 15 / 16)
