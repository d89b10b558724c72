"""PPO on a language model against a reward, with a KL leash to a frozen reference: the RL stage of RLHF (Ziegler et
al. 2019, "Fine-Tuning Language Models from Human Preferences"; Stiennon et al. 2020; Ouyang et al. 2022, eq. 2),
as TRL's PPOTrainer did before TRL removed it.

The state is the prompt plus the tokens generated so far, the action the next token, and an episode one response.
Each iteration draws ``batch_size`` prompts from ``env.prompts_path``, samples a response to each from the policy
(``generation``: temperature, top-k/top-p, ``max_new_tokens``, stop at EOS) and scores the finished response: with
the reward model of ``reward_model`` (a reward_model run directory; rewards normalized by its reward_stats.json) or,
when that is null, with the task's true scorer ``env.scorer``. Optional shaping: ``missing_eos_penalty`` is
subtracted from the score of a response that did not end with EOS, ``length_penalty`` times its length in tokens
from every score, and ``whiten_rewards`` scales the batch's scores to unit variance. The per-token reward is
-kl_coef (log pi - log pi_ref) at every token plus the score at the last token
(:func:`rlrun.rlhf.objectives.kl_penalized_rewards`); ``kl_coef`` follows Ziegler et al.'s adaptive controller
toward ``kl_target`` nats when ``adaptive_kl``. A value head on the policy's last hidden state gives V; advantages
are token-level GAE (``gamma``, ``lam``; the episode ends at EOS), whitened over the batch. Then ``num_ppo_epochs``
passes over ``num_mini_batches`` minibatches of the clipped surrogate (``cliprange``) plus ``vf_coef`` times the
clipped value loss (``cliprange_value``), Adam with gradient clipping (``max_grad_norm``).

``global_step`` counts responses (episodes, TRL's ``episode``), up to ``total_episodes``. Logs per iteration:
charts/reward (the score the policy is trained on, before penalties), charts/true_score (env.scorer, where it
exists), charts/kl (sequence KL to the reference), charts/entropy, charts/response_length, charts/kl_coef,
losses/policy_loss, losses/value_loss, losses/clipfrac, losses/approx_kl and perf/tokens_per_s with the seconds of
generation, scoring and update apart (perf/generate_s, perf/score_s, perf/update_s); every ``eval_every``
iterations the same measured on held-out prompts (eval/...) and a table of sample completions (TensorBoard text).
Writes ``model/`` (the policy, save_pretrained) at the end.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from omegaconf import DictConfig

from rlrun.core.config import check_bool, check_choice, check_int, check_number, fail, get
from rlrun.core.registry import AlgoSpec, register
from rlrun.core.run import Run, resolve_device
from rlrun.core.state import Counters
from rlrun.rlhf.lm import (MODEL_DIR, Samples, ValueHead, decode_responses, encode_prompt, entropy_of, hidden_size,
                          load_causal_config, load_policy_and_reference, masked_mean, masked_whiten, resolve_model,
                          sample, save_model, sequence_forward, token_logprobs)
from rlrun.rlhf.objectives import AdaptiveKLController, kl_penalized_rewards, token_gae
from rlrun.rlhf.preference_data import load_prompts
from rlrun.rlhf.text_reward import TextRewardModel, load_text_config
from rlrun.rlhf.text_task import (evaluate_policy, generation_kwargs, task_path, task_scorer, validate_generation,
                                  validate_text_env)

ITERATION_STREAM = 3  # np.random.default_rng([seed, ITERATION_STREAM, iteration]): prompts, sampling and minibatches
EVAL_SEED_OFFSET = 10_000  # held-out samples are drawn with seed + this, the same at every evaluation


def validate(cfg: DictConfig) -> None:
    """Check the ppo_rlhf keys, the prompts, the models and the reward; raises ConfigError."""
    a = "algo."
    validate_text_env(cfg, "ppo_rlhf", needs=("prompts",))
    for key in ("learning_rate", "max_grad_norm", "kl_target", "kl_horizon"):
        check_number(cfg, a + key, low=0, low_open=True)
    for key in ("kl_coef", "vf_coef", "cliprange", "cliprange_value", "missing_eos_penalty", "length_penalty"):
        check_number(cfg, a + key, low=0)
    check_number(cfg, a + "gamma", low=0, high=1)
    check_number(cfg, a + "lam", low=0, high=1)
    for key in ("total_episodes", "batch_size", "num_mini_batches", "num_ppo_epochs", "eval_every"):
        check_int(cfg, a + key, low=1)
    check_int(cfg, a + "eval_num_prompts", low=0)
    if cfg.algo.batch_size % cfg.algo.num_mini_batches:
        fail(a + "num_mini_batches", cfg.algo.num_mini_batches, f"a divisor of algo.batch_size={cfg.algo.batch_size}")
    for key in ("adaptive_kl", "whiten_rewards"):
        check_bool(cfg, a + key)
    check_choice(cfg, a + "dtype", ["float32", "bfloat16"])
    validate_generation(cfg, a)
    for key in ("model", "ref_model"):
        if key == "model" or get(cfg, a + key) is not None:
            load_causal_config(resolve_model(get(cfg, a + key), a + key), a + key)
    if get(cfg, a + "reward_model") is not None:
        load_text_config(get(cfg, a + "reward_model"), a + "reward_model")
    elif get(cfg, "env.scorer") is None:
        fail(a + "reward_model", None, "a reward_model run directory, or env.scorer set to train on the true score")
    load_prompts(task_path(cfg, "prompts"))


def ppo_losses(logprobs: torch.Tensor, old_logprobs: torch.Tensor, values: torch.Tensor, old_values: torch.Tensor,
               advantages: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, cliprange: float,
               cliprange_value: float) -> dict[str, torch.Tensor]:
    """PPO's clipped surrogate and clipped value loss over response tokens (Schulman et al. 2017; the value
    clipping of Ziegler et al. 2019's implementation), all inputs (B, T) with ``mask`` 1 on response tokens.

    Returns:
        ``policy_loss`` and ``value_loss`` (scalars with gradients: mean over masked tokens of
        max(-A r, -A clip(r, 1 -+ cliprange)) and of 0.5 max((V - R)^2, (V_clip - R)^2)), and without gradients
        ``clipfrac`` (share of tokens whose ratio left the clip range) and ``approx_kl`` (mean 0.5 (log r)^2).
    """
    log_ratio = logprobs - old_logprobs
    ratio = log_ratio.exp()
    pg_losses = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - cliprange, 1 + cliprange))
    clipped_values = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    value_losses = torch.max((values - returns) ** 2, (clipped_values - returns) ** 2)
    with torch.no_grad():
        clipfrac = masked_mean(((ratio - 1).abs() > cliprange).float(), mask)
        approx_kl = masked_mean(0.5 * log_ratio ** 2, mask)
    return {"policy_loss": masked_mean(pg_losses, mask), "value_loss": 0.5 * masked_mean(value_losses, mask),
            "clipfrac": clipfrac, "approx_kl": approx_kl}


def train(cfg: DictConfig, run: Run) -> float:
    """Train the policy by PPO against the reward; returns the held-out mean of the true score (else the reward)."""
    algo = cfg.algo
    device = resolve_device(cfg.device)
    tokenizer, policy, reference = load_policy_and_reference(algo, device)
    policy.eval()  # no dropout: the log-probabilities of sampling and of the update must agree (as TRL)
    value_head = ValueHead(hidden_size(policy)).to(device)
    scorer = task_scorer(cfg)
    reward_fn = TextRewardModel(algo.reward_model, "algo.reward_model", device) if algo.reward_model else scorer
    eval_scorers = {"reward": reward_fn, **({"true_score": scorer} if scorer and algo.reward_model else {})}
    prompts = [encode_prompt(tokenizer, p) for _, p in load_prompts(task_path(cfg, "prompts"))]
    prompt_texts = [p for _, p in load_prompts(task_path(cfg, "prompts"))]
    heldout_path = task_path(cfg, "heldout_prompts")
    heldout = [p for _, p in load_prompts(heldout_path)][:int(algo.eval_num_prompts)] if heldout_path else []
    parameters = [*policy.parameters(), *value_head.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=float(algo.learning_rate), eps=1e-5)
    kl_ctl = AdaptiveKLController(float(algo.kl_coef), float(algo.kl_target) if algo.adaptive_kl else None,
                                  float(algo.kl_horizon))
    batch_size, generation = int(algo.batch_size), generation_kwargs(algo.generation)
    minibatch = batch_size // int(algo.num_mini_batches)
    temperature = generation["temperature"] or 1.0
    iterations = -(-int(algo.total_episodes) // batch_size)
    run.set_total(iterations * batch_size)

    def forward(samples: Samples) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log pi of the sampled tokens, entropy, V) of the response tokens: (B, T) each."""
        logits, hidden = sequence_forward(policy, samples, output_hidden=True)
        logits = logits.float() / temperature
        return token_logprobs(logits, samples.response), entropy_of(logits), value_head(hidden)

    def evaluate(step: int) -> float:
        if not heldout:
            return float("nan")
        scalars, table = evaluate_policy(policy, reference, tokenizer, heldout, generation,
                                         int(cfg.seed) + EVAL_SEED_OFFSET, eval_scorers)
        run.log(step, {f"eval/{key}": value for key, value in scalars.items()})
        run.log_text(step, "samples", table)
        return scalars.get("true_score", scalars["reward"])

    # STATE: what a checkpoint holds; every iteration's randomness is seeded by (seed, iteration), so none is kept
    counters = Counters(eval_score=float("nan"))
    run.track(model=policy, value_head=value_head, optimizer=optimizer, kl_ctl=kl_ctl, counters=counters)
    global_step = run.start_step
    if global_step == 0:
        counters.eval_score = evaluate(0)

    for iteration in range(global_step // batch_size, iterations):
        rng = np.random.default_rng([int(cfg.seed), ITERATION_STREAM, iteration])
        generator = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))
        rows = rng.integers(len(prompts), size=batch_size)
        # ROLLOUT: sample responses, then score them and the per-token log-probabilities and values
        started = time.perf_counter()
        samples = sample(policy, [prompts[i] for i in rows], eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, generator=generator, **generation)
        generated = time.perf_counter()
        texts = decode_responses(tokenizer, samples)
        batch_prompts = [prompt_texts[i] for i in rows]
        with torch.no_grad():
            scores = torch.as_tensor(np.asarray(reward_fn(batch_prompts, texts)), dtype=torch.float32, device=device)
            true_scores = np.asarray(scorer(batch_prompts, texts)) if scorer and algo.reward_model else None
            old_logprobs, _, old_values = forward(samples)
            ref_logits, _ = sequence_forward(reference, samples)
            ref_logprobs = token_logprobs(ref_logits.float() / temperature, samples.response)
        scored = time.perf_counter()
        mask = samples.response_mask.float()
        lengths = mask.sum(dim=1)
        # ALGO LOGIC: shaped score at the last token, per-token KL penalty, token-level GAE, whitened advantages
        shaped = scores - float(algo.missing_eos_penalty) * (~samples.ended).float() - float(algo.length_penalty) * lengths
        if algo.whiten_rewards:
            shaped = masked_whiten(shaped, torch.ones_like(shaped), shift_mean=False)
        rewards, kl = kl_penalized_rewards(shaped, old_logprobs, ref_logprobs, mask, kl_ctl.value)
        advantages, returns = token_gae(rewards, old_values, mask, float(algo.gamma), float(algo.lam))
        advantages = masked_whiten(advantages, mask)
        stats: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clipfrac": [], "approx_kl": [],
                                         "entropy": []}
        for _ in range(int(algo.num_ppo_epochs)):
            order = rng.permutation(batch_size)
            for start in range(0, batch_size, minibatch):
                mb = torch.as_tensor(order[start:start + minibatch], device=device)
                mb_samples = Samples(*(getattr(samples, f)[mb] for f in Samples.__dataclass_fields__))
                mb_mask = mask[mb]
                logprobs, entropy, values = forward(mb_samples)
                losses = ppo_losses(logprobs, old_logprobs[mb], values, old_values[mb], advantages[mb], returns[mb],
                                    mb_mask, float(algo.cliprange), float(algo.cliprange_value))
                optimizer.zero_grad(set_to_none=True)
                (losses["policy_loss"] + float(algo.vf_coef) * losses["value_loss"]).backward()
                torch.nn.utils.clip_grad_norm_(parameters, float(algo.max_grad_norm))
                optimizer.step()
                for key, value in {**losses, "entropy": masked_mean(entropy, mb_mask)}.items():
                    stats[key].append(value.item())
        updated = time.perf_counter()
        mean_kl = kl.sum(dim=1).mean().item()
        kl_ctl.update(mean_kl, batch_size)
        global_step += batch_size
        scalars = {"charts/reward": scores.mean().item(), "charts/kl": mean_kl,
                   "charts/entropy": float(np.mean(stats["entropy"])), "charts/response_length": lengths.mean().item(),
                   "charts/eos_rate": samples.ended.float().mean().item(), "charts/kl_coef": kl_ctl.value,
                   "perf/tokens_per_s": lengths.sum().item() / (updated - started),
                   "perf/generate_s": generated - started, "perf/score_s": scored - generated,
                   "perf/update_s": updated - scored}
        scalars.update({f"losses/{key}": float(np.mean(values)) for key, values in stats.items() if key != "entropy"})
        if true_scores is not None or scorer is not None:
            scalars["charts/true_score"] = float(np.mean(true_scores if true_scores is not None else scores.cpu().numpy()))
        run.log(global_step, scalars)
        if (iteration + 1) % int(algo.eval_every) == 0 or iteration + 1 == iterations:
            counters.eval_score = evaluate(global_step)
        if run.end_iteration(global_step):
            break

    run.finish(global_step)
    if not run.should_stop:
        save_model(run.dir / MODEL_DIR, policy, tokenizer)
    return counters.eval_score


register(AlgoSpec("ppo_rlhf", validate, train, metric="held-out true score", task="text"))
