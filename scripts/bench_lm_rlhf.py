"""Throughput benchmark of rlrun's language-model RLHF (DPO and PPO-RLHF) against TRL, on the tiny GPT-2.

Both sides train the same model (``rlrun-tiny-gpt2``, :func:`rlrun.rlhf.tiny_lm.tiny_lm_path`: a GPT-2 of 4 layers,
width 192, 2.2M parameters), in float32 on the CPU with the same torch thread count (``--threads``), in the same
invocation, one run at a time (rlrun and TRL alternate in every repeat, so a slow phase of the machine hits both).
TRL is never imported by rlrun: it lives in a virtual environment of its own, whose interpreter ``--trl-python``
names, and this very file runs there as the TRL worker (``--trl-worker dpo|ppo``), in a fresh process per run.
Without ``--trl-python``, or when TRL cannot run there, rlrun's figures are printed alone with the reason.

Timing: every training step (DPO: one gradient step; PPO: one iteration of generation, scoring and update) ends
with a ``time.perf_counter()`` clock point, on rlrun's side at ``Run.end_iteration`` (called by the algorithm
after each step, so rlrun's own ``train`` runs unchanged through ``rlrun.cli.train.run_training`` on a config
composed as the ``rlrun`` command composes it), on TRL's side at the trainer's ``on_step_end`` callback. Step 1 is
a warm-up; the rate is measured from the end of step 1 to the end of step 1 + K, so model loading, data
preparation and the final step (rlrun's held-out evaluation, TRL's final log) are never timed.

1. DPO (rlrun ``algo=dpo``, TRL ``DPOTrainer``): ``--dpo-steps`` K gradient steps of 32 pairs, pairs/s. The pairs
   are built from the sentiment task's demonstrations (``env=sentiment``): chosen = a sentence's true
   continuation, rejected = the next sentence's; prompt + response + EOS cut to 64 tokens; sigmoid loss, beta 0.1,
   AdamW at 1e-4 (constant), gradient norm clipped at 1, reference log-probabilities computed per batch by a
   frozen copy of the model on both sides. TRL gets the pairs as text in rlrun's order of the first epoch and
   reads them in that order (``train_sampling_strategy="sequential"``), so every step sees the same batch on
   both sides; the worker checks that TRL's tokenization equals rlrun's, pair by pair. The loss of the first
   batch is taken on both sides: policy == reference at the start, so it must be log 2 = 0.6931 on both.
2. PPO-RLHF (rlrun ``algo=ppo_rlhf``, TRL's ``PPOTrainer``): ``--ppo-iterations`` K iterations of 64 prompts of
   the sentiment task, responses sampled at temperature 1 up to 24 new tokens (stop at EOS), scored by a
   sequence-classification reward model of the same size (``GPT2ForSequenceClassification`` from the tiny
   model's weights, a new scalar head, seed 0, built here), KL coefficient 0.05 (k1, per token), 4 PPO epochs x 4
   minibatches of 16, clip 0.2, value clip 0.2, vf_coef 0.1, gamma 1, lambda 0.95, Adam at 1e-4 (eps 1e-5,
   constant). The figure is response tokens/s: the tokens of the responses up to and including EOS, over the
   wall time of the timed iterations; generation, scoring and update seconds per iteration are shown apart
   (rlrun's from its perf/generate_s, perf/score_s, perf/update_s scalars; TRL's from clock points around its
   ``batch_generation``, its first update forward pass and its per-iteration log).
3. Peak RSS (``VmHWM``) of each training process, loading included.

TRL removed PPOTrainer after 1.12.0 (``trl/experimental/ppo/`` is gone from 1.13.0 on; before 0.29 it was
``trl/trainer/ppo_trainer.py``), so the PPO comparison needs ``trl<=1.12.0``; DPOTrainer is in every release.
Set up the TRL side once (CPU torch, never the CUDA build)::

    python3.11 -m venv /work/trl-venv
    /work/trl-venv/bin/pip install torch==2.13.0
    /work/trl-venv/bin/pip install trl==1.12.0 transformers==5.25.0

Usage::

    python scripts/bench_lm_rlhf.py --trl-python /work/trl-venv/bin/python            # the full benchmark
    python scripts/bench_lm_rlhf.py --trl-python /work/trl-venv/bin/python --quick    # smoke check, tiny sizes
    python scripts/bench_lm_rlhf.py --trl-python /work/trl-venv/bin/python --record   # also write docs/benchmarks.md
    python scripts/bench_lm_rlhf.py --trl-python /work/trl-venv/bin/python --profile  # cProfile of the timed steps
"""

from __future__ import annotations

# Only light imports at module level: the rlrun measurement processes are started with "spawn" and re-import
# this module, and the TRL worker runs this file in another virtual environment that has no rlrun.
import argparse
import contextlib
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# benchlib.py sits next to this script, so it is on sys.path when the script runs (it imports only the stdlib)
from benchlib import DOCS, GB, compose_config, in_subprocess, peak_rss, publish, say

SEED = 1
THREADS = 2  # torch threads on both sides (--threads)
WARMUP_STEPS = 1  # untimed steps before the timed ones
LOG2 = math.log(2.0)
DPO = {  # shared by rlrun (algo.<key>) and TRL (DPOConfig)
    "batch_size": 32,  # pairs per gradient step
    "max_length": 64,  # tokens of prompt + response + EOS
    "beta": 0.1,
    "loss_type": "sigmoid",
    "learning_rate": 1e-4,  # AdamW, constant
    "max_grad_norm": 1.0,
    "weight_decay": 0.0,
}
PPO = {  # shared by rlrun (algo.<key>) and TRL (PPOConfig)
    "batch_size": 64,  # prompts (responses) per iteration
    "num_mini_batches": 4,
    "num_ppo_epochs": 4,
    "max_new_tokens": 24,  # TRL: response_length
    "temperature": 1.0,
    "learning_rate": 1e-4,  # Adam, eps 1e-5, constant
    "kl_coef": 0.05,
    "cliprange": 0.2,
    "cliprange_value": 0.2,
    "vf_coef": 0.1,
    "gamma": 1.0,
    "lam": 0.95,
}
ADAM_EPS = 1e-5  # rlrun's PPO-RLHF Adam epsilon; TRL's adam_epsilon is set to it
HOLDOUT_PAIRS = 32  # rlrun's DPO holds pairs out (algo.holdout_fraction > 0): one batch, evaluated after the last step
SECTION = "## Language-model RLHF against TRL"
LAST_PPO_TRL = "1.12.0"  # the last TRL release with PPOTrainer

FULL = {"repeats": 3, "dpo_steps": 20, "ppo_iterations": 5}
QUICK = {"repeats": 1, "dpo_steps": 2, "ppo_iterations": 1}
PROFILE_ROWS = 25  # functions listed per profile
MAX_OTHER_CORES = 0.1  # --record refuses figures measured while other processes used more CPU than this


# ---- clock and profiler, shared by both sides ------------------------------------------------

class StepClock:
    """``perf_counter`` at the end of every training step; with ``profile``, a cProfile of the timed steps only
    (enabled at the end of the warm-up, disabled at the end of the last timed step)."""

    def __init__(self, timed_steps: int, profile: bool):
        import cProfile

        self.points: list[float] = []
        self.timed_steps = timed_steps
        self.profiler = cProfile.Profile() if profile else None

    def tick(self) -> None:
        self.points.append(time.perf_counter())
        if self.profiler is not None:
            if len(self.points) == WARMUP_STEPS:
                self.profiler.enable()
            elif len(self.points) == WARMUP_STEPS + self.timed_steps:
                self.profiler.disable()

    def timed_seconds(self) -> float:
        """Seconds from the end of the warm-up to the end of the last timed step."""
        last = WARMUP_STEPS + self.timed_steps
        if len(self.points) < last:
            raise RuntimeError(f"only {len(self.points)} steps ended, {last} needed")
        return self.points[last - 1] - self.points[WARMUP_STEPS - 1]

    def report(self) -> str | None:
        """The profile's top functions by own time and by cumulative time, as text; None without a profile."""
        if self.profiler is None:
            return None
        import pstats

        out = io.StringIO()
        stats = pstats.Stats(self.profiler, stream=out)
        stats.sort_stats("tottime").print_stats(PROFILE_ROWS)
        stats.sort_stats("cumulative").print_stats(PROFILE_ROWS)
        return out.getvalue()


# ---- data shared by both sides (built in this process, with rlrun) -----------------------------

def prepare(work: Path, dpo_steps: int) -> dict[str, Any]:
    """Build what both sides train on, in ``work``: the DPO pairs file and the order rlrun reads them in, the
    PPO prompts as token ids and the reward model. Returns the paths and data (JSON-able)."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlrun.algos.dpo import SHUFFLE_STREAM
    from rlrun.rlhf.lm import encode_prompt, encode_response
    from rlrun.rlhf.preference_data import load_prompts
    from rlrun.rlhf.text_reward import split_pairs
    from rlrun.rlhf.text_task import task_path
    from rlrun.rlhf.tiny_lm import tiny_lm_path

    model_dir = str(tiny_lm_path())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    cfg = compose_config(["algo=dpo", "env=sentiment"])
    with open(task_path(cfg, "demonstrations"), encoding="utf-8") as f:
        demos = [json.loads(line) for line in f if line.strip()]

    # DPO pairs: enough for the warm-up, the timed steps and one final step, plus the held-out batch
    n_train = DPO["batch_size"] * (WARMUP_STEPS + dpo_steps + 1)
    n = n_train + HOLDOUT_PAIRS
    if n > len(demos):
        raise SystemExit(f"--dpo-steps {dpo_steps} needs {n} pairs, the task has {len(demos)} demonstrations")
    pairs = [{"prompt": demos[i]["prompt"], "chosen": demos[i]["response"],
              "rejected": demos[(i + 1) % len(demos)]["response"]} for i in range(n)]
    pairs_path = work / "pairs.jsonl"
    pairs_path.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    holdout_fraction = HOLDOUT_PAIRS / n
    train_idx, _ = split_pairs(n, holdout_fraction, SEED)  # as rlrun's dpo.train splits and orders them
    if len(train_idx) != n_train:
        raise RuntimeError(f"rlrun would train on {len(train_idx)} pairs, expected {n_train}")
    order = train_idx[np.random.default_rng([SEED, SHUFFLE_STREAM, 0]).permutation(len(train_idx))]
    ordered = [pairs[i] for i in order]
    ids = []  # rlrun's token ids of each ordered pair (before the cut to max_length), to check TRL's against
    for p in ordered:
        prompt = encode_prompt(tokenizer, p["prompt"])
        ids.append([prompt, encode_response(tokenizer, p["chosen"]), encode_response(tokenizer, p["rejected"])])

    # PPO: the task's prompts, and a reward model of the same size as the policy
    prompts_path = task_path(cfg, "prompts")
    prompt_ids = [encode_prompt(tokenizer, p) for _, p in load_prompts(prompts_path)]
    reward_dir = work / "reward_model"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        reward_model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1,
                                                                          dtype=torch.float32)
    reward_model.config.pad_token_id = tokenizer.pad_token_id
    reward_model.save_pretrained(reward_dir)
    tokenizer.save_pretrained(reward_dir)
    return {"model": model_dir, "pairs_path": str(pairs_path), "holdout_fraction": holdout_fraction,
            "n_train": n_train, "dpo_pairs": ordered, "dpo_ids": ids, "prompts_path": prompts_path,
            "prompt_ids": prompt_ids, "reward_model": str(reward_dir)}


# ---- rlrun's side (in a fresh process each, through rlrun's own training entry point) ----------

def _train_rlrun(overrides: list[str], clock: StepClock) -> Path:
    """``run_training`` on the composed config with a clock at every ``Run.end_iteration``; returns the run dir
    (inside a temporary directory that the caller's process removes at exit)."""
    from rlrun.cli.train import run_training
    from rlrun.core.run import Run

    end_iteration = Run.end_iteration

    def clocked(self, global_step: int) -> bool:
        clock.tick()
        return end_iteration(self, global_step)

    Run.end_iteration = clocked
    cfg = compose_config([f"seed={SEED}", "device=cpu", "logging.progress=none", "checkpoint.interval=0",
                          "env.scorer=null", *overrides])
    run_dir = Path(tempfile.mkdtemp(prefix="bench_lm_rlhf_")) / "run"
    with contextlib.redirect_stdout(io.StringIO()):  # rlrun's start and end lines
        run_training(cfg, run_dir)
    return run_dir


def rlrun_dpo(data: dict, steps: int, threads: int, profile: bool) -> dict:
    """rlrun's DPO for 1 + steps + 1 gradient steps; the timed rate and the loss of the first batch."""
    import rlrun.algos.dpo as dpo

    first: list[float] = []
    dpo_loss = dpo.dpo_loss

    def recording(*args, **kwargs):  # dpo.train's losses_of calls dpo.dpo_loss: the first call is the first batch
        losses, chosen, rejected = dpo_loss(*args, **kwargs)
        if not first:
            first.append(losses.mean().item())
        return losses, chosen, rejected

    dpo.dpo_loss = recording
    clock = StepClock(steps, profile)
    d = DPO
    run_dir = _train_rlrun(["algo=dpo", "env=sentiment", f"torch_threads={threads}", f"algo.model={data['model']}",
                            f"algo.pairs_path={data['pairs_path']}", f"algo.holdout_fraction={data['holdout_fraction']}",
                            "algo.num_train_epochs=1", "algo.precompute_ref_log_probs=false",
                            f"algo.eval_steps={10 ** 9}", "algo.eval_num_prompts=0", "algo.dtype=float32",
                            f"algo.batch_size={d['batch_size']}", f"algo.max_length={d['max_length']}",
                            f"algo.beta={d['beta']}", f"algo.loss_type={d['loss_type']}",
                            f"algo.learning_rate={d['learning_rate']}", f"algo.max_grad_norm={d['max_grad_norm']}",
                            f"algo.weight_decay={d['weight_decay']}"], clock)
    shutil.rmtree(run_dir.parent, ignore_errors=True)
    return {"pairs_per_s": steps * d["batch_size"] / clock.timed_seconds(), "first_loss": first[0],
            "steps": len(clock.points), "profile": clock.report()}


def rlrun_ppo(data: dict, iterations: int, threads: int, profile: bool) -> dict:
    """rlrun's PPO-RLHF for 1 + iterations iterations; tokens/s and the per-phase seconds of the timed ones."""
    import rlrun.algos.ppo_rlhf as ppo_rlhf
    from rlrun.core.events import read_scalars

    p = PPO
    first: list[float] = []
    ppo_losses = ppo_rlhf.ppo_losses

    def recording(*args, **kwargs):  # the first call is the first minibatch of the first iteration
        losses = ppo_losses(*args, **kwargs)
        if not first:
            first.append((losses["policy_loss"] + p["vf_coef"] * losses["value_loss"]).item())
        return losses

    ppo_rlhf.ppo_losses = recording
    clock = StepClock(iterations, profile)
    run_dir = _train_rlrun(["algo=ppo_rlhf", "env=sentiment", f"torch_threads={threads}",
                            f"algo.model={data['model']}", f"algo.reward_model={data['reward_model']}",
                            f"env.prompts_path={data['prompts_path']}",
                            f"algo.total_episodes={p['batch_size'] * (WARMUP_STEPS + iterations)}",
                            "algo.eval_num_prompts=0", f"algo.eval_every={10 ** 9}", "algo.dtype=float32",
                            "algo.adaptive_kl=false", "algo.whiten_rewards=false",
                            f"algo.generation.max_new_tokens={p['max_new_tokens']}",
                            f"algo.generation.temperature={p['temperature']}", "algo.generation.top_k=0",
                            "algo.generation.top_p=1.0",
                            *(f"algo.{key}={p[key]}" for key in ("batch_size", "num_mini_batches", "num_ppo_epochs",
                                                                   "learning_rate", "kl_coef", "cliprange",
                                                                   "cliprange_value", "vf_coef", "gamma", "lam"))],
                           clock)
    scalars = read_scalars(run_dir)
    shutil.rmtree(run_dir.parent, ignore_errors=True)

    def timed(tag: str) -> list[float]:  # the values of the timed iterations 2 .. 1 + iterations
        return [value for _, value, _ in scalars[tag][WARMUP_STEPS:WARMUP_STEPS + iterations]]

    tokens = sum(length * p["batch_size"] for length in timed("charts/response_length"))
    return {"tokens_per_s": tokens / clock.timed_seconds(), "own_tokens_per_s": statistics.median(timed("perf/tokens_per_s")),
            "generate_s": statistics.mean(timed("perf/generate_s")), "score_s": statistics.mean(timed("perf/score_s")),
            "update_s": statistics.mean(timed("perf/update_s")), "iteration_s": clock.timed_seconds() / iterations,
            "response_length": tokens / (iterations * p["batch_size"]), "first_loss": first[0],
            "profile": clock.report()}


# ---- TRL's side (this file run by the TRL environment's interpreter) -------------------------

def _trl_common(spec: dict):
    """Threads, seeds and the versions of the TRL environment."""
    import importlib.metadata

    import torch
    from transformers import set_seed

    torch.set_num_threads(int(spec["threads"]))
    set_seed(SEED)
    return {name: importlib.metadata.version(name) for name in ("trl", "transformers", "torch", "accelerate")}


def trl_dpo(spec: dict) -> dict:
    """TRL's DPOTrainer on the same pairs in rlrun's order; the timed rate and the loss of the first batch."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    versions = _trl_common(spec)
    steps, d = int(spec["steps"]), DPO
    clock = StepClock(steps, bool(spec["profile"]))
    first: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.tick()

    class FirstLoss(DPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                       num_items_in_batch=num_items_in_batch)
            if not first and model.training:
                first.append((out[0] if return_outputs else out).item())
            return out

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    total_steps = WARMUP_STEPS + steps + 1
    work = tempfile.mkdtemp(prefix="bench_trl_dpo_")
    config = DPOConfig(output_dir=work, per_device_train_batch_size=d["batch_size"], max_length=d["max_length"],
                       truncation_mode="keep_start", beta=d["beta"], loss_type=[d["loss_type"]],
                       learning_rate=d["learning_rate"], lr_scheduler_type="constant", warmup_steps=0,
                       optim="adamw_torch", weight_decay=d["weight_decay"], max_grad_norm=d["max_grad_norm"],
                       precompute_ref_log_probs=False, max_steps=total_steps, num_train_epochs=1,
                       train_sampling_strategy="sequential", use_cpu=True, bf16=False, fp16=False,
                       gradient_checkpointing=False, report_to="none", save_strategy="no",
                       logging_steps=total_steps, disable_tqdm=True,
                       dataloader_num_workers=0, seed=SEED)
    dataset = Dataset.from_list(spec["pairs"][:total_steps * d["batch_size"]])
    trainer = FirstLoss(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                        callbacks=[Clock()])
    prepared = trainer.train_dataset
    mismatched = sum(1 for row, ids in zip(prepared, spec["ids"])
                     if [row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]] != ids)
    trainer.train()
    shutil.rmtree(work, ignore_errors=True)
    return {"pairs_per_s": steps * d["batch_size"] / clock.timed_seconds(), "first_loss": first[0],
            "steps": len(clock.points), "tokenization_mismatches": mismatched, "pairs_checked": len(prepared),
            "optim": str(config.optim), "versions": versions, "profile": clock.report()}


def trl_ppo(spec: dict) -> dict:
    """TRL's PPOTrainer on the same prompts; tokens/s and the per-phase seconds of the timed iterations."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

    try:  # trl 0.26 - 1.12
        import trl.experimental.ppo.ppo_trainer as ppo_module
        from trl.experimental.ppo import PPOConfig, PPOTrainer
    except ImportError:
        try:  # trl <= 0.25
            import trl.trainer.ppo_trainer as ppo_module
            from trl import PPOConfig, PPOTrainer
        except ImportError:
            import trl

            raise SystemExit(f"trl {trl.__version__} has no PPOTrainer (removed after trl {LAST_PPO_TRL}); "
                             f"install trl=={LAST_PPO_TRL} in the TRL environment") from None

    versions = _trl_common(spec)
    iterations, p = int(spec["iterations"]), PPO
    clock = StepClock(iterations, bool(spec["profile"]))
    first: list[float] = []
    marks: dict[str, float] = {}
    records: list[dict[str, float]] = []  # per iteration: generate, score, update seconds, response tokens
    batch_generation, forward, truncate_response = (ppo_module.batch_generation, ppo_module.forward,
                                                    ppo_module.truncate_response)

    def timed_generation(*args, **kwargs):
        marks.clear()
        marks["start"] = time.perf_counter()
        out = batch_generation(*args, **kwargs)
        marks["generated"] = time.perf_counter()
        return out

    def timed_forward(model, *args, **kwargs):  # the update's forward passes go through the policy+value wrapper
        if "updating" not in marks and hasattr(model, "value_model"):
            marks["updating"] = time.perf_counter()
        return forward(model, *args, **kwargs)

    def counted_truncation(stop_token_id, pad_token_id, responses):  # tokens up to and including EOS, as rlrun
        is_stop = responses == stop_token_id
        lengths = torch.where(is_stop.any(dim=1), is_stop.int().argmax(dim=1) + 1, responses.shape[1])
        marks["tokens"] = marks.get("tokens", 0.0) + float(lengths.sum())
        marks["width"] = float(responses.shape[1])
        return truncate_response(stop_token_id, pad_token_id, responses)

    ppo_module.batch_generation, ppo_module.forward = timed_generation, timed_forward
    ppo_module.truncate_response = counted_truncation

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.tick()
            records.append({"generate_s": marks["generated"] - marks["start"],
                            "score_s": marks["updating"] - marks["generated"],
                            "update_s": marks["logged"] - marks["updating"], "tokens": marks["tokens"],
                            "width": marks["width"]})

    class Timed(PPOTrainer):
        def log(self, *args, **kwargs):  # called once per iteration after the PPO epochs
            marks.setdefault("logged", time.perf_counter())
            return super().log(*args, **kwargs)

    tokenizer = AutoTokenizer.from_pretrained(spec["model"], padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    reward_model = AutoModelForSequenceClassification.from_pretrained(spec["reward_model"], num_labels=1,
                                                                      dtype=torch.float32)
    value_model = AutoModelForSequenceClassification.from_pretrained(spec["reward_model"], num_labels=1,
                                                                     dtype=torch.float32)
    for model in (policy, reference, reward_model, value_model):
        model.config.pad_token_id = tokenizer.pad_token_id
    work = tempfile.mkdtemp(prefix="bench_trl_ppo_")
    config = PPOConfig(output_dir=work, per_device_train_batch_size=p["batch_size"], gradient_accumulation_steps=1,
                       num_mini_batches=p["num_mini_batches"], num_ppo_epochs=p["num_ppo_epochs"],
                       local_rollout_forward_batch_size=p["batch_size"], response_length=p["max_new_tokens"],
                       temperature=p["temperature"], stop_token="eos", missing_eos_penalty=None,
                       kl_coef=p["kl_coef"], kl_estimator="k1", cliprange=p["cliprange"],
                       cliprange_value=p["cliprange_value"], vf_coef=p["vf_coef"], gamma=p["gamma"], lam=p["lam"],
                       whiten_rewards=False, learning_rate=p["learning_rate"], lr_scheduler_type="constant",
                       optim="adamw_torch", adam_epsilon=ADAM_EPS, weight_decay=0.0,
                       total_episodes=p["batch_size"] * (WARMUP_STEPS + iterations), num_sample_generations=0,
                       per_device_eval_batch_size=p["batch_size"], use_cpu=True, bf16=False, fp16=False,
                       gradient_checkpointing=False, report_to="none", save_strategy="no", disable_tqdm=True, seed=SEED)
    prompts = spec["prompt_ids"]
    trainer = Timed(args=config, processing_class=tokenizer, model=policy, ref_model=reference,
                    reward_model=reward_model, value_model=value_model,
                    train_dataset=Dataset.from_dict({"input_ids": prompts}),
                    eval_dataset=Dataset.from_dict({"input_ids": prompts[:p["batch_size"]]}), callbacks=[Clock()])
    backward = trainer.accelerator.backward

    def recording(loss, **kwargs):  # the first call is the first minibatch of the first iteration
        if not first:
            first.append(loss.item())
        return backward(loss, **kwargs)

    trainer.accelerator.backward = recording
    with contextlib.redirect_stdout(io.StringIO()):  # TRL prints every iteration's metrics with disable_tqdm
        trainer.train()
    shutil.rmtree(work, ignore_errors=True)
    timed = records[WARMUP_STEPS:WARMUP_STEPS + iterations]
    tokens = sum(r["tokens"] for r in timed)
    return {"tokens_per_s": tokens / clock.timed_seconds(), "iteration_s": clock.timed_seconds() / iterations,
            **{key: statistics.mean(r[key] for r in timed) for key in ("generate_s", "score_s", "update_s")},
            "response_length": tokens / (iterations * p["batch_size"]),
            "generated_width": statistics.mean(r["width"] for r in timed), "first_loss": first[0],
            "optim": str(config.optim), "versions": versions, "profile": clock.report()}


def trl_worker(kind: str, spec_path: str, out_path: str) -> None:
    """Entry point in the TRL environment: run ``kind`` on the spec and write its result and peak RSS as JSON."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    result = {"dpo": trl_dpo, "ppo": trl_ppo}[kind](spec)
    result["rss"] = peak_rss()
    Path(out_path).write_text(json.dumps(result), encoding="utf-8")


def run_trl(trl_python: str, kind: str, spec: dict, work: Path) -> dict:
    """Run the TRL worker ``kind`` with ``trl_python`` in a fresh process; returns its result.

    Raises:
        RuntimeError: with the tail of the worker's output if it failed.
    """
    spec_path, out_path, log_path = work / f"trl_{kind}_spec.json", work / f"trl_{kind}_out.json", work / "trl.log"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    out_path.unlink(missing_ok=True)
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false",
           "HF_DATASETS_CACHE": str(work / "hf_datasets")}
    with open(log_path, "w") as log:
        code = subprocess.call([trl_python, str(Path(__file__).resolve()), "--trl-worker", kind,
                                "--spec", str(spec_path), "--out", str(out_path)], stdout=log, stderr=subprocess.STDOUT,
                               env=env, cwd=str(work))
    if code != 0 or not out_path.is_file():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(f"the TRL {kind} worker exited with {code}:\n" + "\n".join(tail))
    return json.loads(out_path.read_text(encoding="utf-8"))


def trl_available(trl_python: str | None) -> tuple[dict[str, str] | None, str]:
    """(versions of trl, transformers, torch, or None, and why TRL's figures are missing, or '')."""
    if not trl_python:
        return None, "no --trl-python given (a virtual environment with trl; see the docstring)"
    code = ("import importlib.metadata as m, json, trl, transformers, torch; "
            "print(json.dumps({n: m.version(n) for n in ('trl', 'transformers', 'torch')}))")
    try:
        out = subprocess.run([trl_python, "-c", code], capture_output=True, text=True, timeout=300)
    except OSError as exc:
        return None, f"--trl-python {trl_python} cannot run: {exc}"
    if out.returncode != 0:
        return None, f"--trl-python {trl_python} cannot import trl: {(out.stderr.strip().splitlines() or [''])[-1]}"
    return json.loads(out.stdout.strip().splitlines()[-1]), ""


# ---- report ---------------------------------------------------------------------------------

def median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def phases(results: list[dict]) -> str:
    return " / ".join(f"{median(results, key):.2f}" for key in ("generate_s", "score_s", "update_s")) + " s"


def load_line() -> str:
    """The 1, 5 and 15 minute load averages, to show whether the machine was idle."""
    with contextlib.suppress(OSError):
        return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "load average unknown"


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds all processes of the machine have used since boot, CPU seconds of this process and its
    waited-for children), to tell how much CPU other processes took during the measurement."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields[:3]) + sum(fields[5:8])  # user, nice, system, irq, softirq, steal
    times = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), times.user + times.system + times.children_user + times.children_system


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)

    def defaults(key: str) -> str:
        return f"(default {FULL[key]}, quick {QUICK[key]})"

    p.add_argument("--trl-python", help="python of a virtual environment with trl (and torch, transformers); "
                                        "without it only rlrun is measured")
    p.add_argument("--repeats", type=int, help=f"runs per figure, the median is reported {defaults('repeats')}")
    p.add_argument("--dpo-steps", type=int, help=f"timed DPO gradient steps per run {defaults('dpo_steps')}")
    p.add_argument("--ppo-iterations", type=int, help=f"timed PPO iterations per run {defaults('ppo_iterations')}")
    p.add_argument("--threads", type=int, default=THREADS, help=f"torch threads on both sides (default {THREADS})")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke check")
    p.add_argument("--skip-dpo", action="store_true", help="do not measure DPO")
    p.add_argument("--skip-ppo", action="store_true", help="do not measure PPO-RLHF")
    p.add_argument("--profile", action="store_true",
                   help="instead of measuring, run each side once under cProfile (timed steps only) and print the "
                        "functions that take the time")
    p.add_argument("--record", action="store_true", help=f"write the results into {DOCS.relative_to(DOCS.parents[1])}")
    p.add_argument("--trl-worker", choices=["dpo", "ppo"], help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for key in ("repeats", "dpo_steps", "ppo_iterations"):
        if getattr(args, key) is None:
            setattr(args, key, sizes[key])
    if args.profile and args.record:
        p.error("--profile and --record: a profiled run's times are not figures to record")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run every measurement one after the other, print the Markdown table, optionally record it."""
    args = parse_args(argv)
    if args.trl_worker:
        trl_worker(args.trl_worker, args.spec, args.out)
        return
    versions, missing = trl_available(args.trl_python)
    if missing:
        say(f"TRL is not measured: {missing}")
    else:
        say(f"TRL side: {args.trl_python}: trl {versions['trl']}, transformers {versions['transformers']}, "
            f"torch {versions['torch']}")
    say(f"before: {load_line()}")
    work = Path(tempfile.mkdtemp(prefix="bench_lm_rlhf_"))
    started, (busy_start, ours_start) = time.perf_counter(), cpu_seconds()
    try:
        data = prepare(work, args.dpo_steps)
        say(f"model {data['model']}; {data['n_train']} DPO training pairs, reward model {data['reward_model']}")
        common = {"model": data["model"], "threads": args.threads, "profile": args.profile}
        dpo_spec = {**common, "steps": args.dpo_steps, "pairs": data["dpo_pairs"], "ids": data["dpo_ids"]}
        ppo_spec = {**common, "iterations": args.ppo_iterations, "prompt_ids": data["prompt_ids"],
                    "reward_model": data["reward_model"]}
        jobs: dict[str, tuple] = {}  # name -> (function, arguments), run in this order in every repeat
        if not args.skip_dpo:
            jobs["rlrun DPO"] = (rlrun_dpo, data, args.dpo_steps, args.threads, args.profile)
            jobs["TRL DPO"] = ("dpo", dpo_spec)
        if not args.skip_ppo:
            jobs["rlrun PPO"] = (rlrun_ppo, data, args.ppo_iterations, args.threads, args.profile)
            jobs["TRL PPO"] = ("ppo", ppo_spec)
        results: dict[str, list[dict]] = {name: [] for name in jobs}
        failures: dict[str, str] = {}
        repeats = 1 if args.profile else args.repeats
        for i in range(repeats):
            for name, (fn, *fn_args) in jobs.items():
                if name.startswith("TRL"):
                    if missing or name in failures:
                        continue
                    try:
                        result = run_trl(args.trl_python, fn, *fn_args, work)
                    except RuntimeError as exc:
                        failures[name] = str(exc)
                        say(f"{name} failed: {exc}")
                        continue
                else:
                    result, rss = in_subprocess(fn, *fn_args)
                    result["rss"] = rss
                results[name].append(result)
                rate = result.get("pairs_per_s") or result.get("tokens_per_s")
                unit = "pairs/s" if "pairs_per_s" in result else "response tokens/s"
                say(f"{name} run {i + 1}/{repeats}: {rate:,.1f} {unit}, first-batch loss {result['first_loss']:.6f}")
        say(f"after: {load_line()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    busy_end, ours_end = cpu_seconds()
    others = max(0.0, (busy_end - busy_start) - (ours_end - ours_start)) / (time.perf_counter() - started)
    say(f"other processes used {others:.2f} cores on average during the measurements")
    if args.record and others > MAX_OTHER_CORES:
        say(f"not recording: more than {MAX_OTHER_CORES} cores were busy with other processes; rerun when idle")
        args.record = False

    if args.profile:
        for name, runs in results.items():
            if runs and runs[0].get("profile"):
                print(f"\n===== profile of {name}, the timed steps only =====\n{runs[0]['profile']}")
        return

    def why(name: str) -> str:
        return failures.get(name, missing).splitlines()[0] if (failures.get(name) or missing) else ""

    rows: list[tuple[str, str, str]] = []
    trl_version = versions["trl"] if versions else "-"
    if not args.skip_dpo:
        r, t = results["rlrun DPO"], results["TRL DPO"]
        timed_note = f"{args.dpo_steps} gradient steps of {DPO['batch_size']} pairs after {WARMUP_STEPS} warm-up step"
        rows.append(("rlrun DPO (algo=dpo), pairs/s", f"{median(r, 'pairs_per_s'):,.1f}", timed_note))
        rlrun_loss = median(r, "first_loss")
        if t:
            trl_loss = median(t, "first_loss")
            check = (f"TRL tokenized {t[0]['pairs_checked'] - t[0]['tokenization_mismatches']} of "
                     f"{t[0]['pairs_checked']} pairs exactly as rlrun")
            rows += [(f"TRL {trl_version} DPOTrainer, pairs/s", f"{median(t, 'pairs_per_s'):,.1f}",
                      f"{timed_note}; same pairs in the same order; {check}"),
                     ("rlrun / TRL, DPO pairs/s", f"{median(r, 'pairs_per_s') / median(t, 'pairs_per_s'):.2f}x",
                      "same invocation")]
        else:
            rows.append(("TRL DPOTrainer, pairs/s", "not measured", why("TRL DPO")))
        rows.append(("DPO loss on the first batch, rlrun", f"{rlrun_loss:.4f}",
                     f"log 2 = {LOG2:.4f} (policy == reference at the start); |rlrun - log 2| = "
                     f"{abs(rlrun_loss - LOG2):.1e}"))
        if t:
            rows.append(("DPO loss on the first batch, TRL", f"{trl_loss:.4f}",
                         f"the same 32 pairs; |rlrun - TRL| = {abs(rlrun_loss - trl_loss):.1e}"))
        rows.append(("Peak RSS, rlrun DPO process", f"{median(r, 'rss') / GB:.2f} GB", "loading included"))
        if t:
            rows.append(("Peak RSS, TRL DPO process", f"{median(t, 'rss') / GB:.2f} GB", "loading included"))
    if not args.skip_ppo:
        r, t = results["rlrun PPO"], results["TRL PPO"]
        timed_note = (f"{args.ppo_iterations} iterations of {PPO['batch_size']} responses after {WARMUP_STEPS} "
                      "warm-up iteration")
        rows.append(("rlrun PPO-RLHF (algo=ppo_rlhf), response tokens/s", f"{median(r, 'tokens_per_s'):,.0f}",
                     f"{timed_note}; mean response {median(r, 'response_length'):.1f} tokens; "
                     f"{median(r, 'iteration_s'):.2f} s per iteration; rlrun's own perf/tokens_per_s "
                     f"{median(r, 'own_tokens_per_s'):,.0f}"))
        if t:
            rows += [(f"TRL {trl_version} PPOTrainer, response tokens/s", f"{median(t, 'tokens_per_s'):,.0f}",
                      f"{timed_note}; mean response {median(t, 'response_length'):.1f} tokens (generated "
                      f"{median(t, 'generated_width'):.0f} per row before the cut at EOS); "
                      f"{median(t, 'iteration_s'):.2f} s per iteration"),
                     ("rlrun / TRL, PPO response tokens/s",
                      f"{median(r, 'tokens_per_s') / median(t, 'tokens_per_s'):.2f}x", "same invocation")]
        else:
            rows.append(("TRL PPOTrainer, response tokens/s", "not measured", why("TRL PPO")))
        rows.append(("rlrun PPO-RLHF, generate / score / update per iteration", phases(r),
                     "perf/generate_s, perf/score_s (decode, reward model, policy and reference forward), "
                     "perf/update_s (rewards, GAE, PPO epochs)"))
        if t:
            rows.append(("TRL PPOTrainer, generate / score / update per iteration", phases(t),
                         "batch_generation; reference, value-model and reward-model forward, rewards, GAE; "
                         "PPO epochs up to the iteration's log"))
        rows.append(("PPO loss on the first minibatch, rlrun", f"{median(r, 'first_loss'):.4f}",
                     f"policy loss + {PPO['vf_coef']} x value loss; not comparable across sides (other samples)"))
        if t:
            rows.append(("PPO loss on the first minibatch, TRL", f"{median(t, 'first_loss'):.4f}",
                         "pg_loss + vf_coef x vf_loss, as TRL backpropagates it"))
        rows.append(("Peak RSS, rlrun PPO-RLHF process", f"{median(r, 'rss') / GB:.2f} GB", "loading included"))
        if t:
            rows.append(("Peak RSS, TRL PPO process", f"{median(t, 'rss') / GB:.2f} GB", "loading included"))

    trl_versions = (f"TRL side: trl {versions['trl']}, transformers {versions['transformers']}, torch "
                    f"{versions['torch']} in its own virtual environment" if versions else f"TRL side: {missing}")
    if versions and versions["trl"] != LAST_PPO_TRL:
        trl_versions += f" (the last release with PPOTrainer is {LAST_PPO_TRL})"
    import importlib.metadata

    settings = (
        f"Model: rlrun-tiny-gpt2 (GPT-2, 4 layers x 192, 2.2M parameters), float32, CPU, {args.threads} torch "
        f"threads on both sides. rlrun side: transformers {importlib.metadata.version('transformers')}. "
        f"{trl_versions}. Timing excludes loading: the clock runs from the end of the "
        f"warm-up step to the end of the last timed step.\n\n"
        f"DPO: {DPO['batch_size']} pairs per step, max length {DPO['max_length']} (prompt + response + EOS), "
        f"{DPO['loss_type']} loss, beta {DPO['beta']}, AdamW lr {DPO['learning_rate']} constant, gradient norm "
        f"clipped at {DPO['max_grad_norm']}, reference log-probs per batch (a frozen copy) on both sides; pairs from "
        "the sentiment task's demonstrations (chosen: the true continuation, rejected: the next sentence's), fed to "
        "TRL as text in rlrun's order of the first epoch, read sequentially. TRL options set to match rlrun: "
        "bf16=False (TRL's default is True), gradient_checkpointing=False (default True; rlrun does not "
        "checkpoint), optim=adamw_torch (default adamw_torch_fused), constant lr (default linear decay); the same "
        "for PPO. Where the difference comes from (profiled with --profile): TRL pads the 64 sequences of a step to "
        "the longest one and runs the LM head on every position; rlrun runs them in length buckets (rlrun.rlhf.lm."
        "length_buckets, a few forward calls per step) and the LM head on response positions only. Prompt + "
        "response is 25 tokens on average here against about 59 for the longest of a step, so most of TRL's "
        "positions are padding; on pairs of equal length both would do the same work.\n\n"
        f"PPO-RLHF: {PPO['batch_size']} prompts of the sentiment task per iteration, temperature "
        f"{PPO['temperature']}, at most {PPO['max_new_tokens']} new tokens, stop at EOS, {PPO['num_ppo_epochs']} "
        f"epochs x {PPO['num_mini_batches']} minibatches, KL coef {PPO['kl_coef']} (k1 per token, fixed), clip "
        f"{PPO['cliprange']}, value clip {PPO['cliprange_value']}, vf_coef {PPO['vf_coef']}, gamma {PPO['gamma']}, "
        f"lambda {PPO['lam']}, Adam lr {PPO['learning_rate']} eps {ADAM_EPS} constant; reward: "
        "GPT2ForSequenceClassification of the same size (the tiny model's trunk, a new head, seed 0), raw scores. "
        "Differences that TRL's PPOTrainer imposes: its value function is a separate model (a second 2.2M GPT-2 "
        "trunk, started from the reward model, as in TRL's examples) where rlrun's is a linear head on the "
        "policy's trunk, so TRL runs two trunks forward and backward per minibatch; it takes the old "
        "log-probabilities from the generation logits where rlrun runs one more policy forward pass; it does not "
        "clip gradients (rlrun clips at norm 1); its prompts come from a shuffled loader, rlrun's are drawn "
        "with replacement (same prompt file, 4-word prompts). rlrun's score phase also decodes the responses and "
        "re-tokenizes them for the reward model (its TextRewardModel reads text). Response tokens count up to "
        "and including EOS on both sides."
    )
    publish(SECTION, "scripts/bench_lm_rlhf.py", argv, settings, rows, args.repeats, args.record)


if __name__ == "__main__":
    main()
