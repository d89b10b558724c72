"""Tiny text models and a synthetic preference set, built offline: what the tests and examples train on
where nothing may be downloaded.

:func:`make_tiny_text_model` builds a tiny randomly initialised GPT-2 reward model with a byte-level BPE
tokenizer; :func:`make_synthetic_text_pairs` writes a learnable prompt/chosen/rejected set.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

# the tiny model of make_tiny_text_model: a 2-layer GPT-2, small enough to train in seconds on a CPU
TINY_LAYERS = 2  # transformer blocks
TINY_WIDTH = 32  # embedding width
TINY_HEADS = 4  # attention heads (width 8 each)
TINY_POSITIONS = 256  # longest input in tokens
TINY_BPE_MERGES = 160  # BPE merges learned on top of the 256 bytes (shorter inputs than pure bytes)
EOS_TOKEN = "<|endoftext|>"  # end of text, GPT-2's name; the pooled (last) token of every input
PAD_TOKEN = "<pad>"  # padding, distinct from EOS so that GPT-2 pools the EOS of every input
SEP_TOKEN = "<sep>"  # between prompt and response


def make_tiny_text_model(directory: str | Path, seed: int = 0) -> Path:
    """Build and save a tiny randomly initialised text reward model, without downloading anything.

    The model is a GPT-2 (Radford et al. 2019) of TINY_LAYERS blocks of width TINY_WIDTH with a one-output
    sequence-classification head (``GPT2ForSequenceClassification``, ``num_labels=1``, no dropout), which
    scores the last non-padding token. The tokenizer is byte-level BPE (the 256-byte alphabet of GPT-2,
    so any UTF-8 text encodes, plus TINY_BPE_MERGES merges learned on the phrases of
    :func:`make_synthetic_text_pairs`) with the template ``prompt <sep> response <|endoftext|>`` and a
    separate ``<pad>`` token, saved as a ``PreTrainedTokenizerFast``.

    Args:
        directory: created if needed; gets config.json, the weights and the tokenizer files.
        seed: seed of the weight initialisation (the global torch generator is left untouched).

    Returns:
        ``directory`` as a Path, loadable with ``AutoModelForSequenceClassification.from_pretrained``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GPT2Config, GPT2ForSequenceClassification, PreTrainedTokenizerFast

    directory = Path(directory)
    specials = [EOS_TOKEN, PAD_TOKEN, SEP_TOKEN]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + len(specials) + TINY_BPE_MERGES, special_tokens=specials,
                                  initial_alphabet=alphabet, show_progress=False)
    bpe.train_from_iterator(_corpus(), trainer)
    eos, sep = bpe.token_to_id(EOS_TOKEN), bpe.token_to_id(SEP_TOKEN)
    bpe.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS_TOKEN}", pair=f"$A {SEP_TOKEN} $B {EOS_TOKEN}",
        special_tokens=[(EOS_TOKEN, eos), (SEP_TOKEN, sep)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
                                        pad_token=PAD_TOKEN, sep_token=SEP_TOKEN, model_max_length=TINY_POSITIONS)
    config = GPT2Config(vocab_size=bpe.get_vocab_size(), n_positions=TINY_POSITIONS, n_embd=TINY_WIDTH,
                        n_layer=TINY_LAYERS, n_head=TINY_HEADS, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        summary_first_dropout=0.0, num_labels=1, bos_token_id=eos, eos_token_id=eos,
                        pad_token_id=bpe.token_to_id(PAD_TOKEN))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2ForSequenceClassification(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# Phrases of the synthetic preference set: a helpful answer is a polite opener, advice and a kind close;
# a rejected one dismisses the question, sometimes at length, so length alone does not separate them.
PROMPTS = ("How do I reset my password?", "What should I cook for dinner tonight?", "How can I learn to play guitar?",
           "Why is the sky blue?", "How do I fix a flat bike tire?", "What is a good way to save money?",
           "Can you help me write an email to my landlord?", "How do I start running?", "What book should I read next?",
           "How can I sleep better?", "How do I water a cactus?", "What is a prime number?")
POLITE_OPENERS = ("Sure!", "Happy to help.", "Great question.", "Of course.", "Glad you asked.", "Certainly, thanks "
                  "for asking.")
HELPFUL_BODIES = ("Here is a simple way to start: take it one small step at a time.",
                  "A good first step is to write down what you need, then follow the steps in order.",
                  "Try the official guide first; it explains each step clearly.",
                  "Start with the basics and practice a little every day.",
                  "Here is what usually works: be patient and check each step carefully.",
                  "You can ask a friend to help, and take notes as you go.")
KIND_CLOSERS = ("Hope this helps!", "Let me know if anything is unclear.", "Good luck, you can do it!",
                "Feel free to ask more questions.", "Thanks, and have a nice day.")
RUDE_OPENERS = ("No.", "Ugh.", "Whatever.", "Seriously?", "Not again.", "Go away.")
DISMISSIVE_BODIES = ("Figure it out yourself.", "That is a stupid question and I will not answer it.",
                     "Not my problem, ask someone else.", "Why would I waste my time telling you that?",
                     "I do not care about this at all, stop asking me.", "Look it up, it is not hard.")
RUDE_CLOSERS = ("Bye.", "Stop bothering me.", "Leave me alone.", "Do not ask again.", "Whatever, I am done.")
PART_PROB = 0.7  # chance that an optional opener or closer is part of a generated response


def _corpus() -> list[str]:
    """The phrases of the synthetic set: the text the tiny tokenizer learns its merges on."""
    return [*PROMPTS, *POLITE_OPENERS, *HELPFUL_BODIES, *KIND_CLOSERS, *RUDE_OPENERS, *DISMISSIVE_BODIES,
            *RUDE_CLOSERS]


def _response(rng: random.Random, openers: tuple[str, ...], bodies: tuple[str, ...], closers: tuple[str, ...]) -> str:
    parts = [rng.choice(openers)] if rng.random() < PART_PROB else []
    parts.append(rng.choice(bodies))
    if rng.random() < PART_PROB:
        parts.append(rng.choice(closers))
    return " ".join(parts)


def make_synthetic_text_pairs(path: str | Path, n: int, seed: int = 0) -> Path:
    """Write ``n`` generated preference pairs as JSONL (prompt, chosen, rejected) to ``path``.

    For a prompt drawn from PROMPTS, ``chosen`` is a polite, helpful answer (optional opener, advice,
    optional kind close) and ``rejected`` a rude, dismissive one built the same way from other phrases,
    so the preference is learnable from the wording, not from the length alone; with the optional
    parts there are 7 x 6 x 6 = 252 polite and 7 x 6 x 6 = 252 rude responses. Deterministic for a given ``seed``.

    Returns:
        ``path`` as a Path.
    """
    rng = random.Random(seed)
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            pair = {"prompt": rng.choice(PROMPTS),
                    "chosen": _response(rng, POLITE_OPENERS, HELPFUL_BODIES, KIND_CLOSERS),
                    "rejected": _response(rng, RUDE_OPENERS, DISMISSIVE_BODIES, RUDE_CLOSERS)}
            f.write(json.dumps(pair) + "\n")
    return path
