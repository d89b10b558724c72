"""A tiny GPT-2 language model that rlrun pretrains itself, offline, and a sentiment task on its corpus.

The reserved model name ``rlrun-tiny-gpt2`` (:data:`TINY_LM_NAME`) resolves to a directory under rlrun's cache
(:func:`tiny_lm_path`), pretrained on first use in about 20 minutes on 2 CPU cores and reused after, so that the
language-model RLHF algorithms (SFT, DPO, PPO) have a real causal LM to start from where nothing may be downloaded.

The corpus is the English documentation that ships with every CPython: ``pydoc_data.topics.topics`` (the text
of ``help("if")``, ``help("exceptions")`` and 77 other help topics, about 465,000 characters in CPython 3.11) and
the docstrings of the pure-Python standard library, read from its source files with ``ast``. It needs no
download, no data-set licence and no extra package, and it is prose written by people. The honest caveat: it is
technical documentation, not everyday English; its sentences are neutral in tone (VADER scores most of them 0,
see :mod:`rlrun.rlhf.scorers`) and its vocabulary is Python's. :func:`corpus_sentences` drops the code (code
blocks, ``>>>`` sessions, grammar productions, tables, signatures) and keeps the distinct sentences of 6 to 40
words (about 11,000 sentences and 150,000 words with CPython 3.11); the exact text, and so the model, depends on
the minor version of Python that runs it (``pretraining.json`` records the version and a hash of the sentences).
A hash of each sentence splits them three ways: pretraining, the sentiment task, held out.

The tokenizer is byte-level BPE (the 256-byte alphabet of GPT-2, so any UTF-8 text encodes) with
:data:`VOCAB_SIZE` entries learned on the training sentences, ``<|endoftext|>`` as both bos and eos and a
separate ``<pad>``; it adds no special tokens itself. In pretraining every sentence follows an
``<|endoftext|>``, so a prompt is best fed as ``[eos] + tokens(prompt)``, and a finished sentence ends with eos.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import torch

TINY_LM_NAME = "rlrun-tiny-gpt2"  # the reserved model name that resolves to tiny_lm_path()
VERSION = 3  # of corpus, tokenizer, architecture and training: bump on any change, the cache keys on it
CACHE_ENV = "RLRUN_CACHE"  # environment variable naming rlrun's cache directory (default ~/.cache/rlrun)

# corpus
MIN_WORDS = 6  # shortest kept sentence, in whitespace-separated words
MAX_WORDS = 40  # longest kept sentence, in words
MIN_LINE_LETTERS = 0.6  # a source line with fewer letters among its non-space characters is code or a table
MIN_SENTENCE_LETTERS = 0.8  # a kept sentence has at least this share of letters among its non-space characters
MIN_BASIC_CHARS = 0.98  # ... and at least this share of letters, digits, spaces and basic punctuation
TASK_FRACTION = 0.15  # share of sentences kept out of pretraining for the sentiment task's demonstrations and prompts
HELDOUT_FRACTION = 0.1  # share of sentences held out of tokenizer and model training (by a hash of the text)

# architecture: a GPT-2 (Radford et al. 2019) of 2.2M parameters, 0.39M of them the tied token embedding
LAYERS = 4  # transformer blocks
WIDTH = 192  # embedding width
HEADS = 4  # attention heads (width 48 each)
POSITIONS = 128  # longest input in tokens; also the length of a pretraining block
VOCAB_SIZE = 2048  # byte-level BPE vocabulary: 256 bytes, 2 special tokens and the merges learned on the corpus

# pretraining: plain next-token cross-entropy on blocks of sentences joined by eos, AdamW, warmup then cosine.
# The corpus is small (35k training tokens): 600 steps are 35 epochs, where held-out perplexity bottoms out;
# 1,200 steps of a 4x128 model memorise it (train perplexity 3, held-out 116 instead of 65), and dropout 0.1
# did not help (68 at best).
MAX_STEPS = 600  # optimizer steps
BATCH_SIZE = 16  # blocks of POSITIONS tokens per step
LEARNING_RATE = 1.5e-3  # peak AdamW learning rate
MIN_LR_RATIO = 0.1  # the cosine decays to this share of the peak
WARMUP_STEPS = 50  # linear warmup from 0 to the peak
WEIGHT_DECAY = 0.1  # AdamW weight decay, on matrices only (not biases, layer norms, embeddings)
ADAM_BETAS = (0.9, 0.95)  # AdamW betas, GPT-style
MAX_GRAD_NORM = 1.0  # gradient clipping
LOG_INTERVAL = 100  # steps between progress lines
FINAL_LOSS_WINDOW = 50  # the final train loss is the mean minibatch loss of this many last steps (at most a tenth)
EVAL_BATCH_SIZE = 64  # sentences per forward pass when computing perplexities
EXPECTED_MINUTES = 20  # what tiny_lm_path announces for a build at the defaults on 2 CPU cores

EOS_TOKEN = "<|endoftext|>"  # end (and beginning) of text, GPT-2's name
PAD_TOKEN = "<pad>"  # padding, distinct from eos

_ADMONITIONS = frozenset({"Note:", "Notes:", "See also:", "Warning:"})  # labels whose indented block is prose
_ASCII_PUNCT = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2026": "...",
                              "\u2014": "-", "\u2013": "-", "\u00a0": " "})
_BASIC = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"()-")
_BULLET = re.compile(r"^(\*|-|\d+\.)\s+")  # a list item's marker
_EMPHASIS = re.compile(r"(?<![\w*\"])\*([A-Za-z][^*\"]*?)\*(?![\w*])")  # *word* emphasis, not "*args"
_FOOTNOTE = re.compile(r"\s*\[\d+\]")  # footnote references, " [1]"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])")  # a sentence ends at . ! ? before a capital


# ---- corpus ------------------------------------------------------------------------------------------

def _letter_share(text: str) -> float:
    chars = text.replace(" ", "")
    return sum(ch.isalpha() for ch in chars) / max(len(chars), 1)


def _blocks(text: str) -> list[list[str]]:
    """The blank-line separated blocks of a help topic, as lists of lines."""
    blocks, block = [], []
    for line in text.splitlines():
        if line.strip():
            block.append(line.rstrip())
        elif block:
            blocks.append(block)
            block = []
    if block:
        blocks.append(block)
    return blocks


def _prose(text: str) -> list[str]:
    """The runs of prose lines of a help topic (as rendered by Sphinx's text builder), each joined into one string.

    A block indented deeper than the block before it is code when that block ends with ':' (the rendering of a
    reST literal block ``::``), unless that block is an admonition label (``Note:``); the code block goes on
    while blocks stay at least as deep. Blocks with ``>>>`` or a grammar production (``::=``) are code too.
    Within a prose block, a line that is mostly not letters (a table row, a heading underline, a signature)
    ends the run, and a list item starts a new one.
    """
    runs: list[str] = []
    previous: tuple[int, str] | None = None  # (indent, last line) of the previous block
    code_indent: int | None = None
    for block in _blocks(text.translate(_ASCII_PUNCT)):
        indent = min(len(line) - len(line.lstrip(" ")) for line in block)
        if code_indent is not None and indent >= code_indent:
            continue
        code_indent = None
        starts_code = (previous is not None and previous[1].endswith(":") and indent > previous[0]
                       and previous[1].strip() not in _ADMONITIONS)
        previous = (indent, block[-1])
        if starts_code:
            code_indent = indent
            continue
        if any(">>>" in line or "::=" in line for line in block):
            continue
        run: list[str] = []
        for line in block:
            stripped = line.strip()
            if (stripped[0] in "+|" or stripped.startswith("-[") or set(stripped) <= set("*=-~^#")
                    or _letter_share(stripped) < MIN_LINE_LETTERS):
                runs.extend([" ".join(run)] if run else [])
                run = []
                continue
            if _BULLET.match(stripped):
                runs.extend([" ".join(run)] if run else [])
                run, stripped = [], _BULLET.sub("", stripped)
            run.append(stripped)
        runs.extend([" ".join(run)] if run else [])
    return runs


def _is_sentence(sentence: str) -> bool:
    words = sentence.split()
    return (MIN_WORDS <= len(words) <= MAX_WORDS and sentence[0].isupper() and sentence[-1] in ".!?"
            and "_" not in sentence  # a snake_case identifier: the docstring talks code
            and _letter_share(sentence) >= MIN_SENTENCE_LETTERS
            and sum(ch in _BASIC for ch in sentence) >= MIN_BASIC_CHARS * len(sentence))


def _docstrings() -> list[str]:
    """The docstrings of the pure-Python standard library (modules, classes and functions), read with ``ast``
    from the source files, never imported; tests, idlelib and site-packages are skipped. Sorted by file."""
    import ast
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo"}
    docs = []
    for path in sorted(root.rglob("*.py")):
        if skip & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    docs.append(doc)
    return docs


@functools.lru_cache(maxsize=1)
def _corpus() -> tuple[str, ...]:
    from pydoc_data.topics import topics

    sentences: dict[str, None] = {}
    for text in [topics[name] for name in sorted(topics)] + _docstrings():
        for run in _prose(text):
            run = " ".join(_EMPHASIS.sub(r"\1", _FOOTNOTE.sub("", run)).split())
            for sentence in _SENTENCE_END.split(run):
                if _is_sentence(sentence):
                    sentences.setdefault(sentence, None)
    return tuple(sentences)


def corpus_sentences() -> list[str]:
    """The English sentences of Python's help topics (``pydoc_data.topics.topics``), code removed.

    Topics are read in sorted order; code blocks, ``>>>`` sessions, grammar productions, tables, headings and
    lines that are mostly not letters are dropped (see ``_prose``); typographic quotes and dashes become ASCII,
    ``*emphasis*`` marks and footnote references ``[1]`` are removed, whitespace is collapsed, and the text is
    split into sentences at ``.``, ``!`` or ``?`` before a capital. A sentence is kept when it has MIN_WORDS to
    MAX_WORDS words, starts with a capital, ends with ``. ! ?``, has at least MIN_SENTENCE_LETTERS letters among
    its non-space characters and at least MIN_BASIC_CHARS of letters, digits, spaces and ``.,;:!?'"()-``.

    Returns:
        the distinct sentences in order of first appearance: about 11,000 sentences and 150,000 words with
        CPython 3.11. Deterministic for a given Python version.
    """
    return list(_corpus())  # parsed once per process


def _hash_fraction(sentence: str) -> float:
    digest = hashlib.sha256(sentence.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def split_sentences(sentences: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Split sentences into (train, task, heldout) by a SHA-256 hash of each sentence's text.

    With f the first 8 bytes of the hash as a fraction of 2**64: held out when f < HELDOUT_FRACTION, in the task
    split when f < HELDOUT_FRACTION + TASK_FRACTION, else pretraining (train). The split does not depend on the
    order, on the other sentences or on Python's hash seed, and a sentence keeps its side when the corpus
    changes. The model is pretrained on ``train`` only; the sentiment task's demonstrations and prompts come from
    ``task`` and its held-out prompts from ``heldout``, so neither is text the model has seen. Order is preserved.
    """
    train, task, heldout = [], [], []
    for sentence in sentences:
        f = _hash_fraction(sentence)
        (heldout if f < HELDOUT_FRACTION else task if f < HELDOUT_FRACTION + TASK_FRACTION else train).append(sentence)
    return train, task, heldout


def _corpus_description(sentences: list[str], train: list[str], heldout: list[str]) -> dict:
    return {"source": "pydoc_data.topics.topics and the docstrings of the standard library (shipped with CPython)",
            "python": f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}",
            "sentences": len(sentences), "words": sum(len(s.split()) for s in sentences),
            "train_sentences": len(train), "heldout_sentences": len(heldout),
            "sha256": hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()}


# ---- tokenizer ---------------------------------------------------------------------------------------

def train_tokenizer(sentences: list[str], vocab_size: int | None = None):
    """Train a byte-level BPE tokenizer (the ``tokenizers`` library) on ``sentences``.

    Args:
        sentences: the training text, one sentence per item.
        vocab_size: entries including the 256 bytes and the two special tokens; VOCAB_SIZE when None. Fewer
            entries result when the text has fewer merges to learn.

    Returns:
        a ``transformers.PreTrainedTokenizerFast`` with eos = bos = ``<|endoftext|>`` (id 0) and pad = ``<pad>``
        (id 1), model_max_length POSITIONS and the default right padding. With special tokens (the default),
        encoding a text or a (prompt, response) pair puts bos before it, as every pretraining sentence follows an
        eos; ``add_special_tokens=False`` adds nothing.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size or VOCAB_SIZE, special_tokens=[EOS_TOKEN, PAD_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(sentences, trainer)
    eos = bpe.token_to_id(EOS_TOKEN)
    bpe.post_processor = processors.TemplateProcessing(single=f"{EOS_TOKEN} $A", pair=f"{EOS_TOKEN} $A $B:1",
                                                       special_tokens=[(EOS_TOKEN, eos)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
                                   pad_token=PAD_TOKEN, model_max_length=POSITIONS)


# ---- pretraining -------------------------------------------------------------------------------------

def _learning_rate(step: int, max_steps: int, peak: float, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then a cosine from ``peak`` to MIN_LR_RATIO * peak at ``max_steps``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(max_steps - warmup, 1)
    return peak * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _epoch_blocks(token_ids: list[list[int]], eos: int, block: int, generator: torch.Generator) -> torch.Tensor:
    """The sentences in a fresh random order, each after an eos, concatenated and cut into (n, block) int64
    blocks in a random order (the tail shorter than a block is dropped)."""
    order = torch.randperm(len(token_ids), generator=generator).tolist()
    stream = [t for i in order for t in (eos, *token_ids[i])]
    n = len(stream) // block
    if n == 0:
        raise ValueError(f"the training text has {len(stream)} tokens, fewer than one block of {block}")
    blocks = torch.tensor(stream[:n * block], dtype=torch.long).view(n, block)
    return blocks[torch.randperm(n, generator=generator)]


@torch.no_grad()
def sentence_perplexity(model, tokenizer, sentences: list[str], batch_size: int = EVAL_BATCH_SIZE) -> float:
    """Per-token perplexity of ``sentences`` under a causal LM, each scored alone as ``eos sentence eos``.

    The predicted tokens are the sentence's and the closing eos (the opening eos is context only), so the
    result is exp(total negative log-likelihood / total predicted tokens), in nats per token before exp.
    The model is put in eval mode.
    """
    model.eval()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(sentences), batch_size):
        rows = [[eos, *ids, eos] for ids in tokenizer(sentences[start:start + batch_size], add_special_tokens=False,
                                                      verbose=False)["input_ids"]]
        rows = [row[:model.config.n_positions] for row in rows]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        total_nll += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                       ignore_index=-100, reduction="sum").item()
        total_tokens += int((targets != -100).sum())
    return math.exp(total_nll / max(total_tokens, 1))


def pretrain_tiny_lm(directory: str | Path, seed: int = 0, max_steps: int | None = None, *,
                     n_layer: int | None = None, n_embd: int | None = None, n_head: int | None = None,
                     vocab_size: int | None = None, batch_size: int | None = None,
                     log: Callable[[str], None] | None = print) -> Path:
    """Pretrain the tiny GPT-2 causal LM on the training sentences of :func:`corpus_sentences` and save it.

    Builds the tokenizer (:func:`train_tokenizer`) and a ``transformers.GPT2LMHeadModel`` (n_layer blocks of
    width n_embd with n_head heads, POSITIONS positions, no dropout, tied input/output embeddings), then runs
    max_steps AdamW steps of next-token cross-entropy on batches of ``batch_size`` blocks of POSITIONS tokens:
    each epoch puts the sentences in a new random order, each after an ``<|endoftext|>``, and cuts the stream
    into blocks. The learning rate warms up linearly for WARMUP_STEPS steps (at most a tenth of max_steps)
    and then follows a cosine to MIN_LR_RATIO of LEARNING_RATE. At the defaults (2.2M parameters, 600 steps,
    1.2M tokens) this took 1216 s on 2 CPU cores (wall_seconds in pretraining.json, possibly shared with another
    job); the tests use e.g. ``max_steps=20, n_layer=1, n_embd=32, vocab_size=300`` (seconds).

    Deterministic for a seed on a given machine and thread count: the weights are initialised under a forked
    global torch RNG and the data order comes from a ``torch.Generator``, so the caller's random state is
    left untouched. Uses the CPU threads torch is set to (``torch.set_num_threads``).

    Args:
        directory: where the model goes; must not exist or be empty. Written atomically: everything is built in
            a temporary sibling directory that is then renamed, so a reader never sees a half-written model.
        seed: seed of the initialisation and the data order.
        max_steps, n_layer, n_embd, n_head, vocab_size, batch_size: None for the module's MAX_STEPS, LAYERS,
            WIDTH, HEADS, VOCAB_SIZE, BATCH_SIZE, read at call time.
        log: called with a progress line every LOG_INTERVAL steps and a summary; None for silence.

    Returns:
        ``directory`` as a Path, holding the ``save_pretrained`` model (config.json, model.safetensors), the
        tokenizer files and ``pretraining.json``: the architecture, steps, tokens seen, the final train loss
        (mean minibatch loss over the last FINAL_LOSS_WINDOW steps, at most a tenth of
        them, nats per token; ``first_train_loss`` is the first step's), train and held-out sentence
        perplexities (:func:`sentence_perplexity`), wall seconds and the corpus description.

    Raises:
        FileExistsError: ``directory`` exists and is not empty (a model is never overwritten).
        ValueError: a size that is not a positive integer, or n_embd not divisible by n_head.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    max_steps = MAX_STEPS if max_steps is None else max_steps
    n_layer = LAYERS if n_layer is None else n_layer
    n_embd = WIDTH if n_embd is None else n_embd
    n_head = HEADS if n_head is None else n_head
    vocab_size = VOCAB_SIZE if vocab_size is None else vocab_size
    batch_size = BATCH_SIZE if batch_size is None else batch_size
    sizes = {"max_steps": max_steps, "n_layer": n_layer, "n_embd": n_embd, "n_head": n_head,
             "vocab_size": vocab_size, "batch_size": batch_size}
    for name, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"pretrain_tiny_lm: {name}={value!r} is not allowed: expected a positive integer")
    if n_embd % n_head:
        raise ValueError(f"pretrain_tiny_lm: n_embd={n_embd} is not divisible by n_head={n_head}")
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} exists and is not empty: not overwriting it")
    log = log or (lambda line: None)

    started = time.perf_counter()
    sentences = corpus_sentences()
    train, _, heldout = split_sentences(sentences)
    tokenizer = train_tokenizer(train, vocab_size)
    token_ids = tokenizer(train, add_special_tokens=False, verbose=False)["input_ids"]
    eos = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=POSITIONS, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eos,
                        eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    warmup = min(WARMUP_STEPS, max(max_steps // 10, 1))
    losses: list[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
        generator = torch.Generator().manual_seed(seed)
        decays = {name: p.dim() >= 2 and not name.startswith(("transformer.wte", "transformer.wpe"))
                  for name, p in model.named_parameters()}  # matrices decay; biases, norms, embeddings do not
        decay = [p for name, p in model.named_parameters() if decays[name]]
        no_decay = [p for name, p in model.named_parameters() if not decays[name]]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=LEARNING_RATE, betas=ADAM_BETAS)
        model.train()
        blocks, cursor = _epoch_blocks(token_ids, eos, POSITIONS, generator), 0
        for step in range(max_steps):
            if cursor + batch_size > len(blocks):
                blocks, cursor = _epoch_blocks(token_ids, eos, POSITIONS, generator), 0
            batch = blocks[cursor:cursor + batch_size]
            cursor += batch_size
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(step, max_steps, LEARNING_RATE, warmup)
            logits = model(input_ids=batch).logits[:, :-1]  # next-token cross-entropy, nats per token
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            losses.append(loss.item())
            if (step + 1) % LOG_INTERVAL == 0 or step + 1 == max_steps:
                window = losses[-LOG_INTERVAL:]
                log(f"tiny-lm step {step + 1}/{max_steps}  loss {sum(window) / len(window):.3f}  "
                    f"{time.perf_counter() - started:.0f}s")
        train_ppl = sentence_perplexity(model, tokenizer, train)
        heldout_ppl = sentence_perplexity(model, tokenizer, heldout) if heldout else float("nan")
    window = losses[-max(1, min(FINAL_LOSS_WINDOW, max_steps // 10)):]
    info = {"name": TINY_LM_NAME, "version": VERSION, "seed": seed,
            "architecture": {"model": "GPT2LMHeadModel", "n_layer": n_layer, "n_embd": n_embd, "n_head": n_head,
                             "n_positions": POSITIONS, "vocab_size": config.vocab_size, "dropout": 0.0,
                             "parameters": sum(p.numel() for p in model.parameters())},
            "training": {"steps": max_steps, "batch_size": batch_size, "block_tokens": POSITIONS,
                         "tokens_seen": max_steps * batch_size * POSITIONS,
                         "train_tokens_per_epoch": sum(len(ids) + 1 for ids in token_ids),
                         "learning_rate": LEARNING_RATE, "warmup_steps": warmup, "min_lr_ratio": MIN_LR_RATIO,
                         "weight_decay": WEIGHT_DECAY, "adam_betas": list(ADAM_BETAS), "max_grad_norm": MAX_GRAD_NORM,
                         "torch_threads": torch.get_num_threads()},
            "first_train_loss": losses[0], "final_train_loss": sum(window) / len(window),
            "train_perplexity": train_ppl, "heldout_perplexity": heldout_ppl,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "corpus": _corpus_description(sentences, train, heldout)}
    _save_atomically(directory, model, tokenizer, info)
    log(f"tiny-lm saved to {directory}: final train loss {info['final_train_loss']:.3f}, held-out perplexity "
        f"{heldout_ppl:.1f}, {info['wall_seconds']:.0f}s")
    return directory


def _save_atomically(directory: Path, model, tokenizer, info: dict) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = directory.parent / f".{directory.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        (temporary / "pretraining.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if directory.exists():  # empty, checked above; os.replace only replaces an empty directory
            directory.rmdir()
        os.replace(temporary, directory)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)


def rlrun_cache_dir() -> Path:
    """rlrun's cache directory: the environment variable RLRUN_CACHE, else ``~/.cache/rlrun`` (not created)."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/rlrun").expanduser()


def tiny_lm_path(cache_dir: str | Path | None = None) -> Path:
    """The directory of ``rlrun-tiny-gpt2``, pretrained there on first use and reused after.

    The directory is ``<cache>/tiny-gpt2-v<VERSION>`` where ``<cache>`` is ``cache_dir``, else the environment
    variable RLRUN_CACHE, else ``~/.cache/rlrun``. When it holds no ``pretraining.json`` yet, one line is
    printed and :func:`pretrain_tiny_lm` builds it at the module's defaults with seed 0 (about 20 minutes on 2
    CPU cores). Safe when several processes ask at once: a file lock (``filelock``, which torch depends on) on
    ``<cache>/tiny-gpt2-v<VERSION>.lock`` lets one build while the others wait and then reuse its result.

    Returns:
        the model directory, loadable with ``AutoModelForCausalLM.from_pretrained`` and
        ``AutoTokenizer.from_pretrained``.
    """
    from filelock import FileLock

    cache = Path(cache_dir).expanduser() if cache_dir is not None else rlrun_cache_dir()
    directory = cache / f"tiny-gpt2-v{VERSION}"
    if (directory / "pretraining.json").is_file():
        return directory
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f"tiny-gpt2-v{VERSION}.lock")):
        if not (directory / "pretraining.json").is_file():
            if directory.exists():  # left by an older layout or a crash outside the atomic rename
                shutil.rmtree(directory)
            print(f"rlrun: pretraining {TINY_LM_NAME} once into {directory} (about {EXPECTED_MINUTES} minutes on "
                  "2 CPU cores; reused after)", flush=True)
            pretrain_tiny_lm(directory, seed=0, log=None)
    return directory


# ---- the sentiment task ------------------------------------------------------------------------------

def _write_jsonl(path: Path, records: list[dict]) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open(temporary, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    os.replace(temporary, path)


def write_sentiment_task(directory: str | Path, num_prompt_words: int = 4, seed: int = 0) -> dict[str, Path]:
    """Write the prompts and demonstrations of the sentiment task on the corpus as JSONL files.

    Every sentence is cut after its first ``num_prompt_words`` words: the prompt is those words (single-spaced,
    no trailing space) and the response is ``" " + the rest``, so ``prompt + response`` is the sentence and a
    byte-level BPE tokenizes the response's first word as it would inside the sentence. The task is then to
    continue a prompt with a response that a scorer (e.g. VADER, :mod:`rlrun.rlhf.scorers`) likes.

    Args:
        directory: created if needed; each file is written atomically (temporary file, then rename).
        num_prompt_words: words per prompt, from 1 to MIN_WORDS - 1 (so every response is non-empty).
        seed: seed of the order of the lines (each file shuffled with ``random.Random(seed)``).

    Returns:
        {"demonstrations": ``demonstrations.jsonl`` ({"prompt", "response"} per training sentence),
        "prompts": ``prompts.jsonl`` ({"prompt"} per training sentence), "prompts_heldout":
        ``prompts_heldout.jsonl`` ({"prompt"} per held-out sentence)}. Deterministic for a seed.

    Raises:
        ValueError: num_prompt_words outside 1..MIN_WORDS - 1.
    """
    if not isinstance(num_prompt_words, int) or not 1 <= num_prompt_words <= MIN_WORDS - 1:
        raise ValueError(f"write_sentiment_task: num_prompt_words={num_prompt_words!r} is not allowed: expected an "
                         f"integer from 1 to {MIN_WORDS - 1}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _, task, heldout = split_sentences(corpus_sentences())
    rng = random.Random(seed)

    def cut(sentences: list[str]) -> list[tuple[str, str]]:
        pairs = []
        for sentence in sentences:
            words = sentence.split(" ")  # the corpus is single-spaced
            pairs.append((" ".join(words[:num_prompt_words]), " " + " ".join(words[num_prompt_words:])))
        rng.shuffle(pairs)
        return pairs

    demonstrations = cut(task)
    prompts = cut(task)
    heldout_prompts = cut(heldout)
    paths = {"demonstrations": directory / "demonstrations.jsonl", "prompts": directory / "prompts.jsonl",
             "prompts_heldout": directory / "prompts_heldout.jsonl"}
    _write_jsonl(paths["demonstrations"], [{"prompt": p, "response": r} for p, r in demonstrations])
    _write_jsonl(paths["prompts"], [{"prompt": p} for p, _ in prompts])
    _write_jsonl(paths["prompts_heldout"], [{"prompt": p} for p, _ in heldout_prompts])
    return paths
