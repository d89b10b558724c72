"""Checkpoints written before the layered layout (tests/data/before_layers, by commit f1ae077) still evaluate and
resume: rlrun-eval plays the same episodes, and a resumed run logs the scalars that code logged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rlrun.cli.evaluate import evaluate_checkpoint
from rlrun.core.checkpoint import latest_checkpoint
from rlrun.core.events import scalar_values

DATA = Path(__file__).parent / "data" / "before_layers"
EXPECTED = json.loads((DATA / "expected.json").read_text())
RESUMED_TO = {"dqn_cartpole": 4000, "ppo_cartpole": 2048}  # total_timesteps of the recorded resumes
# Float results may differ in the last bits (another CPU; PPO's first resumed step read its observations from the
# checkpoint's array before a0b6424, from its rollout buffer since): losses near 0 differ by about 2e-8
LOSS_RTOL, LOSS_ATOL = 1e-4, 1e-6


@pytest.fixture
def old_run(tmp_path):
    """A copy of one of the old run directories (resuming and evaluating write into it)."""
    def copy(name: str) -> Path:
        return Path(shutil.copytree(DATA / name, tmp_path / name))

    return copy


@pytest.mark.parametrize("name", sorted(RESUMED_TO))
def test_an_old_checkpoint_evaluates_to_the_same_episodes(old_run, name):
    result = evaluate_checkpoint(old_run(name), episodes=3, device="cpu")
    expected = EXPECTED[name]["eval"]
    for key in ("global_step", "returns", "lengths", "seed", "epsilon", "policy"):
        assert result[key] == expected[key], key


@pytest.mark.parametrize("name", sorted(RESUMED_TO))
def test_an_old_run_resumes_and_logs_what_the_old_code_logged(old_run, cli, name):
    run_dir = old_run(name)
    out = cli("rlrun", f"resume={run_dir}", f"total_timesteps={RESUMED_TO[name]}")
    assert out.returncode == 0, out.stderr
    _, ckpt = latest_checkpoint(run_dir)
    assert ckpt["global_step"] == RESUMED_TO[name]
    logged, expected = scalar_values(run_dir), EXPECTED[name]["resume"]
    assert sorted(logged) == sorted(expected)
    for tag, points in expected.items():
        steps, values = [s for s, _ in points], [v for _, v in points]
        assert [s for s, _ in logged[tag]] == steps, tag
        if tag.startswith("charts/episodic"):  # whole episodes: the same actions were taken
            assert [v for _, v in logged[tag]] == values, tag
        else:
            assert [v for _, v in logged[tag]] == pytest.approx(values, rel=LOSS_RTOL, abs=LOSS_ATOL), tag
