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
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from rlrun.core.config import ConfigError, check_int, get
from rlrun.core.run import Run, resolve_device
from rlrun.core.state import Counters
from rlrun.rlhf.preference_data import TextPair, load_text_pairs
from rlrun.rlhf.preferences import preference_loss

MIN_PAIRS = 2  # at least one training and one held-out pair
MIN_MAX_LENGTH = 8  # algo.text.max_length must leave room for a few tokens of prompt and response
SPLIT_STREAM = 0  # np.random.default_rng([seed, SPLIT_STREAM]): the train / held-out split
SHUFFLE_STREAM = 1  # np.random.default_rng([seed, SHUFFLE_STREAM, epoch]): the order of the pairs in an epoch
REWARD_DIR = "reward_model"  # <run dir>/reward_model/: the trained model and tokenizer
STATS_FILE = "reward_stats.json"  # normalization statistics inside REWARD_DIR

INPUT_FORMAT = "tokenizer(prompt, response), truncated to max_length"  # how a response is read (reward_stats.json)
HUB_LOGGER = "huggingface_hub"  # its download retries warn on this logger; silenced while a model loads


# ---- loading models -------------------------------------------------------------------------------

def _looks_like_path(name: str) -> bool:
    """True if ``name`` can only be a file system path, not a Hugging Face name like ``org/model``."""
    return (os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1
            or (os.sep != "/" and os.sep in name))


def _local_or_name(name: str) -> str:
    """``name`` with ``~`` expanded if it is an existing directory, else unchanged (a Hugging Face name)."""
    local = Path(name).expanduser()
    return str(local) if local.is_dir() else name


def _load(kind: Any, name: str, **kwargs: Any) -> Any:
    """``kind.from_pretrained(name)`` with the errors of a missing model turned into one ConfigError.

    A name that is not a local directory is looked up in the Hugging Face cache first (no network, so a
    cached model loads at once offline), then downloaded, with huggingface_hub's retry warnings silenced:
    the ConfigError says what failed.
    """
    if not Path(name).is_dir():
        try:
            return kind.from_pretrained(name, local_files_only=True, **kwargs)
        except (OSError, ValueError):
            pass  # not cached: try to download it below
    hub_logger = logging.getLogger(HUB_LOGGER)
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        return kind.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"algo.text.model={name!r} cannot be loaded ({exc.__class__.__name__}: {first_line}): "
                          "expected a local directory with config.json or the name of a model in the Hugging Face "
                          "cache") from None
    finally:
        hub_logger.setLevel(level)


def load_text_config(name: str) -> Any:
    """Check ``algo.text.model`` and load its transformers config (no weights).

    Args:
        name: a local directory holding ``config.json``, or a Hugging Face name (cached, or downloaded).

    Returns:
        The ``PretrainedConfig``.

    Raises:
        ConfigError: naming algo.text.model if the directory does not exist or lacks config.json, the
            name cannot be loaded (e.g. not cached and offline: set HF_HUB_OFFLINE=1 to fail at once
            rather than after huggingface_hub's download retries), or the model has ``num_labels != 1``.
    """
    from transformers import AutoConfig

    local = Path(name).expanduser()
    if local.exists() or _looks_like_path(name):
        if not local.is_dir():
            raise ConfigError(f"algo.text.model={name!r}: no such directory: expected a directory with config.json "
                              "(e.g. written by save_pretrained) or the name of a cached model")
        if not (local / "config.json").is_file():
            raise ConfigError(f"algo.text.model={name!r}: the directory has no config.json: expected a model "
                              "written by save_pretrained")
        name = str(local)
    config = _load(AutoConfig, name)
    if config.num_labels != 1:
        raise ConfigError(f"algo.text.model={name!r} has num_labels={config.num_labels}: expected a sequence-"
                          "classification model with one output (num_labels=1), the scalar reward")
    return config


def load_text_tokenizer(name: str) -> Any:
    """Load the tokenizer of ``algo.text.model``; one without a padding token pads with its end-of-text
    token (as GPT-2's, which has none).

    Raises:
        ConfigError: naming algo.text.model if it cannot be loaded or has neither a pad nor an eos token.
    """
    from transformers import AutoTokenizer

    tokenizer = _load(AutoTokenizer, _local_or_name(name))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"algo.text.model={name!r}: its tokenizer has neither a pad nor an eos token: "
                              "expected one of them to pad batches")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_text_model(name: str) -> tuple[Any, Any]:
    """Load ``(tokenizer, model)`` of ``algo.text.model`` for reward modelling.

    The model is ``AutoModelForSequenceClassification`` in float32, its ``pad_token_id`` set to the
    tokenizer's (:func:`load_text_tokenizer`), so that decoder models such as GPT-2 score the last
    non-padding token of every input.

    Raises:
        ConfigError: as :func:`load_text_config` and :func:`load_text_tokenizer`.
    """
    from transformers import AutoModelForSequenceClassification

    config = load_text_config(name)
    tokenizer = load_text_tokenizer(name)
    model = _load(AutoModelForSequenceClassification, _local_or_name(name), config=config, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


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
    pairs_path = get(cfg, "algo.text.pairs_path")
    if not isinstance(pairs_path, str) or not pairs_path:
        raise ConfigError(f"algo.text.pairs_path={pairs_path!r} is not allowed: expected the path of a JSONL file "
                          "with prompt, chosen and rejected per line (algo.data=text)")
    if not Path(pairs_path).is_file():
        raise ConfigError(f"algo.text.pairs_path={pairs_path!r}: no such file: expected a JSONL file with prompt, "
                          "chosen and rejected per line")
    pairs = load_text_pairs(pairs_path)
    if len(pairs) < MIN_PAIRS:
        raise ConfigError(f"algo.text.pairs_path={pairs_path!r} holds {len(pairs)} pair: expected at least "
                          f"{MIN_PAIRS}, so that some are held out")
    max_length = check_int(cfg, "algo.text.max_length", low=MIN_MAX_LENGTH)
    name = get(cfg, "algo.text.model")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"algo.text.model={name!r} is not allowed: expected a local directory or the name of a "
                          "cached Hugging Face sequence-classification model with num_labels=1")
    config = load_text_config(name)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and max_length > positions:
        raise ConfigError(f"algo.text.max_length={max_length} is not allowed: expected at most {positions}, the "
                          f"positions of algo.text.model={name!r}")
    load_text_tokenizer(name)


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
    pairs = load_text_pairs(text.pairs_path)
    tokenizer, model = load_text_model(text.model)
    model.to(device).train()
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

    def loss_of(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
        return preference_loss(r_chosen, r_rejected, torch.ones_like(r_chosen), **loss_args)

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
                "charts/holdout_loss": loss_of(r_chosen, r_rejected).item(),
                "charts/margin": (r_chosen - r_rejected).mean().item()}

    for epoch in range(global_step // steps_per_epoch, epochs):
        order = train_idx[np.random.default_rng([int(cfg.seed), SHUFFLE_STREAM, epoch]).permutation(len(train_idx))]
        for start in range(global_step % steps_per_epoch * batch_size, len(order), batch_size):
            batch = order[start:start + batch_size]
            # ALGO LOGIC: one forward pass over the chosen and rejected inputs, Bradley-Terry loss, AdamW step
            rewards = score(model, tokenizer, [chosen_ids[i] for i in batch] + [rejected_ids[i] for i in batch], device)
            r_chosen, r_rejected = rewards[:len(batch)], rewards[len(batch):]
            loss = loss_of(r_chosen, r_rejected)
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
    ``directory``, atomically: everything goes to a temporary sibling first, which then replaces it."""
    tmp = directory.with_name(f".tmp_{directory.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    return directory
