"""The text "environment" of the language-model algorithms (sft, dpo, ppo_rlhf): where the prompts and
demonstrations come from, and the true scorer of a response.

For a language model the state is the prompt plus the tokens generated so far and the action is the next token
(the RLHF lecture; Ziegler et al. 2019), so the task is a distribution of prompts and, where one exists, a score
of the finished response. ``env=sentiment`` is the built-in task: prompts cut from the English sentences of
:mod:`rlrun.rlhf.tiny_lm`'s corpus, demonstrations that complete them, and VADER's sentiment as the true score
(:mod:`rlrun.rlhf.scorers`), written once into the cache. ``env=text`` takes the user's files::

    env:
      family: text
      id: rlrun-sentiment | text     # the built-in task, or files named below
      prompts_path: ...              # JSONL {"prompt"} per line: the prompts of PPO-RLHF and of sampled pairs
      heldout_prompts_path: ...      # JSONL {"prompt"}: held-out prompts for the true score and samples
      demonstrations_path: ...       # JSONL {"prompt", "response"}: supervised fine-tuning data
      scorer: vader | null           # the true score of a response (null: none; a reward model must be given)

A path left null on the built-in task means the built-in file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlrun.core.config import check_choice, check_int, check_number, fail, get
from rlrun.rlhf.lm import decode_responses, encode_prompt, sample, sequence_forward, token_logprobs
from rlrun.rlhf.preference_data import TextPair, load_prompts, load_rankings, load_text_pairs, ranking_pairs
from rlrun.rlhf.preferences import SyntheticLabeler
from rlrun.rlhf.scorers import SCORERS, get_scorer
from rlrun.rlhf.tiny_lm import VERSION, rlrun_cache_dir, write_sentiment_task

BUILTIN_TASK = "rlrun-sentiment"  # env.id of the built-in task
FILES = {"prompts": "prompts.jsonl", "heldout_prompts": "prompts_heldout.jsonl",
         "demonstrations": "demonstrations.jsonl"}  # env.<name>_path -> the built-in task's file
PAIRS_FILE = "pairs.jsonl"  # <run dir>/pairs.jsonl: the pairs a run sampled and labelled
MIN_PAIRS = 2  # at least one training and one held-out pair
EVAL_BATCH = 64  # prompts sampled at once by evaluate_policy
PAIR_STREAM = 7  # np.random.default_rng([seed, PAIR_STREAM]): prompts, sampling and labels of scored pairs


def validate_text_env(cfg: DictConfig, algo: str, needs: tuple[str, ...] = ()) -> None:
    """Check the ``env`` keys of a language-model algorithm: a text task whose files exist (those in ``needs``, a
    subset of FILES, must be given unless the task is the built-in one) and whose scorer is known.
    Raises ConfigError naming the key."""
    family = get(cfg, "env.family")
    if family != "text":
        fail("env", get(cfg, "env.name"), f"a text task for algo={algo} (env=sentiment, the built-in one, or "
             "env=text with its files): it trains a language model, not an agent in an environment")
    env_id = get(cfg, "env.id")
    for name in FILES:
        path = get(cfg, f"env.{name}_path")
        if path is None and env_id != BUILTIN_TASK and name in needs:
            fail(f"env.{name}_path", path, f"a JSONL file (or env.id={BUILTIN_TASK}, whose built-in file a null "
                 "path means)")
        if path is not None and not (isinstance(path, str) and Path(path).is_file()):
            fail(f"env.{name}_path", path, "an existing JSONL file")
    scorer = get(cfg, "env.scorer")
    if scorer is not None:
        check_choice(cfg, "env.scorer", list(SCORERS))
        get_scorer(scorer, key="env.scorer")  # a missing package fails here, before anything is written


def task_path(cfg: DictConfig, name: str) -> str | None:
    """The file of ``env.<name>_path`` (``name`` in FILES): the configured path, or the built-in task's file,
    written into the cache on first use; None if the path is null and the task is not the built-in one."""
    path = get(cfg, f"env.{name}_path")
    if path is not None:
        return str(path)
    if get(cfg, "env.id") != BUILTIN_TASK:
        return None
    directory = rlrun_cache_dir() / f"sentiment-v{VERSION}"  # the corpus and its split are tiny_lm's
    if not all((directory / f).is_file() for f in FILES.values()):
        write_sentiment_task(directory)
    return str(directory / FILES[name])


def task_scorer(cfg: DictConfig) -> Callable[[list[str], list[str]], Any] | None:
    """The true scorer of ``env.scorer`` (prompts, responses) -> (N,) float64 scores, or None."""
    name = get(cfg, "env.scorer")
    return None if name is None else get_scorer(name, key="env.scorer")



# ---- preference pairs sampled from a model and labelled by the scorer -----------------------------------------

def generation_kwargs(generation: DictConfig) -> dict[str, Any]:
    """The sampling keys of an ``algo.generation`` block as keyword arguments of :func:`rlrun.rlhf.lm.sample`."""
    return {"max_new_tokens": int(generation.max_new_tokens), "temperature": float(generation.temperature),
            "top_k": int(generation.top_k), "top_p": float(generation.top_p)}


def validate_generation(cfg: DictConfig, prefix: str) -> None:
    """Check a ``<prefix>generation`` block (max_new_tokens, temperature, top_k, top_p); raises ConfigError."""
    check_int(cfg, prefix + "generation.max_new_tokens", low=1)
    check_number(cfg, prefix + "generation.temperature", low=0)
    check_int(cfg, prefix + "generation.top_k", low=0)
    check_number(cfg, prefix + "generation.top_p", low=0, high=1, low_open=True)


def sample_scored_pairs(model: Any, tokenizer: Any, prompts: list[str], scorer: Callable, num_pairs: int,
                        generation: dict[str, Any], seed: int, label_temperature: float = 0.0,
                        batch_size: int = 64) -> list[dict[str, Any]]:
    """Preference pairs labelled by a scorer, as the labellers of InstructGPT compared two answers of the SFT
    model to one prompt (Ouyang et al. 2022, section 3.5) and TRL's sentiment example scored GPT-2's reviews.

    Prompts are drawn at random (with replacement) from ``prompts``; two responses are sampled from ``model`` for
    each and labelled by :func:`rlrun.rlhf.scorers.scorer_labels` (``label_temperature`` 0: the higher score wins;
    > 0: a Bradley-Terry draw). Ties carry no preference and are dropped, and so are pairs of identical responses;
    sampling goes on until ``num_pairs`` pairs are found (at most 20 rounds of ``num_pairs`` prompts).

    Returns:
        ``num_pairs`` records ``{"prompt", "chosen", "rejected", "chosen_score", "rejected_score"}`` (fewer if the
        scorer could not separate enough responses). Deterministic for a ``seed``.
    """
    device = next(model.parameters()).device
    rng = np.random.default_rng([seed, PAIR_STREAM])
    generator = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))
    labeler = SyntheticLabeler("bradley_terry" if label_temperature > 0 else "deterministic",
                               temperature=label_temperature or 1.0, seed=int(rng.integers(2**62)))
    records: list[dict[str, Any]] = []
    was_training = model.training
    model.eval()
    for _ in range(20):
        if len(records) >= num_pairs:
            break
        for start in range(0, num_pairs, batch_size):
            chosen_prompts = [prompts[i] for i in rng.integers(len(prompts), size=min(batch_size, num_pairs - start))]
            ids = [encode_prompt(tokenizer, p) for p in chosen_prompts for _ in range(2)]
            samples = sample(model, ids, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             generator=generator, **generation)
            texts = decode_responses(tokenizer, samples)
            doubled = [p for p in chosen_prompts for _ in range(2)]
            scores = np.asarray(scorer(doubled, texts), dtype=np.float64)
            labels = labeler(scores[0::2], scores[1::2])
            for k, prompt in enumerate(chosen_prompts):
                a, b, label = texts[2 * k], texts[2 * k + 1], labels[k]
                if label == 0.5 or a == b or not a.strip() or not b.strip():
                    continue
                win, lose = (2 * k, 2 * k + 1) if label == 1.0 else (2 * k + 1, 2 * k)
                records.append({"prompt": prompt, "chosen": texts[win], "rejected": texts[lose],
                                "chosen_score": float(scores[win]), "rejected_score": float(scores[lose])})
    model.train(was_training)
    return records[:num_pairs]


def write_pairs(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write pair records as JSONL (the prompt/chosen/rejected format that ``load_text_pairs`` reads)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    tmp.replace(path)
    return path


def preference_pairs(cfg: DictConfig, prefix: str, run_dir: Path, sampler: Callable[[], tuple[Any, Any]]
                     ) -> tuple[list[TextPair], list[float], str]:
    """The preference pairs of a DPO or text reward-model run, and where they came from.

    ``<prefix>pairs_path`` (prompt/chosen/rejected JSONL, label 1 each) or ``<prefix>rankings_path`` (K-way
    rankings expanded into their K-choose-2 pairs, ties labelled 0.5) if set; otherwise ``<prefix>num_pairs`` pairs
    sampled from the model that ``sampler()`` returns as ``(model, tokenizer)`` on the task's prompts and labelled
    by ``env.scorer`` (:func:`sample_scored_pairs`, ``<prefix>generation``, ``<prefix>label_temperature``), written
    to ``<run dir>/pairs.jsonl`` and read back from there when the run resumes.

    Returns:
        (pairs, labels in {1, 0.5}, a description of the source).
    """
    pairs_path, rankings_path = get(cfg, prefix + "pairs_path"), get(cfg, prefix + "rankings_path")
    if pairs_path is not None:
        pairs = load_text_pairs(pairs_path)
        return pairs, [1.0] * len(pairs), str(pairs_path)
    if rankings_path is not None:
        pairs, labels = ranking_pairs(load_rankings(rankings_path))
        return pairs, labels, f"{rankings_path} (K-choose-2 pairs)"
    path = run_dir / PAIRS_FILE
    if not path.is_file():
        prompts = [p for _, p in load_prompts(task_path(cfg, "prompts"))]
        model, tokenizer = sampler()
        records = sample_scored_pairs(model, tokenizer, prompts, task_scorer(cfg), int(get(cfg, prefix + "num_pairs")),
                                      generation_kwargs(get(cfg, prefix + "generation")), int(cfg.seed),
                                      float(get(cfg, prefix + "label_temperature")))
        write_pairs(path, records)
    pairs = load_text_pairs(path)
    return pairs, [1.0] * len(pairs), f"{path} (sampled from the model, labelled by env.scorer={cfg.env.scorer})"


def validate_pairs_source(cfg: DictConfig, prefix: str) -> None:
    """Check the keys of :func:`preference_pairs` and load a given pairs or rankings file; raises ConfigError."""
    pairs_path, rankings_path = get(cfg, prefix + "pairs_path"), get(cfg, prefix + "rankings_path")
    if pairs_path is not None and rankings_path is not None:
        fail(prefix + "rankings_path", rankings_path, f"null when {prefix}pairs_path is set (one source of pairs)")
    for key, loader in ((prefix + "pairs_path", load_text_pairs), (prefix + "rankings_path", load_rankings)):
        value = get(cfg, key)
        if value is not None:
            if not isinstance(value, str) or not Path(value).is_file():
                fail(key, value, "an existing JSONL file")
            if len(loader(value)) < MIN_PAIRS:
                fail(key, value, f"a file of at least {MIN_PAIRS} records (some are held out)")
    if pairs_path is None and rankings_path is None:
        if OmegaConf.select(cfg, "env.scorer", default=None) is None:
            fail(prefix + "pairs_path", None, "a pairs file, or a rankings file, or env.scorer set to label pairs "
                 "sampled from the model")
        check_int(cfg, prefix + "num_pairs", low=2 * MIN_PAIRS)
        check_number(cfg, prefix + "label_temperature", low=0)
        validate_generation(cfg, prefix)
        load_prompts(task_path(cfg, "prompts"))


# ---- evaluating a language-model policy on held-out prompts -----------------------------------------------------

@torch.no_grad()
def evaluate_policy(model: Any, reference: Any, tokenizer: Any, prompts: list[str], generation: dict[str, Any],
                    seed: int, scorers: dict[str, Callable], table_rows: int = 8) -> tuple[dict[str, float], str]:
    """Sample one response per held-out prompt and measure it: the mean of every scorer (e.g. ``true_score`` from
    the task's scorer, ``reward`` from a reward model), the mean response length in tokens and the sequence KL to
    ``reference``, estimated as the mean over responses of sum_t log pi(y_t|...) - log pi_ref(y_t|...) (both with
    the sampling temperature), the quantity best-of-n's log n - (n - 1) / n is compared with.

    Returns:
        (scalars ``{"<scorer name>": mean, "kl": ..., "response_length": ...}``, a markdown table of the first
        ``table_rows`` prompts, responses and scores). Deterministic for a ``seed``; restores train mode.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    scores: dict[str, list[float]] = {name: [] for name in scorers}
    kls, lengths, rows = [], [], []
    for start in range(0, len(prompts), EVAL_BATCH):
        batch = prompts[start:start + EVAL_BATCH]
        samples = sample(model, [encode_prompt(tokenizer, p) for p in batch], eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, generator=generator, **generation)
        temperature = generation["temperature"] or 1.0
        logits, _ = sequence_forward(model, samples)
        ref_logits, _ = sequence_forward(reference, samples)
        mask = samples.response_mask.float()
        logp = token_logprobs(logits / temperature, samples.response)
        ref_logp = token_logprobs(ref_logits / temperature, samples.response)
        kls += ((logp - ref_logp) * mask).sum(dim=1).tolist()
        lengths += mask.sum(dim=1).tolist()
        texts = decode_responses(tokenizer, samples)
        batch_scores = {name: np.asarray(fn(batch, texts), dtype=np.float64) for name, fn in scorers.items()}
        for name, values in batch_scores.items():
            scores[name] += values.tolist()
        for k in range(len(batch)):
            if len(rows) < table_rows:
                cells = " | ".join(f"{batch_scores[n][k]:.3f}" for n in scorers)
                rows.append(f"| {_cell(batch[k])} | {_cell(texts[k])} | {cells} |")
    model.train(was_training)
    scalars = {name: float(np.mean(values)) for name, values in scores.items()}
    scalars.update(kl=float(np.mean(kls)), response_length=float(np.mean(lengths)))
    header = "| prompt | response | " + " | ".join(scorers) + " |\n|---|---|" + "---|" * len(scorers) + "\n"
    return scalars, header + "\n".join(rows)


def _cell(text: str) -> str:
    """Text for a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
