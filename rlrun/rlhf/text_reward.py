"""Text reward models: a transformers sequence-classification model trained on preference pairs.

The reward model of RLHF (Ouyang et al. 2022, "Training language models to follow instructions with
human feedback", NeurIPS, section 3.5; the RLHF lecture, seeds/001): a language model with a scalar
head reads a prompt and a response and outputs one number r(prompt, response). It is fitted to pairs
in which people preferred one response (``chosen``) to another (``rejected``) with the Bradley-Terry
cross-entropy of :func:`rlrun.rlhf.preferences.preference_loss`, every label being 1 ("chosen preferred"):

    loss = -mean(log sigmoid(r(x, y_chosen) - r(x, y_rejected) - margin))   (+ the options of preference_loss)

Data: JSONL with ``prompt``, ``chosen`` and ``rejected`` strings on every line, the format of TRL's
``RewardTrainer`` and of public preference datasets (e.g. Anthropic HH-RLHF once split into prompt and
responses). The model: any Hugging Face ``AutoModelForSequenceClassification`` with one output
(``num_labels=1``), from a local directory or a Hugging Face name (from the cache, else downloaded where
there is network). Nothing is downloaded by the tests: :func:`make_tiny_text_model` builds a tiny randomly
initialised GPT-2 with a byte-level BPE tokenizer offline, and :func:`make_synthetic_text_pairs` a learnable
preference set.

``rlrun algo=reward_model algo.data=text algo.text.pairs_path=P algo.text.model=M`` calls
:func:`validate_text` and :func:`train_text`. ``global_step`` counts gradient steps (one per batch of
``algo.batch_size`` pairs). The run directory gets, besides the checkpoints::

    reward_model/                   the trained model and its tokenizer (save_pretrained)
    reward_model/reward_stats.json  mean and std of the rewards of all training responses, and how they were read
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from rlrun.core.config import ConfigError, check_int, get
from rlrun.core.run import Run, resolve_device
from rlrun.core.state import Counters
from rlrun.rlhf.lm import (REWARD_DIR, context_length, load_causal_config, load_causal_lm, load_pretrained,
                          load_tokenizer, resolve_model, save_model)
from rlrun.rlhf.text_task import preference_pairs, validate_pairs_source
from rlrun.rlhf.preference_data import TextPair
from rlrun.rlhf.preferences import preference_loss

MIN_PAIRS = 2  # at least one training and one held-out pair
MIN_MAX_LENGTH = 8  # algo.text.max_length must leave room for a few tokens of prompt and response
SPLIT_STREAM = 0  # np.random.default_rng([seed, SPLIT_STREAM]): the train / held-out split
SHUFFLE_STREAM = 1  # np.random.default_rng([seed, SHUFFLE_STREAM, epoch]): the order of the pairs in an epoch
STATS_FILE = "reward_stats.json"  # normalization statistics inside REWARD_DIR

INPUT_FORMAT = "tokenizer(prompt, response), truncated to max_length"  # how a response is read (reward_stats.json)


# ---- loading models -------------------------------------------------------------------------------

def load_text_config(name: str, key: str = "algo.text.model") -> Any:
    """Check a reward model's name and load its transformers config (no weights).

    Args:
        name: a model directory holding ``config.json``, an rlrun run directory (its ``reward_model/``, else its
            ``model/``: a supervised fine-tuning run's model starts a reward model), or a Hugging Face name.

    Returns:
        The ``PretrainedConfig``; a causal language model's gets ``num_labels=1``, a new scalar head on its trunk
        (InstructGPT's reward model starts from the SFT model, Ouyang et al. 2022, section 3.5).

    Raises:
        ConfigError: naming ``key`` if the directory does not exist or lacks config.json, the name cannot be
            loaded (e.g. not cached and offline: set HF_HUB_OFFLINE=1 to fail at once rather than after
            huggingface_hub's download retries), or the model has ``num_labels != 1``.
    """
    from transformers import AutoConfig

    config = load_pretrained(AutoConfig, resolve_reward_model(name, key), key)
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in getattr(config, "architectures", None) or []):
        config.num_labels = 1
    if config.num_labels != 1:
        raise ConfigError(f"{key}={name!r} has num_labels={config.num_labels}: expected a sequence-"
                          "classification model with one output (num_labels=1), the scalar reward, or a causal "
                          "language model to start one from")
    return config


def resolve_reward_model(name: Any, key: str) -> str:
    """:func:`rlrun.rlhf.lm.resolve_model` for reward models: a run directory stands for its ``reward_model/``
    if it has one, else for its ``model/``."""
    if isinstance(name, str) and (Path(name).expanduser() / REWARD_DIR / "config.json").is_file():
        return resolve_model(name, key, subdir=REWARD_DIR)
    return resolve_model(name, key)


def load_text_tokenizer(name: str, key: str = "algo.text.model") -> Any:
    """Load the tokenizer of a reward model (:func:`rlrun.rlhf.lm.load_tokenizer`: one without a padding token
    pads with its EOS token). Raises ConfigError naming ``key``."""
    return load_tokenizer(resolve_reward_model(name, key), key)


def load_text_model(name: str, key: str = "algo.text.model") -> tuple[Any, Any]:
    """Load ``(tokenizer, model)`` of a reward model for training or scoring.

    The model is ``AutoModelForSequenceClassification`` in float32, its ``pad_token_id`` set to the
    tokenizer's (:func:`load_text_tokenizer`), so that decoder models such as GPT-2 score the last
    non-padding token of every input.

    Raises:
        ConfigError: as :func:`load_text_config` and :func:`load_text_tokenizer`.
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    config = load_text_config(name, key)
    tokenizer = load_text_tokenizer(name, key)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a new score head on a language model is expected, not worth a warning
    try:
        model = load_pretrained(AutoModelForSequenceClassification, resolve_reward_model(name, key), key,
                                config=config, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(level)
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


class TextRewardModel:
    """A trained text reward model as a scorer: ``rm(prompts, responses)`` -> (N,) float64 rewards, normalized by
    the ``reward_stats.json`` of its run ((r - mean) / std, InstructGPT's normalization so that the rewards of the
    training responses have mean 0; raw if the directory has none).

    Args:
        name: the reward-model run directory (its ``reward_model/``) or a model directory or name.
        key: the config key that named it, for errors.
        device: where it runs.
        batch_size: inputs scored at once.
    """

    def __init__(self, name: str, key: str, device: torch.device, batch_size: int = 64):
        self.tokenizer, self.model = load_text_model(name, key)
        self.model.to(device).eval()
        self.device, self.batch_size = device, batch_size
        stats_path = Path(resolve_reward_model(name, key)) / STATS_FILE
        stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
        self.mean, self.std = float(stats.get("mean", 0.0)), float(stats.get("std", 1.0)) or 1.0
        self.max_length = int(stats.get("max_length", 512))

    def __call__(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        ids = self.tokenizer(list(prompts), list(responses), truncation=True, max_length=self.max_length)["input_ids"]
        rewards = score_all(self.model, self.tokenizer, ids, self.batch_size, self.device).double().numpy()
        return (rewards - self.mean) / self.std


# ---- validation -----------------------------------------------------------------------------------

def validate_text(cfg: DictConfig) -> None:
    """Check ``algo.text.*`` and the pairs file of ``algo.data=text`` before anything is trained.

    Checks: ``algo.text.pairs_path`` is set and every line of it loads (:func:`load_text_pairs`) with at
    least MIN_PAIRS pairs; ``algo.text.model`` is set and loads (config and tokenizer) with one output;
    ``algo.text.max_length`` is an integer >= MIN_MAX_LENGTH that the model's positions can hold. The
    shared training keys (learning_rate, batch_size, ...) are checked by the reward_model algorithm.

    Raises:
        ConfigError: naming the first bad key, file line or model.
    """
    validate_pairs_source(cfg, "algo.text.")
    max_length = check_int(cfg, "algo.text.max_length", low=MIN_MAX_LENGTH)
    name = get(cfg, "algo.text.model")
    context = context_length(load_text_config(name))
    if context is not None and max_length > context:
        raise ConfigError(f"algo.text.max_length={max_length} is not allowed: expected at most {context}, the "
                          f"positions of algo.text.model={name!r}")
    load_text_tokenizer(name)
    if get(cfg, "algo.text.pairs_path") is None and get(cfg, "algo.text.rankings_path") is None:
        load_causal_config(resolve_model(name, "algo.text.model"), "algo.text.model")  # pairs are sampled from it


# ---- training -------------------------------------------------------------------------------------

def encode_pairs(tokenizer: Any, pairs: list[TextPair], max_length: int) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of (prompt, chosen) and (prompt, rejected) for every pair.

    A response is read together with its prompt as the text pair ``tokenizer(prompt, response)``: the
    tokenizer's own pair template joins them (``[CLS] p [SEP] r [SEP]`` for BERT, ``p <sep> r <|endoftext|>``
    for the tiny model, plain concatenation of the two token sequences for GPT-2's tokenizer). Inputs
    longer than ``max_length`` tokens are truncated, the longer of prompt and response first.

    Returns:
        (chosen ids, rejected ids): two lists of len(pairs) lists of at most max_length ints.
    """
    prompts = [p.prompt for p in pairs]

    def encode(responses: list[str]) -> list[list[int]]:
        return tokenizer(prompts, responses, truncation=True, max_length=max_length)["input_ids"]

    return encode([p.chosen for p in pairs]), encode([p.rejected for p in pairs])


def score(model: Any, tokenizer: Any, ids: list[list[int]], device: torch.device) -> torch.Tensor:
    """Rewards of a batch of tokenized inputs, padded to the longest one.

    Args:
        ids: N lists of token ids (see :func:`encode_pairs`).

    Returns:
        (N,) float32 rewards r(prompt, response), with gradients if enabled.
    """
    batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt")
    logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
    return logits.squeeze(-1).float()


@torch.no_grad()
def score_all(model: Any, tokenizer: Any, ids: list[list[int]], batch_size: int, device: torch.device) -> torch.Tensor:
    """(N,) float32 rewards of N inputs in eval mode, ``batch_size`` at a time (restores train mode)."""
    was_training = model.training
    model.eval()
    rewards = [score(model, tokenizer, ids[i:i + batch_size], device).cpu() for i in range(0, len(ids), batch_size)]
    model.train(was_training)
    return torch.cat(rewards) if rewards else torch.zeros(0)


def split_pairs(n: int, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (train, held-out) indices of n >= 2 pairs; round(holdout_fraction * n) are held out,
    at least one and at most n - 1. Seeded by ``seed`` alone, so a resumed run splits the same way."""
    permutation = np.random.default_rng([seed, SPLIT_STREAM]).permutation(n)
    holdout = min(n - 1, max(1, round(holdout_fraction * n)))
    return np.sort(permutation[holdout:]), np.sort(permutation[:holdout])


def train_text(cfg: DictConfig, run: Run) -> float:
    """Train the text reward model of ``cfg.algo`` on its pairs file; returns the held-out accuracy.

    Loads ``algo.text.model`` (:func:`load_text_model`), splits the pairs into training and held-out
    sets (:func:`split_pairs`, ``algo.holdout_fraction``, seeded by ``seed``) and runs ``algo.epochs``
    passes of AdamW (``learning_rate``, ``weight_decay``) over the training pairs in a new random order
    each epoch, ``algo.batch_size`` pairs per gradient step, on
    ``preference_loss(r_chosen, r_rejected, 1, random_answer_prob, margin, center_coef)``.
    ``global_step`` counts gradient steps; ``run.set_total`` is told their number.

    Every ``algo.eval_interval`` epochs and after the last one it logs ``losses/preference_loss`` and
    ``charts/train_accuracy`` (means over the gradient steps since the previous log, in train mode),
    ``charts/holdout_loss`` (the same loss), ``charts/holdout_accuracy`` (share of held-out pairs with
    r_chosen > r_rejected) and ``charts/margin`` (mean r_chosen - r_rejected on the held-out pairs).
    Checkpoints (model, optimizer, epoch) follow ``checkpoint.interval`` gradient steps; a stop signal
    writes one after the current gradient step and returns, and a resumed run continues from that step.
    At the end it writes ``<run dir>/reward_model/`` (model and tokenizer, ``save_pretrained``) with
    ``reward_stats.json``: ``mean`` and ``std`` (population) of the final rewards of all ``count``
    training responses (chosen and rejected), to normalize the reward for later use, with the
    ``max_length`` and ``input`` format the rewards were computed with.

    Returns:
        The final held-out accuracy in [0, 1] (the last measured one if stopped by a signal).

    Raises:
        ConfigError: if the pairs file or the model cannot be loaded, or the model has num_labels != 1.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # rlrun's own progress display is the run's; no loading/saving bars
    algo, text = cfg.algo, cfg.algo.text
    device = resolve_device(cfg.device)
    tokenizer, model = load_text_model(text.model)
    model.to(device).train()

    def sampler() -> tuple[Any, Any]:  # the causal LM of algo.text.model, to sample pairs from when none are given
        lm_tokenizer, lm = load_causal_lm(resolve_model(text.model, "algo.text.model"), "algo.text.model")
        return lm.to(device), lm_tokenizer

    pairs, labels, source = preference_pairs(cfg, "algo.text.", run.dir, sampler)
    print(f"rlrun: {len(pairs)} preference pairs from {source}")
    labels = torch.tensor(labels, dtype=torch.float32)
    chosen_ids, rejected_ids = encode_pairs(tokenizer, pairs, int(text.max_length))
    train_idx, holdout_idx = split_pairs(len(pairs), float(algo.holdout_fraction), int(cfg.seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(algo.learning_rate),
                                  weight_decay=float(algo.weight_decay))
    batch_size, epochs, eval_interval = int(algo.batch_size), int(algo.epochs), int(algo.eval_interval)
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    total_steps = epochs * steps_per_epoch
    run.set_total(total_steps)
    loss_args = dict(random_answer_prob=float(algo.random_answer_prob), margin=float(algo.margin),
                     center_coef=float(algo.center_coef))

    def loss_of(r_chosen: torch.Tensor, r_rejected: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        return preference_loss(r_chosen, r_rejected, labels[rows].to(r_chosen.device), **loss_args)

    # STATE: what a checkpoint holds; a resumed run continues after the checkpoint's gradient step
    # pending: since the previous log, the sum of the batch losses, gradient steps, pairs, pairs ranked correctly
    counters = Counters(pending={"loss_sum": 0.0, "steps": 0, "pairs": 0, "correct": 0},
                        holdout_accuracy=float("nan"))
    run.track(model=model, optimizer=optimizer, counters=counters, epoch=lambda: global_step // steps_per_epoch)
    global_step = run.start_step

    def evaluate() -> dict[str, float]:
        ids = [chosen_ids[i] for i in holdout_idx] + [rejected_ids[i] for i in holdout_idx]
        rewards = score_all(model, tokenizer, ids, batch_size, device)
        r_chosen, r_rejected = rewards[:len(holdout_idx)], rewards[len(holdout_idx):]
        return {"charts/holdout_accuracy": (r_chosen > r_rejected).float().mean().item(),
                "charts/holdout_loss": loss_of(r_chosen, r_rejected, holdout_idx).item(),
                "charts/margin": (r_chosen - r_rejected).mean().item()}

    for epoch in range(global_step // steps_per_epoch, epochs):
        order = train_idx[np.random.default_rng([int(cfg.seed), SHUFFLE_STREAM, epoch]).permutation(len(train_idx))]
        for start in range(global_step % steps_per_epoch * batch_size, len(order), batch_size):
            batch = order[start:start + batch_size]
            # ALGO LOGIC: one forward pass over the chosen and rejected inputs, Bradley-Terry loss, AdamW step
            rewards = score(model, tokenizer, [chosen_ids[i] for i in batch] + [rejected_ids[i] for i in batch], device)
            r_chosen, r_rejected = rewards[:len(batch)], rewards[len(batch):]
            loss = loss_of(r_chosen, r_rejected, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            global_step += 1
            pending = counters.pending
            pending["loss_sum"] += loss.item()
            pending["steps"] += 1
            pending["pairs"] += len(batch)
            pending["correct"] += int((r_chosen > r_rejected).sum().item())
            epoch_done = start + batch_size >= len(order)
            if epoch_done and ((epoch + 1) % eval_interval == 0 or epoch + 1 == epochs):
                scalars = evaluate()
                counters.holdout_accuracy = scalars["charts/holdout_accuracy"]
                scalars["losses/preference_loss"] = pending["loss_sum"] / pending["steps"]
                scalars["charts/train_accuracy"] = pending["correct"] / pending["pairs"]
                run.log(global_step, scalars)
                counters.pending = {"loss_sum": 0.0, "steps": 0, "pairs": 0, "correct": 0}
            if run.end_iteration(global_step):
                run.finish(global_step)
                return counters.holdout_accuracy

    run.finish(global_step)
    responses = [chosen_ids[i] for i in train_idx] + [rejected_ids[i] for i in train_idx]
    rewards = score_all(model, tokenizer, responses, batch_size, device).double()
    save_reward_model(run.dir / REWARD_DIR, model, tokenizer,
                      {"mean": rewards.mean().item(), "std": rewards.std(correction=0).item(),
                       "count": len(responses), "max_length": int(text.max_length), "input": INPUT_FORMAT})
    return counters.holdout_accuracy


def save_reward_model(directory: Path, model: Any, tokenizer: Any, stats: dict[str, float]) -> Path:
    """Write ``model`` and ``tokenizer`` (``save_pretrained``) and ``stats`` as ``reward_stats.json`` into
    ``directory``, atomically (:func:`rlrun.rlhf.lm.save_model`)."""
    return save_model(directory, model, tokenizer, {STATS_FILE: json.dumps(stats, indent=2) + "\n"})
