"""Direct preference optimization: Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is
Secretly a Reward Model" (NeurIPS), with IPO (Azar et al. 2023) and conservative DPO (label smoothing) as options,
the losses of :func:`rlrun.rlhf.objectives.dpo_loss`; as TRL's DPOTrainer.

The policy starts from ``algo.model`` (usually an SFT run) and a frozen reference from ``algo.ref_model`` (null:
the same model). The pairs: ``algo.pairs_path`` (prompt/chosen/rejected JSONL), ``algo.rankings_path`` (K-way
rankings, expanded into their strict K-choose-2 pairs; tied pairs carry no DPO preference and are dropped), or,
when both are null, ``algo.num_pairs`` pairs sampled from the reference model and labelled by ``env.scorer``, as
Rafailov et al. sampled from the SFT model (written to ``<run dir>/pairs.jsonl``). Each response is read as prompt
+ response + EOS, cut to ``algo.max_length`` tokens. The reference log-probabilities are computed once for all
pairs before training (``precompute_ref_log_probs=true``) or per batch.

Every ``eval_steps`` gradient steps it logs TRL's scalars over the steps since the last log (losses/dpo_loss,
rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen, logps/rejected, the implicit
reward being beta (log pi - log pi_ref)) and the same on the held-out pairs (eval/...); at the start and the end
the held-out prompts' true score (eval/true_score, from env.scorer), KL to the reference (eval/kl) and response
length, with a table of sample completions. ``global_step`` counts gradient steps. Writes ``model/``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from omegaconf import DictConfig

from rlrun.core.config import check_bool, check_choice, check_int, check_number, get
from rlrun.core.registry import AlgoSpec, register
from rlrun.core.run import Run, resolve_device
from rlrun.core.state import Counters
from rlrun.rlhf.lm import (MODEL_DIR, encode_prompt, encode_response, epoch_batches, fit_pair, load_causal_config,
                          load_policy_and_reference, resolve_model, save_model, summed_logprobs)
from rlrun.rlhf.objectives import DPO_LOSS_TYPES, dpo_loss
from rlrun.rlhf.preference_data import load_prompts
from rlrun.rlhf.text_reward import split_pairs
from rlrun.rlhf.text_task import (evaluate_policy, generation_kwargs, preference_pairs, task_path, task_scorer,
                                  validate_generation, validate_pairs_source, validate_text_env)

SHUFFLE_STREAM = 1  # np.random.default_rng([seed, SHUFFLE_STREAM, epoch]): the order of the pairs in an epoch
EVAL_SEED_OFFSET = 10_000  # held-out samples are drawn with seed + this, the same at every evaluation


def validate(cfg: DictConfig) -> None:
    """Check the dpo keys, its pairs source and models; raises ConfigError."""
    a = "algo."
    validate_text_env(cfg, "dpo", needs=("prompts",) if get(cfg, a + "pairs_path") is None
                      and get(cfg, a + "rankings_path") is None else ())
    check_number(cfg, a + "beta", low=0, low_open=True)
    check_choice(cfg, a + "loss_type", list(DPO_LOSS_TYPES))
    check_number(cfg, a + "label_smoothing", low=0, high=0.5, high_open=True)
    for key in ("learning_rate", "max_grad_norm"):
        check_number(cfg, a + key, low=0, low_open=True)
    check_number(cfg, a + "weight_decay", low=0)
    for key in ("batch_size", "num_train_epochs", "eval_steps"):
        check_int(cfg, a + key, low=1)
    check_int(cfg, a + "max_length", low=2)
    check_number(cfg, a + "holdout_fraction", low=0, high=1, low_open=True, high_open=True)
    check_bool(cfg, a + "precompute_ref_log_probs")
    check_choice(cfg, a + "dtype", ["float32", "bfloat16"])
    check_int(cfg, a + "eval_num_prompts", low=0)
    validate_generation(cfg, a)
    for key in ("model", "ref_model"):
        if key == "model" or get(cfg, a + key) is not None:
            load_causal_config(resolve_model(get(cfg, a + key), a + key), a + key)
    validate_pairs_source(cfg, a)


def train(cfg: DictConfig, run: Run) -> float:
    """Train the policy by DPO; returns the final held-out implicit-reward accuracy."""
    algo = cfg.algo
    device = resolve_device(cfg.device)
    tokenizer, model, reference = load_policy_and_reference(algo, device)
    model.train()
    pairs, labels, source = preference_pairs(cfg, "algo.", run.dir, lambda: (reference, tokenizer))
    encoded, max_length = [], int(algo.max_length)  # (prompt, chosen response, rejected response) token ids
    for pair, label in zip(pairs, labels):
        if label == 1.0:  # a tie carries no preference for DPO
            prompt = encode_prompt(tokenizer, pair.prompt)
            chosen = fit_pair(prompt, encode_response(tokenizer, pair.chosen), max_length, source, "algo.max_length")
            rejected = fit_pair(prompt, encode_response(tokenizer, pair.rejected), max_length, source, "algo.max_length")
            encoded.append((prompt, chosen[1], rejected[1]))
    print(f"rlrun: {len(encoded)} preference pairs from {source}")
    train_idx, holdout_idx = split_pairs(len(encoded), float(algo.holdout_fraction), int(cfg.seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(algo.learning_rate),
                                  weight_decay=float(algo.weight_decay))
    batch_size, epochs, beta = int(algo.batch_size), int(algo.num_train_epochs), float(algo.beta)
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    total_steps = epochs * steps_per_epoch
    run.set_total(total_steps)

    def logprobs(network, rows: np.ndarray) -> torch.Tensor:
        """(len(rows), 2) summed log-probabilities of the chosen (column 0) and rejected (1) responses."""
        sequences = [(encoded[i][0], encoded[i][1]) for i in rows] + [(encoded[i][0], encoded[i][2]) for i in rows]
        summed = summed_logprobs(network, sequences, tokenizer.pad_token_id, tokenizer.eos_token_id, device)
        return summed.view(2, len(rows)).T

    @torch.no_grad()
    def reference_logprobs(rows: np.ndarray) -> torch.Tensor:
        return torch.cat([logprobs(reference, rows[s:s + batch_size]) for s in range(0, len(rows), batch_size)])

    ref_cache = reference_logprobs(np.arange(len(encoded))) if algo.precompute_ref_log_probs else None

    def losses_of(rows: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean DPO loss of the pairs ``rows`` and TRL's statistics of them."""
        policy = logprobs(model, rows)
        ref = ref_cache[rows] if ref_cache is not None else reference_logprobs(rows)
        losses, chosen_rewards, rejected_rewards = dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], beta,
                                                            str(algo.loss_type), float(algo.label_smoothing))
        return losses.mean(), {"rewards/chosen": chosen_rewards.mean().item(),
                               "rewards/rejected": rejected_rewards.mean().item(),
                               "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
                               "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
                               "logps/chosen": policy[:, 0].mean().item(), "logps/rejected": policy[:, 1].mean().item()}

    @torch.no_grad()
    def evaluate_pairs() -> dict[str, float]:
        model.eval()
        sums, n = {}, 0
        for start in range(0, len(holdout_idx), batch_size):
            rows = holdout_idx[start:start + batch_size]
            loss, stats = losses_of(rows)
            for key, value in {"losses/dpo_loss": loss.item(), **stats}.items():
                sums[key] = sums.get(key, 0.0) + value * len(rows)
            n += len(rows)
        model.train()
        return {"eval/" + key.split("/")[1]: value / n for key, value in sums.items()}

    heldout_path = task_path(cfg, "heldout_prompts")
    heldout_prompts = [p for _, p in load_prompts(heldout_path)][:int(algo.eval_num_prompts)] if heldout_path else []
    scorer = task_scorer(cfg)

    def evaluate_samples(step: int) -> None:
        if not heldout_prompts:
            return
        scalars, table = evaluate_policy(model, reference, tokenizer, heldout_prompts, generation_kwargs(algo.generation),
                                         int(cfg.seed) + EVAL_SEED_OFFSET, {"true_score": scorer} if scorer else {})
        run.log(step, {f"eval/{key}": value for key, value in scalars.items()})
        run.log_text(step, "samples", table)

    # STATE: what a checkpoint holds; a resumed run continues after the checkpoint's gradient step
    counters = Counters(pending={}, pending_steps=0, heldout_accuracy=float("nan"))
    run.track(model=model, optimizer=optimizer, counters=counters, epoch=lambda: global_step // steps_per_epoch)
    global_step = run.start_step
    if global_step == 0:
        evaluate_samples(0)

    for rows in epoch_batches(train_idx, batch_size, epochs, int(cfg.seed), SHUFFLE_STREAM, global_step):
        # ALGO LOGIC: DPO loss of a batch of pairs against the frozen reference, gradient clipping, AdamW step
        loss, stats = losses_of(rows)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(algo.max_grad_norm))
        optimizer.step()
        global_step += 1
        for key, value in {"losses/dpo_loss": loss.item(), **stats}.items():
            counters.pending[key] = counters.pending.get(key, 0.0) + value
        counters.pending_steps += 1
        if global_step % int(algo.eval_steps) == 0 or global_step == total_steps:
            scalars = {key: value / counters.pending_steps for key, value in counters.pending.items()}
            scalars.update(evaluate_pairs())
            counters.heldout_accuracy = scalars["eval/accuracies"]
            run.log(global_step, scalars)
            counters.pending, counters.pending_steps = {}, 0
        if run.end_iteration(global_step):
            run.finish(global_step)
            return counters.heldout_accuracy

    evaluate_samples(global_step)
    run.finish(global_step)
    save_model(run.dir / MODEL_DIR, model, tokenizer)
    return counters.heldout_accuracy


register(AlgoSpec("dpo", validate, train, metric="held-out implicit-reward accuracy", task="text"))
