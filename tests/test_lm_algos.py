"""The language-model algorithms end to end on a very small causal LM built offline: sft, dpo, ppo_rlhf and the text
reward model started from an SFT run. Each writes its scalars and a checkpoint and resumes exactly after a stop;
the stages compose through their run directories; bad input is one ConfigError before anything is written."""

from __future__ import annotations

import json
import math
import re

import pytest

from rlrun.cli.train import run_training
from rlrun.core.checkpoint import latest_checkpoint
from rlrun.core.config import ConfigError
from rlrun.core.events import scalar_values
from rlrun.rlhf.tiny_lm import pretrain_tiny_lm

SMALL = dict(max_steps=30, n_layer=1, n_embd=32, n_head=2, vocab_size=300)  # seconds to build
WORDS = ("good", "bad", "the", "value", "list", "great", "error", "function", "returns", "nice", "object", "type")


@pytest.fixture(scope="session")
def small_lm(tmp_path_factory):
    """A 1-block GPT-2 of width 32 pretrained for 30 steps on the built-in corpus: a causal LM directory."""
    return pretrain_tiny_lm(tmp_path_factory.mktemp("lm") / "model", seed=0, log=None, **SMALL)


@pytest.fixture(scope="session")
def text_files(tmp_path_factory):
    """A small text task: 48 demonstrations and 48 prompts, 16 held-out prompts, 40 preference pairs and 8 rankings."""
    import random

    rng = random.Random(0)
    root = tmp_path_factory.mktemp("task")

    def phrase(n):
        return " ".join(rng.choice(WORDS) for _ in range(n))

    def write(name, records):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in records))
        return str(root / name)

    return {"demonstrations": write("demos.jsonl", [{"prompt": phrase(3), "response": " " + phrase(5)} for _ in range(48)]),
            "prompts": write("prompts.jsonl", [{"prompt": phrase(3)} for _ in range(48)]),
            "heldout": write("heldout.jsonl", [{"prompt": phrase(3)} for _ in range(16)]),
            "pairs": write("pairs.jsonl", [{"prompt": phrase(3), "chosen": " good great nice",
                                            "rejected": " bad error " + phrase(1)} for _ in range(40)]),
            "rankings": write("rankings.jsonl", [{"prompt": phrase(3), "responses": [" good", " bad", " good nice"],
                                                  "ranking": [2, 3, 1]} for _ in range(8)])}


def task(files, scorer="vader"):
    return ["env=text", f"env.demonstrations_path={files['demonstrations']}", f"env.prompts_path={files['prompts']}",
            f"env.heldout_prompts_path={files['heldout']}", f"env.scorer={scorer}", "device=cpu", "seed=0"]


def sft_args(lm, files):
    return ["algo=sft", f"algo.model={lm}", *task(files), "algo.batch_size=8", "algo.num_train_epochs=2",
            "algo.eval_steps=2", "algo.holdout_fraction=0.25", "algo.learning_rate=3e-3", "checkpoint.interval=4"]


def dpo_args(lm, files, *extra):
    return ["algo=dpo", f"algo.model={lm}", *task(files), f"algo.pairs_path={files['pairs']}", "algo.batch_size=8",
            "algo.num_train_epochs=2", "algo.eval_steps=2", "algo.learning_rate=3e-3", "algo.eval_num_prompts=8",
            "algo.generation.max_new_tokens=6", "checkpoint.interval=3", *extra]


def ppo_args(lm, files, *extra):
    return ["algo=ppo_rlhf", f"algo.model={lm}", *task(files), "algo.total_episodes=48", "algo.batch_size=8",
            "algo.num_mini_batches=2", "algo.num_ppo_epochs=2", "algo.eval_every=3", "algo.eval_num_prompts=8",
            "algo.generation.max_new_tokens=6", "algo.learning_rate=1e-3", "checkpoint.interval=16", *extra]


def without_timing(scalars):
    return {tag: values for tag, values in scalars.items() if not tag.startswith("perf/")}


def test_sft_lowers_heldout_perplexity_writes_model_and_resumes_exactly(small_lm, text_files, stop_and_resume):
    whole, split, ckpt = stop_and_resume(sft_args(small_lm, text_files), stop_at=4)
    assert ckpt["global_step"] == 4
    assert without_timing(whole) == without_timing(split)  # the resumed run continues bit for bit
    perplexity = [v for _, v in whole["charts/heldout_perplexity"]]
    assert whole["charts/heldout_perplexity"][0][0] == 0 and perplexity[-1] < perplexity[0]
    assert "losses/sft_loss" in whole


def test_sft_then_reward_model_then_ppo_and_dpo_compose(small_lm, text_files, tmp_path, make_cfg):
    run_training(make_cfg(*sft_args(small_lm, text_files)), tmp_path / "sft")
    assert (tmp_path / "sft" / "model" / "config.json").is_file()
    # the reward model starts from the SFT run and samples its own pairs from it, labelled by VADER
    rm = ["algo=reward_model", "algo.data=text", f"algo.text.model={tmp_path / 'sft'}", *task(text_files),
          "algo.text.num_pairs=24", "algo.text.generation.max_new_tokens=6", "algo.epochs=2", "algo.batch_size=8",
          "algo.learning_rate=1e-3"]
    run_training(make_cfg(*rm), tmp_path / "rm")
    pairs = [json.loads(line) for line in (tmp_path / "rm" / "pairs.jsonl").read_text().splitlines()]
    assert 0 < len(pairs) <= 24 and all(p["chosen_score"] > p["rejected_score"] for p in pairs)
    assert (tmp_path / "rm" / "reward_model" / "reward_stats.json").is_file()
    # PPO-RLHF on that reward model, logging the true score beside it
    run_training(make_cfg(*ppo_args(tmp_path / "sft", text_files, f"algo.reward_model={tmp_path / 'rm'}")),
                 tmp_path / "ppo")
    scalars = scalar_values(tmp_path / "ppo")
    for tag in ("charts/reward", "charts/true_score", "charts/kl", "charts/entropy", "charts/response_length",
                "losses/clipfrac", "losses/value_loss", "losses/approx_kl", "perf/tokens_per_s", "eval/true_score"):
        assert tag in scalars, tag
    assert (tmp_path / "ppo" / "model" / "config.json").is_file()
    # DPO from the same SFT run on its own sampled pairs
    run_training(make_cfg(*dpo_args(tmp_path / "sft", text_files, "algo.pairs_path=null", "algo.num_pairs=24")),
                 tmp_path / "dpo")
    assert (tmp_path / "dpo" / "pairs.jsonl").is_file() and (tmp_path / "dpo" / "model" / "config.json").is_file()


def test_dpo_learns_the_pairs_and_resumes_exactly(small_lm, text_files, stop_and_resume):
    whole, split, _ = stop_and_resume(dpo_args(small_lm, text_files), stop_at=3)
    assert without_timing(whole) == without_timing(split)
    accuracy = [v for _, v in whole["rewards/accuracies"]]
    assert accuracy[-1] == 1.0  # the chosen responses are one fixed text, easy to prefer
    assert whole["rewards/margins"][-1][1] > 0 and "eval/accuracies" in whole and "logps/chosen" in whole


def test_ppo_rlhf_on_the_true_scorer_resumes_exactly(small_lm, text_files, stop_and_resume):
    whole, split, _ = stop_and_resume(ppo_args(small_lm, text_files, "algo.adaptive_kl=true", "algo.kl_target=0.5",
                                               "algo.whiten_rewards=true", "algo.missing_eos_penalty=0.1"), stop_at=16)
    assert without_timing(whole) == without_timing(split)
    kl_coef = [v for _, v in whole["charts/kl_coef"]]
    assert len(set(kl_coef)) > 1  # the adaptive controller moved it


@pytest.mark.parametrize("change, expected", [
    (["algo.beta=0"], "algo.beta=0 is not allowed: expected a number > 0"),
    (["algo.loss_type=hinge"], "algo.loss_type='hinge' is not allowed"),
    (["algo.generation.max_new_tokens=0"], "algo.generation.max_new_tokens=0 is not allowed: expected an integer >= 1"),
])
def test_dpo_refuses_bad_values(small_lm, text_files, tmp_path, make_cfg, change, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        run_training(make_cfg(*dpo_args(small_lm, text_files, *change)), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_ppo_rlhf_refuses_negative_kl_coef_and_a_non_causal_model(small_lm, text_files, tmp_path, make_cfg):
    with pytest.raises(ConfigError, match=re.escape("algo.kl_coef=-0.1 is not allowed: expected a number >= 0")):
        run_training(make_cfg(*ppo_args(small_lm, text_files, "algo.kl_coef=-0.1")), tmp_path / "run")
    from rlrun.rlhf.tiny_text import make_tiny_text_model

    classifier = make_tiny_text_model(tmp_path / "classifier")
    with pytest.raises(ConfigError, match="is not a causal language model"):
        run_training(make_cfg(*ppo_args(classifier, text_files)), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_sft_names_the_line_of_a_bad_record_and_a_too_long_prompt(small_lm, text_files, tmp_path, make_cfg):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": " b"}\n{"prompt": "a"}\n')
    args = [a for a in sft_args(small_lm, text_files) if not a.startswith("env.demonstrations_path")]
    with pytest.raises(ConfigError, match="bad.jsonl line 2 has no key 'response'"):
        run_training(make_cfg(*args, f"env.demonstrations_path={bad}"), tmp_path / "run")
    long = tmp_path / "long.jsonl"
    long.write_text('{"prompt": "a", "response": " b"}\n' + json.dumps({"prompt": "word " * 200, "response": " b"}) + "\n")
    with pytest.raises(ConfigError, match=r"long.jsonl line 2: the prompt has \d+ tokens, more than algo.max_length=64"):
        run_training(make_cfg(*args, f"env.demonstrations_path={long}"), tmp_path / "run")
    with pytest.raises(ConfigError, match="env='breakout' is not allowed: expected a text task for algo=sft"):
        run_training(make_cfg("algo=sft", "env=breakout"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_text_task_is_refused_by_an_rl_algorithm(tmp_path, make_cfg):
    with pytest.raises(ConfigError, match="a text task .* is for the language-model algorithms"):
        run_training(make_cfg("algo=dqn", "env=sentiment"), tmp_path / "run")


def test_latest_checkpoint_of_a_stopped_sft_run_holds_the_model(small_lm, text_files, tmp_path, make_cfg):
    run_training(make_cfg(*sft_args(small_lm, text_files)), tmp_path / "sft")
    _, ckpt = latest_checkpoint(tmp_path / "sft")
    assert any(key.startswith("transformer.") for key in ckpt["model"])


def test_reward_model_trains_on_rankings_expanded_into_pairs(small_lm, text_files, tmp_path, make_cfg):
    rm = ["algo=reward_model", "algo.data=text", f"algo.text.model={small_lm}", *task(text_files),
          f"algo.text.rankings_path={text_files['rankings']}", "algo.epochs=2", "algo.batch_size=8",
          "algo.learning_rate=1e-3", "algo.holdout_fraction=0.25"]
    accuracy = run_training(make_cfg(*rm), tmp_path / "rm")
    assert 0.0 <= accuracy <= 1.0
    scalars = scalar_values(tmp_path / "rm")
    assert "charts/holdout_accuracy" in scalars and "losses/preference_loss" in scalars
    assert (tmp_path / "rm" / "reward_model" / "reward_stats.json").is_file()
    stats = json.loads((tmp_path / "rm" / "reward_model" / "reward_stats.json").read_text())
    # 8 rankings of 3 responses: 3 pairs each, 24 in all, a quarter of them held out
    assert stats["count"] == 2 * 18


def test_bfloat16_runs_of_sft_dpo_and_ppo_rlhf_train_in_bfloat16(small_lm, text_files, tmp_path, make_cfg):
    # algo.dtype=bfloat16 is meant for GPUs; the code path is the same on the CPU, which torch runs in bf16 too
    import torch
    from transformers import AutoModelForCausalLM

    for name, args in (("sft", sft_args(small_lm, text_files)), ("dpo", dpo_args(small_lm, text_files)),
                       ("ppo", ppo_args(small_lm, text_files))):
        run_training(make_cfg(*args, "algo.dtype=bfloat16"), tmp_path / name)
        scalars = scalar_values(tmp_path / name)
        loss_tag = {"sft": "losses/sft_loss", "dpo": "losses/dpo_loss", "ppo": "losses/policy_loss"}[name]
        assert loss_tag in scalars and all(math.isfinite(v) for _, v in scalars[loss_tag]), name
        saved = AutoModelForCausalLM.from_pretrained(tmp_path / name / "model", dtype="auto")
        assert next(saved.parameters()).dtype == torch.bfloat16, name  # the weights were trained and saved in bf16
