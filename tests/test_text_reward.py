"""The text reward model (rlrun.rlhf.text_reward): pairs files, validation, training, resume and what is written."""

from __future__ import annotations

import json
import math
import re
import shutil
import signal

import pytest
import torch

from rlrun.cli.train import run_training
from rlrun.core.checkpoint import latest_checkpoint
from rlrun.core.config import ConfigError
from rlrun.core.events import read_scalars
from rlrun.core.run import Run, seed_everything
from rlrun.rlhf.preference_data import TextPair, load_text_pairs
from rlrun.rlhf.text_reward import REWARD_DIR, STATS_FILE, encode_pairs, score_all, split_pairs, train_text, validate_text
from rlrun.rlhf.tiny_text import PAD_TOKEN, SEP_TOKEN, make_synthetic_text_pairs, make_tiny_text_model

LEARN_PAIRS = 120  # generated pairs of the learning test; half are held out
LEARN_MIN_ACCURACY = 0.75  # measured 1.0 after 2 epochs (seeds 0-3); chance reaches 45/60 with p < 1e-4
SCALAR_TAGS = ("losses/preference_loss", "charts/train_accuracy", "charts/holdout_accuracy", "charts/holdout_loss",
               "charts/margin")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_text_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture
def text_cfg(make_cfg, tiny_model, tmp_path):
    """text_cfg(pairs_path, *overrides) -> a composed algo=reward_model algo.data=text config."""

    def compose(pairs_path, *overrides):
        return make_cfg("algo=reward_model", "env=cartpole", "algo.data=text", f"algo.text.pairs_path={pairs_path}",
                        f"algo.text.model={tiny_model}", "device=cpu", "seed=0", *overrides)

    return compose


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pair_line(prompt="Hi?", chosen="Hello, glad to help.", rejected="Go away."):
    return json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected})


# ---- the pairs file --------------------------------------------------------------------------------

def test_good_pairs_file_loads_every_line(tmp_path):
    extra = {"prompt": "", "chosen": "Ça va 🙂", "rejected": "no", "source": "extra keys are ignored"}
    path = write_lines(tmp_path / "pairs.jsonl", [pair_line(), "", json.dumps(extra)])
    assert load_text_pairs(path) == [TextPair("Hi?", "Hello, glad to help.", "Go away."),
                                     TextPair("", "Ça va 🙂", "no")]


@pytest.mark.parametrize("line, expected", [
    (pair_line(chosen="   "), "line 2: chosen is empty: expected a non-empty response"),
    (pair_line(rejected=""), "line 2: rejected is empty: expected a non-empty response"),
    (json.dumps({"prompt": "Hi?", "chosen": "Hello."}),
     "line 2 has no key 'rejected': expected keys prompt, chosen, rejected"),
    ('{"prompt": "Hi?", "chosen": "Hello.", ', "line 2 is not valid JSON"),
    (json.dumps({"prompt": "Hi?", "chosen": 3, "rejected": "No."}), "line 2: chosen=3 is not a string"),
    (json.dumps({"prompt": None, "chosen": "Yes.", "rejected": "No."}), "line 2: prompt=None is not a string"),
    ('["Hi?", "Hello.", "No."]', "line 2 is not a JSON object"),
])
def test_bad_pairs_file_names_the_line(tmp_path, line, expected):
    path = write_lines(tmp_path / "pairs.jsonl", [pair_line(), line, pair_line()])
    with pytest.raises(ConfigError) as error:
        load_text_pairs(path)
    assert str(error.value).startswith(f"{path} {expected}"), str(error.value)


def test_synthetic_pairs_are_deterministic_and_valid(tmp_path):
    first = load_text_pairs(make_synthetic_text_pairs(tmp_path / "a.jsonl", 50, seed=3))
    assert first == load_text_pairs(make_synthetic_text_pairs(tmp_path / "b.jsonl", 50, seed=3))
    assert first != load_text_pairs(make_synthetic_text_pairs(tmp_path / "c.jsonl", 50, seed=4))
    assert len(first) == 50 and all(p.chosen != p.rejected for p in first)
    assert len({p.chosen for p in first}) > 25  # varied wording, not one template


def test_split_holds_out_the_fraction_and_partitions():
    train, holdout = split_pairs(10, 0.3, seed=5)
    assert len(holdout) == 3 and sorted([*train, *holdout]) == list(range(10))
    assert (train == split_pairs(10, 0.3, seed=5)[0]).all()
    assert [len(s) for s in split_pairs(2, 0.01, seed=0)] == [1, 1]  # at least one pair on each side
    assert [len(s) for s in split_pairs(2, 0.99, seed=0)] == [1, 1]


# ---- the tiny model ------------------------------------------------------------------------------

def test_tiny_tokenizer_is_byte_level_with_pair_template(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    text = "Grüße, naïve café 🙂 \t tabs"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text  # any UTF-8 text
    ids = tokenizer("How?", "Sure.")["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.convert_tokens_to_ids(SEP_TOKEN) in ids
    assert tokenizer.pad_token == PAD_TOKEN and tokenizer.pad_token_id != tokenizer.eos_token_id
    chosen, _ = encode_pairs(tokenizer, [TextPair("x" * 500, "y" * 500, "z")], max_length=20)
    assert len(chosen[0]) == 20 and chosen[0][-1] == tokenizer.eos_token_id  # truncated, template kept


def test_tiny_model_depends_on_seed_only(tmp_path, tiny_model):
    from transformers import AutoModelForSequenceClassification

    def weights(path):
        return AutoModelForSequenceClassification.from_pretrained(path).state_dict()

    state = torch.get_rng_state()
    again = weights(make_tiny_text_model(tmp_path / "a", seed=0))
    other = weights(make_tiny_text_model(tmp_path / "b", seed=1))
    assert torch.equal(state, torch.get_rng_state())  # the global generator is untouched
    reference = weights(tiny_model)
    assert all(torch.equal(reference[k], again[k]) for k in reference)
    assert not torch.equal(reference["score.weight"], other["score.weight"])


# ---- validation -----------------------------------------------------------------------------------

def two_label_model(tiny_model, directory):
    """A copy of the tiny model whose config.json declares two outputs (a classifier, not a reward model)."""
    shutil.copytree(tiny_model, directory)
    config = json.loads((directory / "config.json").read_text())
    config.update(id2label={"0": "bad", "1": "good"}, label2id={"bad": 0, "good": 1})
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("change, expected", [
    ({"algo.text.pairs_path": "null"}, "algo.text.pairs_path=None is not allowed: expected a pairs file, or a "
     "rankings file, or env.scorer set to label pairs sampled from the model"),
    ({"algo.text.pairs_path": "missing.jsonl"},
     "algo.text.pairs_path='missing.jsonl' is not allowed: expected an existing JSONL file"),
    ({"algo.text.max_length": "4"}, "algo.text.max_length=4 is not allowed: expected an integer >= 8"),
    ({"algo.text.max_length": "1000"}, "algo.text.max_length=1000 is not allowed: expected at most 256"),
    ({"algo.text.model": "null"}, "algo.text.model=None is not allowed: expected a model directory"),
    ({"algo.text.model": "./no/such/model"}, "algo.text.model='./no/such/model': no such directory"),
    ({"algo.text.model": "EMPTY_DIR"},
     "algo.text.model='EMPTY_DIR': the directory has neither config.json nor model/config.json"),
    ({"algo.text.model": "TWO_LABELS"},
     "algo.text.model='TWO_LABELS' has num_labels=2: expected a sequence-classification model with one output"),
])
def test_validate_text_refuses_bad_values(tmp_path, text_cfg, tiny_model, change, expected):
    pairs = make_synthetic_text_pairs(tmp_path / "pairs.jsonl", 4, seed=0)
    (tmp_path / "empty").mkdir()
    paths = {"EMPTY_DIR": str(tmp_path / "empty"), "TWO_LABELS": str(two_label_model(tiny_model, tmp_path / "two"))}
    cfg = text_cfg(pairs, *[f"{k}={paths.get(v, v)}" for k, v in change.items()])
    for placeholder, path in paths.items():
        expected = expected.replace(placeholder, path)
    with pytest.raises(ConfigError, match="^" + re.escape(expected)):
        validate_text(cfg)


def test_validate_text_accepts_good_config_and_refuses_one_pair(tmp_path, text_cfg):
    validate_text(text_cfg(make_synthetic_text_pairs(tmp_path / "pairs.jsonl", 2, seed=0)))
    one = make_synthetic_text_pairs(tmp_path / "one.jsonl", 1, seed=0)
    with pytest.raises(ConfigError, match="is not allowed: expected a file of at least 2 records"):
        validate_text(text_cfg(one))
    bad = write_lines(tmp_path / "bad.jsonl", [pair_line(), pair_line(rejected=" ")])
    with pytest.raises(ConfigError, match="bad.jsonl line 2: rejected is empty"):
        validate_text(text_cfg(bad))


def test_uncached_model_name_is_one_config_error(tmp_path, text_cfg, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as without network, but at once
    cfg = text_cfg(make_synthetic_text_pairs(tmp_path / "pairs.jsonl", 4, seed=0),
                   "algo.text.model=rlrun-tests/no-such-model")
    with pytest.raises(ConfigError, match=r"^algo.text.model='rlrun-tests/no-such-model' cannot be loaded \(OSError"):
        validate_text(cfg)


def test_cached_model_name_loads_without_network(tmp_path, text_cfg, tiny_model, monkeypatch):
    import huggingface_hub.constants

    from rlrun.rlhf.text_reward import load_text_model

    # the Hugging Face cache layout: models--<org>--<name>/snapshots/<commit>/ and refs/main naming the commit
    repo = tmp_path / "hub" / "models--rlrun-tests--tiny"
    shutil.copytree(tiny_model, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    validate_text(text_cfg(make_synthetic_text_pairs(tmp_path / "pairs.jsonl", 4, seed=0),
                           "algo.text.model=rlrun-tests/tiny"))
    tokenizer, model = load_text_model("rlrun-tests/tiny")
    assert model.config.num_labels == 1 and tokenizer.pad_token == PAD_TOKEN


def test_two_label_model_is_refused_by_training(tmp_path, text_cfg, tiny_model):
    directory = two_label_model(tiny_model, tmp_path / "two")
    cfg = text_cfg(make_synthetic_text_pairs(tmp_path / "pairs.jsonl", 4, seed=0), f"algo.text.model={directory}")
    run = Run(cfg, tmp_path / "run")
    try:
        with pytest.raises(ConfigError, match=f"^algo.text.model='{directory}' has num_labels=2"):
            train_text(cfg, run)
    finally:
        run.close()
    assert not (tmp_path / "run" / REWARD_DIR).exists()


# ---- training -------------------------------------------------------------------------------------

def share_ranked_right(model, tokenizer, pairs: list[TextPair], max_length: int) -> float:
    """The share of ``pairs`` whose chosen response the model scores above the rejected one."""
    chosen, rejected = encode_pairs(tokenizer, pairs, max_length)
    rewards = score_all(model, tokenizer, chosen + rejected, 16, torch.device("cpu"))
    return (rewards[:len(chosen)] > rewards[len(chosen):]).float().mean().item()


def test_tiny_model_learns_the_generated_preferences(tmp_path, text_cfg):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    pairs_path = make_synthetic_text_pairs(tmp_path / "pairs.jsonl", LEARN_PAIRS, seed=0)
    cfg = text_cfg(pairs_path, "algo.epochs=2", "algo.batch_size=16", "algo.learning_rate=1e-3",
                   "algo.holdout_fraction=0.5", "algo.eval_interval=1")
    validate_text(cfg)
    pairs = load_text_pairs(pairs_path)
    train_idx, holdout_idx = split_pairs(len(pairs), 0.5, seed=0)

    def holdout_accuracy(model, tokenizer):
        return share_ranked_right(model, tokenizer, [pairs[i] for i in holdout_idx], int(cfg.algo.text.max_length))

    untrained = AutoModelForSequenceClassification.from_pretrained(cfg.algo.text.model)
    assert holdout_accuracy(untrained, AutoTokenizer.from_pretrained(cfg.algo.text.model)) < 0.65  # measured 0.62

    seed_everything(0)
    run = Run(cfg, tmp_path / "run")
    try:
        accuracy = train_text(cfg, run)
        assert run.total == 8  # 2 epochs of ceil(60 / 16) gradient steps
    finally:
        run.close()
    assert accuracy >= LEARN_MIN_ACCURACY

    scalars = read_scalars(tmp_path / "run")
    for tag in SCALAR_TAGS:
        assert [step for step, _, _ in scalars[tag]] == [4, 8], tag  # every epoch (eval_interval=1)
    assert scalars["charts/holdout_accuracy"][-1][1] == pytest.approx(accuracy)
    first_loss, last_loss = scalars["losses/preference_loss"][0][1], scalars["losses/preference_loss"][-1][1]
    assert last_loss < first_loss < math.log(4)  # log 2 is chance; the loss goes down
    assert scalars["charts/margin"][-1][1] > 0

    # the written model reloads and gives the rewards its statistics describe
    directory = tmp_path / "run" / REWARD_DIR
    model = AutoModelForSequenceClassification.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    stats = json.loads((directory / STATS_FILE).read_text())
    chosen, rejected = encode_pairs(tokenizer, pairs, int(cfg.algo.text.max_length))
    rewards = score_all(model, tokenizer, [chosen[i] for i in train_idx] + [rejected[i] for i in train_idx], 16,
                        torch.device("cpu")).double()
    assert stats["count"] == LEARN_PAIRS  # 60 training pairs, two responses each
    assert stats["mean"] == pytest.approx(rewards.mean().item(), abs=1e-5)
    assert stats["std"] == pytest.approx(rewards.std(correction=0).item(), rel=1e-4)
    assert holdout_accuracy(model, tokenizer) == pytest.approx(accuracy)


def test_stopped_text_run_resumes_to_the_same_result(tmp_path, text_cfg, interrupt_at):
    pairs_path = make_synthetic_text_pairs(tmp_path / "pairs.jsonl", 30, seed=1)
    # 20 training pairs in batches of 8: 3 gradient steps per epoch, 6 in all; a checkpoint is due at step 3
    cfg = text_cfg(pairs_path, "algo.epochs=2", "algo.batch_size=8", "algo.learning_rate=1e-3",
                   "algo.holdout_fraction=0.33", "algo.eval_interval=1", "checkpoint.interval=3")

    def train(run_dir, resume=None):
        if resume is None:
            seed_everything(0)
        run = Run(cfg, run_dir, resume=resume)
        try:
            return train_text(cfg, run), run.should_stop
        finally:
            run.close()

    whole_accuracy, _ = train(tmp_path / "whole")
    interrupt_at(4, signal.SIGTERM)  # in the middle of the second epoch
    _, stopped = train(tmp_path / "split")
    interrupt_at(None)
    assert stopped and not (tmp_path / "split" / REWARD_DIR).exists()
    _, ckpt = latest_checkpoint(tmp_path / "split")
    assert ckpt["global_step"] == 4 and ckpt["epoch"] == 1
    assert (tmp_path / "split" / "checkpoints" / "step_000000000003.pt").exists()  # due at the end of epoch 1
    split_accuracy, _ = train(tmp_path / "split", resume=ckpt)

    assert split_accuracy == whole_accuracy

    def values(run_dir):
        return {t: [(s, v) for s, v, _ in e] for t, e in read_scalars(run_dir).items() if t != "charts/SPS"}

    assert values(tmp_path / "split") == values(tmp_path / "whole")
    assert (json.loads((tmp_path / "split" / REWARD_DIR / STATS_FILE).read_text())
            == json.loads((tmp_path / "whole" / REWARD_DIR / STATS_FILE).read_text()))


def test_text_reward_model_end_to_end_through_the_cli(tmp_path, text_cfg):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    pairs_path = make_synthetic_text_pairs(tmp_path / "pairs.jsonl", 40, seed=2)
    cfg = text_cfg(pairs_path, "algo.epochs=1", "algo.batch_size=16", "algo.learning_rate=1e-3", "algo.eval_interval=1")
    accuracy = run_training(cfg, tmp_path / "run")
    assert (tmp_path / "run" / REWARD_DIR / STATS_FILE).is_file()
    scalars = read_scalars(tmp_path / "run")
    assert set(SCALAR_TAGS) <= set(scalars)
    assert [step for step, _, _ in scalars["charts/holdout_accuracy"]] == [2]  # 32 training pairs in batches of 16
    # the model the run wrote ranks the 8 held-out pairs (holdout_fraction 0.2) as the run reported
    pairs = load_text_pairs(pairs_path)
    _, holdout_idx = split_pairs(len(pairs), 0.2, seed=0)
    assert len(holdout_idx) == 8 and (accuracy * 8).is_integer()
    directory = tmp_path / "run" / REWARD_DIR
    written = AutoModelForSequenceClassification.from_pretrained(directory)
    share = share_ranked_right(written, AutoTokenizer.from_pretrained(directory), [pairs[i] for i in holdout_idx],
                               int(cfg.algo.text.max_length))
    assert share == pytest.approx(accuracy) == pytest.approx(scalars["charts/holdout_accuracy"][-1][1])
