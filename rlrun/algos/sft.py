"""Supervised fine-tuning of a causal language model on demonstrations: the first stage of InstructGPT (Ouyang et
al. 2022, "Training language models to follow instructions with human feedback", section 3.5), as TRL's SFTTrainer.

Data: ``env.demonstrations_path`` (JSONL, ``{"prompt", "response"}`` per line; the built-in task's file when null).
Each pair is read as prompt tokens + response tokens + EOS, truncated to ``algo.max_length`` (the response is cut,
a prompt that leaves no room is refused with its line), right-padded with attention masks. The loss is the mean
next-token cross-entropy over the response tokens (EOS included) only (``completion_only_loss=true``; false also
counts the prompt's tokens). A share ``holdout_fraction`` of the pairs is held out; the held-out perplexity
exp(mean negative log-likelihood per response token) is logged before training and every ``eval_steps``.

The model: ``algo.model``, any Hugging Face causal LM (a local directory, an rlrun run directory, a cached name, or
``rlrun-tiny-gpt2``). ``global_step`` counts gradient steps; ``total_timesteps`` is not used. The run directory gets
``model/`` (save_pretrained: model and tokenizer), which the later stages take as their ``algo.model``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from omegaconf import DictConfig

from rlrun.core.config import check_bool, check_choice, check_int, check_number, fail, get
from rlrun.core.registry import AlgoSpec, register
from rlrun.core.run import Run, resolve_device
from rlrun.core.state import Counters
from rlrun.rlhf.lm import (MODEL_DIR, collate_pairs, context_length, cross_entropy_loss, encode_prompt,
                          encode_response, epoch_batches, fit_pair, load_causal_config, load_causal_lm, load_tokenizer, positions,
                          resolve_model, save_model, torch_dtype)
from rlrun.rlhf.preference_data import load_demonstrations
from rlrun.rlhf.text_reward import split_pairs
from rlrun.rlhf.text_task import task_path, validate_text_env

SHUFFLE_STREAM = 1  # np.random.default_rng([seed, SHUFFLE_STREAM, epoch]): the order of the pairs in an epoch


def validate(cfg: DictConfig) -> None:
    """Check the sft keys, the demonstrations file (every line) and the model; raises ConfigError."""
    a = "algo."
    validate_text_env(cfg, "sft", needs=("demonstrations",))
    check_number(cfg, a + "learning_rate", low=0, low_open=True)
    check_number(cfg, a + "weight_decay", low=0)
    check_number(cfg, a + "max_grad_norm", low=0, low_open=True)
    check_int(cfg, a + "batch_size", low=1)
    check_int(cfg, a + "num_train_epochs", low=1)
    check_int(cfg, a + "eval_steps", low=1)
    check_number(cfg, a + "holdout_fraction", low=0, high=1, low_open=True, high_open=True)
    check_bool(cfg, a + "completion_only_loss")
    check_choice(cfg, a + "dtype", ["float32", "bfloat16"])
    max_length = check_int(cfg, a + "max_length", low=2)
    name = resolve_model(get(cfg, a + "model"), a + "model")
    context = context_length(load_causal_config(name, a + "model"))
    if context is not None and max_length > context:
        fail(a + "max_length", max_length, f"at most {context}, the context of algo.model")
    path = task_path(cfg, "demonstrations")
    demonstrations = load_demonstrations(path)
    if len(demonstrations) < 2:
        fail("env.demonstrations_path", path, "a file of at least 2 demonstrations (some are held out)")
    tokenizer = load_tokenizer(name, a + "model")
    for d in demonstrations:
        fit_pair(encode_prompt(tokenizer, d.prompt), [0], max_length, f"{path} line {d.line}", a + "max_length")


def train(cfg: DictConfig, run: Run) -> float:
    """Fine-tune ``algo.model`` on the demonstrations; returns the final held-out perplexity."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    algo = cfg.algo
    device = resolve_device(cfg.device)
    tokenizer, model = load_causal_lm(resolve_model(algo.model, "algo.model"), "algo.model", torch_dtype(algo.dtype))
    model.to(device).train()
    path = task_path(cfg, "demonstrations")
    encoded, truncated = [], 0
    for d in load_demonstrations(path):
        prompt_ids, response_ids, cut = fit_pair(encode_prompt(tokenizer, d.prompt), encode_response(tokenizer, d.response),
                                                 int(algo.max_length), f"{path} line {d.line}", "algo.max_length")
        encoded.append((prompt_ids, response_ids))
        truncated += cut
    if truncated:
        print(f"rlrun: {truncated} of {len(encoded)} responses truncated to algo.max_length={algo.max_length} tokens")
    train_idx, holdout_idx = split_pairs(len(encoded), float(algo.holdout_fraction), int(cfg.seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(algo.learning_rate),
                                  weight_decay=float(algo.weight_decay))
    batch_size, epochs = int(algo.batch_size), int(algo.num_train_epochs)
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    total_steps = epochs * steps_per_epoch
    run.set_total(total_steps)

    def loss_of(rows: np.ndarray) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy over the counted tokens of the pairs ``rows``, and how many tokens counted."""
        batch = collate_pairs([encoded[i] for i in rows], tokenizer.pad_token_id).to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=positions(batch.attention_mask)).logits[:, :-1]
        counted = batch.response_mask if algo.completion_only_loss else batch.attention_mask
        mask = counted[:, 1:]  # token t + 1 is predicted at position t
        return cross_entropy_loss(logits, batch.input_ids[:, 1:], mask), int(mask.sum())

    @torch.no_grad()
    def heldout_perplexity() -> float:
        model.eval()
        nll, tokens = 0.0, 0
        for start in range(0, len(holdout_idx), batch_size):
            loss, n = loss_of(holdout_idx[start:start + batch_size])
            nll, tokens = nll + loss.item() * n, tokens + n
        model.train()
        return math.exp(nll / tokens)

    # STATE: what a checkpoint holds; a resumed run continues after the checkpoint's gradient step
    counters = Counters(pending={"loss_sum": 0.0, "steps": 0}, heldout_perplexity=float("nan"),
                        initial_perplexity=float("nan"))
    run.track(model=model, optimizer=optimizer, counters=counters, epoch=lambda: global_step // steps_per_epoch)
    global_step = run.start_step
    if global_step == 0:
        counters.initial_perplexity = counters.heldout_perplexity = heldout_perplexity()
        run.log(0, {"charts/heldout_perplexity": counters.heldout_perplexity})

    for rows in epoch_batches(train_idx, batch_size, epochs, int(cfg.seed), SHUFFLE_STREAM, global_step):
        # ALGO LOGIC: next-token cross-entropy on the response tokens, gradient clipping, AdamW step
        loss, _ = loss_of(rows)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float(algo.max_grad_norm))
        optimizer.step()
        global_step += 1
        counters.pending["loss_sum"] += loss.item()
        counters.pending["steps"] += 1
        if global_step % int(algo.eval_steps) == 0 or global_step == total_steps:
            counters.heldout_perplexity = heldout_perplexity()
            run.log(global_step, {"losses/sft_loss": counters.pending["loss_sum"] / counters.pending["steps"],
                                  "losses/grad_norm": grad_norm.item(),
                                  "charts/heldout_perplexity": counters.heldout_perplexity})
            counters.pending = {"loss_sum": 0.0, "steps": 0}
        if run.end_iteration(global_step):
            run.finish(global_step)
            return counters.heldout_perplexity

    run.finish(global_step)
    save_model(run.dir / MODEL_DIR, model, tokenizer)
    print(f"rlrun: held-out perplexity {counters.initial_perplexity:.2f} before, {counters.heldout_perplexity:.2f} "
          f"after fine-tuning; model in {run.dir / MODEL_DIR}")
    return counters.heldout_perplexity


register(AlgoSpec("sft", validate, train, metric="held-out perplexity", task="text"))
