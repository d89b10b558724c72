"""rlrun.rlhf.tiny_lm (the corpus, split, tokenizer, pretraining, cache and sentiment task) and rlrun.rlhf.scorers."""

from __future__ import annotations

import json
import math
import sys
import threading
import time

import numpy as np
import pytest
import torch

from rlrun.core.config import ConfigError
from rlrun.rlhf import scorers, tiny_lm
from rlrun.rlhf.scorers import SCORERS, get_scorer, scorer_labels

SMALL = dict(max_steps=20, n_layer=1, n_embd=32, n_head=2, vocab_size=300)  # a build of seconds
TINY_VOCAB = 300  # tokenizer tests: 256 bytes, 2 specials and 42 merges


@pytest.fixture(scope="module")
def corpus():
    sentences = tiny_lm.corpus_sentences()
    return sentences, *tiny_lm.split_sentences(sentences)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A 1-block model pretrained for 20 steps, with the log lines and the caller's torch RNG state around it."""
    lines: list[str] = []
    rng_before = torch.random.get_rng_state()
    directory = tiny_lm.pretrain_tiny_lm(tmp_path_factory.mktemp("lm") / "model", seed=0, log=lines.append, **SMALL)
    return directory, lines, rng_before, torch.random.get_rng_state()


# ---- corpus and split --------------------------------------------------------------------------------

def test_prose_drops_code_blocks_sessions_grammar_and_tables():
    text = ("Title\n*****\n\nThe first sentence is prose. It goes on here.\n\nFor example:\n\n"
            "   x = compute(1, 2)\n\n      nested_code()\n\n   >>> print(x)\n   3\n\n"
            "Back to prose after the code block.\n\nNote:\n\n  Notes are indented but they are prose too.\n\n"
            "   stmt ::= \"if\" expr\n\n+------+------+\n| a    | b    |\n+------+------+\n\n"
            "* A bullet item that is prose.\n* A second item.\n")
    assert tiny_lm._prose(text) == ["Title", "The first sentence is prose. It goes on here.", "For example:",
                                    "Back to prose after the code block.", "Note:",
                                    "Notes are indented but they are prose too.", "A bullet item that is prose.",
                                    "A second item."]


def test_corpus_is_english_sentences_without_code(corpus):
    sentences, _, _, _ = corpus
    words = [len(s.split()) for s in sentences]
    assert len(sentences) > 8000 and sum(words) > 100_000  # about 12,000 and 170,000 with CPython 3.11
    assert min(words) >= tiny_lm.MIN_WORDS and max(words) <= tiny_lm.MAX_WORDS
    assert len(set(sentences)) == len(sentences)
    for sentence in sentences:
        assert ">>>" not in sentence and "::=" not in sentence and "  " not in sentence and "\n" not in sentence
        assert sentence[0].isupper() and sentence[-1] in ".!?"
        assert sum(ch in tiny_lm._BASIC for ch in sentence) >= 0.98 * len(sentence)  # letters, digits, .,;:!?'"()-
    assert not [s for s in sentences if "_" in s]  # identifiers (snake_case names) are code, not English
    assert tiny_lm.corpus_sentences() == sentences  # deterministic


def test_split_is_disjoint_stable_and_independent_of_order(corpus):
    sentences, train, task, heldout = corpus
    assert not set(train) & set(heldout) and not set(train) & set(task) and not set(task) & set(heldout)
    assert set(train) | set(task) | set(heldout) == set(sentences)
    assert 0.05 < len(heldout) / len(sentences) < 0.15 and 0.1 < len(task) / len(sentences) < 0.2
    assert train == [s for s in sentences if s in set(train)]  # order kept
    reversed_train, reversed_task, reversed_heldout = tiny_lm.split_sentences(sentences[::-1])
    assert reversed_train == train[::-1] and reversed_heldout == heldout[::-1] and reversed_task == task[::-1]
    # by SHA-256 of the text, not Python's hash: these are held out under every PYTHONHASHSEED
    probe = [f"Sentence number {i} is here." for i in range(30)]
    assert tiny_lm.split_sentences(probe)[2] == ["Sentence number 11 is here.", "Sentence number 28 is here."]


# ---- tokenizer ---------------------------------------------------------------------------------------

def test_tokenizer_round_trips_and_puts_bos_before_a_text(corpus, tmp_path):
    from transformers import AutoTokenizer

    _, train, _, heldout = corpus
    tokenizer = tiny_lm.train_tokenizer(train, TINY_VOCAB)
    assert len(tokenizer) == TINY_VOCAB
    assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>" and tokenizer.pad_token == "<pad>"
    assert tokenizer.eos_token_id != tokenizer.pad_token_id and tokenizer.padding_side == "right"
    specials = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    for text in [*heldout[:20], "Hello, w\u00f6rld! \U0001F600", " leading space"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert not specials & set(ids)
        assert tokenizer.decode(ids) == text
        assert tokenizer(text)["input_ids"] == [tokenizer.bos_token_id, *ids]  # as pretraining's eos before a text
    # prompt and " response" tokenized apart concatenate to a valid encoding of the sentence
    prompt, response = "The default behavior", " is to return the object."
    joined = tokenizer(prompt)["input_ids"] + tokenizer(response, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(joined, skip_special_tokens=True) == prompt + response
    assert tokenizer(prompt, response)["input_ids"] == joined  # the pair a reward model reads
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(heldout[0])["input_ids"] == tokenizer(heldout[0])["input_ids"]
    assert (loaded.eos_token_id, loaded.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)


# ---- pretraining -------------------------------------------------------------------------------------

def test_small_pretraining_lowers_the_loss_and_saves_a_loadable_model(small_model, corpus):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, lines, rng_before, rng_after = small_model
    assert torch.equal(rng_before, rng_after)  # the caller's torch RNG is untouched
    info = json.loads((directory / "pretraining.json").read_text())
    assert abs(info["first_train_loss"] - math.log(SMALL["vocab_size"])) < 0.5  # a fresh model is near uniform
    assert info["final_train_loss"] < info["first_train_loss"] - 0.5
    assert info["training"]["steps"] == 20
    assert info["training"]["tokens_seen"] == 20 * tiny_lm.BATCH_SIZE * tiny_lm.POSITIONS
    assert info["architecture"]["n_layer"] == 1 and info["architecture"]["n_embd"] == 32
    assert 1 < info["heldout_perplexity"] < SMALL["vocab_size"] * 2
    assert info["corpus"]["train_sentences"] == len(corpus[1]) and info["corpus"]["heldout_sentences"] == len(corpus[3])
    assert lines[-1].startswith("tiny-lm saved to") and "step 20/20" in lines[-2]
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind

    model = AutoModelForCausalLM.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert model.config.n_layer == 1 and model.config.n_embd == 32 and model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.eos_token_id and model.config.pad_token_id == tokenizer.pad_token_id
    assert sum(p.numel() for p in model.parameters()) == info["architecture"]["parameters"]
    ppl = tiny_lm.sentence_perplexity(model, tokenizer, corpus[3])
    assert ppl == pytest.approx(info["heldout_perplexity"], rel=1e-4)


def test_pretraining_is_deterministic_and_never_overwrites(small_model, tmp_path):
    from safetensors.torch import load_file

    directory, _, _, _ = small_model
    again = tiny_lm.pretrain_tiny_lm(tmp_path / "again", seed=0, log=None, **SMALL)
    first, second = load_file(directory / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    with pytest.raises(FileExistsError, match="not empty"):
        tiny_lm.pretrain_tiny_lm(again, seed=0, log=None, **SMALL)
    with pytest.raises(ValueError, match="n_embd=30 is not divisible by n_head=4"):
        tiny_lm.pretrain_tiny_lm(tmp_path / "bad", n_embd=30, n_head=4, log=None)
    with pytest.raises(ValueError, match="max_steps=0"):
        tiny_lm.pretrain_tiny_lm(tmp_path / "bad", max_steps=0, log=None)


# ---- the cache ---------------------------------------------------------------------------------------

def _fake_builder(calls: list[str], delay: float = 0.0):
    def build(directory, seed=0, log=print, **sizes):
        calls.append(str(directory))
        time.sleep(delay)
        directory.mkdir(parents=True)
        (directory / "pretraining.json").write_text("{}")
        return directory
    return build


def test_tiny_lm_path_builds_once_then_reuses(monkeypatch, tmp_path, capsys):
    calls: list[str] = []
    real = tiny_lm.pretrain_tiny_lm

    def small_build(directory, seed=0, log=print):
        calls.append(str(directory))
        return real(directory, seed=seed, log=log, **SMALL)

    monkeypatch.setattr(tiny_lm, "pretrain_tiny_lm", small_build)
    path = tiny_lm.tiny_lm_path(tmp_path)
    assert path == tmp_path / f"tiny-gpt2-v{tiny_lm.VERSION}" and calls == [str(path)]
    assert (path / "config.json").is_file() and (path / "pretraining.json").is_file()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "pretraining rlrun-tiny-gpt2" in out[0]
    assert tiny_lm.tiny_lm_path(tmp_path) == path and len(calls) == 1  # reused, silently
    assert capsys.readouterr().out == ""


def test_tiny_lm_path_reads_the_cache_variable_and_builds_once_under_concurrency(monkeypatch, tmp_path):
    calls: list[str] = []
    monkeypatch.setattr(tiny_lm, "pretrain_tiny_lm", _fake_builder(calls, delay=0.3))
    monkeypatch.setenv(tiny_lm.CACHE_ENV, str(tmp_path / "env"))
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(tiny_lm.tiny_lm_path())) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [tmp_path / "env" / f"tiny-gpt2-v{tiny_lm.VERSION}"] * 3 and len(calls) == 1
    monkeypatch.delenv(tiny_lm.CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tiny_lm.tiny_lm_path() == tmp_path / "home" / ".cache" / "rlrun" / f"tiny-gpt2-v{tiny_lm.VERSION}"


# ---- the sentiment task ------------------------------------------------------------------------------

def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_write_sentiment_task_cuts_corpus_sentences(corpus, tmp_path):
    _, _, task, heldout = corpus
    paths = tiny_lm.write_sentiment_task(tmp_path / "task", num_prompt_words=4, seed=0)
    assert set(paths) == {"demonstrations", "prompts", "prompts_heldout"}
    demonstrations, prompts, heldout_prompts = (_read(paths[k]) for k in ("demonstrations", "prompts",
                                                                          "prompts_heldout"))
    assert len(demonstrations) == len(prompts) == len(task) and len(heldout_prompts) == len(heldout)
    assert sorted(d["prompt"] + d["response"] for d in demonstrations) == sorted(task)
    for record in demonstrations:
        assert set(record) == {"prompt", "response"}
        assert len(record["prompt"].split(" ")) == 4 and record["response"].startswith(" ")
        assert not record["response"].startswith("  ")
    assert sorted(p["prompt"] for p in prompts) == sorted(d["prompt"] for d in demonstrations)
    assert sorted(p["prompt"] for p in heldout_prompts) == sorted(" ".join(s.split()[:4]) for s in heldout)
    again = tiny_lm.write_sentiment_task(tmp_path / "again", num_prompt_words=4, seed=0)
    assert all(paths[k].read_bytes() == again[k].read_bytes() for k in paths)  # deterministic
    other = tiny_lm.write_sentiment_task(tmp_path / "other", num_prompt_words=4, seed=1)
    assert paths["prompts"].read_bytes() != other["prompts"].read_bytes()  # the seed orders the lines
    with pytest.raises(ValueError, match="num_prompt_words=6"):
        tiny_lm.write_sentiment_task(tmp_path / "bad", num_prompt_words=6)


# ---- scorers -----------------------------------------------------------------------------------------

# valences of vaderSentiment 3.3.2's vader_lexicon.txt; VADER's compound is x / sqrt(x**2 + 15), rounded to 4 places
GOOD_VALENCE, BAD_VALENCE = 1.9, -2.5


def test_vader_scores_single_words_by_the_lexicon_and_neutral_text_zero():
    score = get_scorer("vader")
    scores = score(["Say something.", "", "Anything"], ["good", "bad", "The table is made of wood."])
    assert scores.dtype == np.float64 and scores.shape == (3,)
    good = GOOD_VALENCE / math.sqrt(GOOD_VALENCE ** 2 + 15)  # 0.44044
    bad = BAD_VALENCE / math.sqrt(BAD_VALENCE ** 2 + 15)  # -0.54233
    np.testing.assert_allclose(scores, [good, bad, 0.0], atol=5e-5)
    assert score(["other prompt"], ["good"])[0] == scores[0]  # the prompt is ignored
    assert list(SCORERS) == ["vader"]


def test_unknown_scorer_and_missing_package_raise_config_errors(monkeypatch):
    with pytest.raises(ConfigError, match=r"algo\.scorer='vadr' is not allowed: expected one of vader"):
        get_scorer("vadr", key="algo.scorer")
    monkeypatch.setattr(scorers, "_analyzer", None)
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)  # import fails
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[text\]"'):
        get_scorer("vader")


def test_scorer_labels_deterministic_and_bradley_terry():
    labels = scorer_labels(np.array([1.0, 2.0, 3.0, 3.0]), np.array([0.0, 5.0, 3.0, -1.0]))
    assert labels.dtype == np.float64
    np.testing.assert_array_equal(labels, [1.0, 0.0, 0.5, 1.0])

    n, temperature = 20000, 0.5
    a, b = np.full(n, 0.5), np.zeros(n)
    sampled = scorer_labels(a, b, rng=np.random.default_rng(0), temperature=temperature)
    assert set(np.unique(sampled)) <= {0.0, 1.0}
    assert abs(sampled.mean() - 1 / (1 + math.exp(-1.0))) < 0.02  # sigmoid(0.5 / 0.5) = 0.731
    repeat = scorer_labels(a, b, rng=np.random.default_rng(0), temperature=temperature)
    np.testing.assert_array_equal(sampled, repeat)
    np.testing.assert_array_equal(scorer_labels([1.0], [1.0], rng=np.random.default_rng(0), temperature=1.0), [0.5])
    with pytest.raises(ValueError, match="rng"):
        scorer_labels(a, b, temperature=1.0)
    with pytest.raises(ValueError, match="shapes"):
        scorer_labels([1.0, 2.0], [1.0])
