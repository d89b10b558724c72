"""What a newcomer meets in the first hour (issue 22): family presets for envs no config names, one line and no
files for a bad machine setting, progress that tells the truth, and a score put in context."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from rlrun.cli import presets
from rlrun.core import config as core_config
from rlrun.core.progress import Progress, RecentRate
from rlrun.envs.scores import score_context


def composed(*overrides: str):
    """The config `rlrun <overrides>` runs: the family preset rlrun adds, then Hydra's composition."""
    extra = presets.preset_override(list(overrides))
    with initialize_config_module(version_base="1.3", config_module="rlrun.configs"):
        return compose("config", overrides=[*overrides, *([extra] if extra else [])])


# ---- 1. family presets ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, preset, expected", [
    # continuous actions (no config names these MuJoCo ids): CleanRL's ppo_continuous_action.py
    (["algo=ppo", "env=gym", "env.id=Walker2d-v5"], "ppo_continuous",
     {"algo.num_envs": 1, "algo.num_steps": 2048, "algo.clip_coef": 0.2, "algo.ent_coef": 0.0,
      "algo.normalize_obs": True, "algo.update_epochs": 10, "total_timesteps": 1_000_000}),
    (["algo=ppo", "env=gym", "env.id=InvertedPendulum-v5"], "ppo_continuous", {"algo.num_steps": 2048}),
    (["algo=ppo", "env=gym", "env.id=Pendulum-v1"], "ppo_continuous", {"algo.normalize_reward": True}),
    # small vector observations, discrete actions: CleanRL's ppo.py / dqn.py
    (["algo=ppo", "env=gym", "env.id=Acrobot-v1"], "ppo_classic_control",
     {"algo.num_envs": 4, "algo.num_steps": 128, "algo.clip_coef": 0.2, "total_timesteps": 500_000}),
    (["algo=dqn", "env=gym", "env.id=CartPole-v1"], "dqn_classic_control",
     {"algo.learning_starts": 10_000, "algo.train_frequency": 10, "algo.hidden_sizes": [120, 84],
      "replay.buffer_size": 10_000}),
    (["algo=rainbow", "env=gym", "env.id=Acrobot-v1"], "rainbow_classic_control",
     {"algo.learning_starts": 10_000, "algo.dueling": True, "algo.v_max": 100.0}),
    # ALE games: the algorithms' own (Atari) defaults
    (["algo=ppo", "env=atari", "env.id=space_invaders"], "ppo_atari", {"algo.num_envs": 8, "algo.clip_coef": 0.1}),
    (["algo=dqn", "env=atari", "env.id=qbert"], "dqn_atari", {"algo.learning_starts": 80_000}),
    # REINFORCE has no family presets: its defaults follow the action space
    (["algo=reinforce", "env=gym", "env.id=Pendulum-v1"], None, {"algo.num_envs": 1}),
])
def test_the_family_preset_is_chosen_from_the_spaces(overrides, preset, expected):
    cfg = composed(*overrides)
    assert cfg.family_preset == preset
    for key, value in expected.items():
        assert core_config.get(cfg, key) == value, key


def test_order_defaults_preset_tuned_command_line():
    # the command line beats the preset
    assert composed("algo=ppo", "env=gym", "env.id=Walker2d-v5", "algo.num_steps=512").algo.num_steps == 512
    # a tuned file beats the preset it builds on (tuned/ppo_halfcheetah over preset/ppo_continuous's 3e-4)
    cheetah = composed("algo=ppo", "env=halfcheetah")
    assert cheetah.algo.learning_rate == pytest.approx(2.0633e-5) and cheetah.algo.num_steps == 2048
    # the user's preset=none keeps the Atari defaults on a continuous task
    plain = composed("algo=ppo", "env=gym", "env.id=Walker2d-v5", "preset=none")
    assert plain.family_preset is None and plain.algo.num_envs == 8 and plain.algo.clip_coef == 0.1
    # an experiment file beats the preset too
    quick = composed("algo=dqn", "env=gym", "env.id=CartPole-v1", "+experiment=quickstart")
    assert quick.total_timesteps == 100_000 and quick.algo.learning_starts == 20_000


def test_cfg_job_and_the_first_lines_say_which_preset_applied(tmp_path, rlrun):
    shown = rlrun("algo=ppo", "env=gym", "env.id=Swimmer-v5", "--cfg", "job", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "family_preset: ppo_continuous" in shown.stdout and "num_steps: 2048" in shown.stdout
    out = rlrun("algo=ppo", "env=gym", "env.id=Pendulum-v1", "total_timesteps=128", "algo.num_steps=64",
                "algo.num_minibatches=2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "the family preset ppo_continuous" in "\n".join(out.stdout.splitlines()[:3])


def test_each_job_of_a_sweep_gets_its_env_family_preset(tmp_path, rlrun):
    out = rlrun("-m", "algo=ppo", "env=gym", "env.id=Acrobot-v1,Pendulum-v1", "total_timesteps=256",
                "algo.num_steps=64", "algo.num_minibatches=2", "sweep_name=presets", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    saved = {p.parent.name: p.read_text() for p in (tmp_path / "outputs/multirun/presets").glob("*/config.yaml")}
    assert "family_preset: ppo_classic_control" in saved["0_ppo_Acrobot-v1_s1"]
    assert "family_preset: ppo_continuous" in saved["1_ppo_Pendulum-v1_s1"]
    assert "num_envs: 4" in saved["0_ppo_Acrobot-v1_s1"] and "num_envs: 1" in saved["1_ppo_Pendulum-v1_s1"]


# ---- 2. bad machine settings: one line, exit 2, no files ---------------------------------------------------------
def refusals() -> list:
    cases = []
    if not torch.cuda.is_available():
        cases += [(["env=cartpole", "device=cuda"], "device='cuda' is not allowed: expected a device this machine has"),
                  (["env=cartpole", "device=cuda:1"], "device='cuda:1' is not allowed")]
    else:
        n = torch.cuda.device_count()
        cases += [(["env=cartpole", f"device=cuda:{n}"], f"device='cuda:{n}' is not allowed")]
    if not torch.backends.mps.is_available():
        cases += [(["env=cartpole", "device=mps"], "device='mps' is not allowed: expected a device this machine has")]
    # an ALE id through env=gym points at env=atari
    cases += [(["algo=ppo", "env=gym", "env.id=ALE/SpaceInvaders-v5"], "for an ALE game use env=atari env.id=space_invaders")]
    # 10^9 Atari transitions are ~7 TB of frames
    cases += [(["env=breakout", "replay.buffer_size=1000000000"], "replay.buffer_size=1000000000 is not allowed: "
               "expected a size that fits in memory: the replay buffer needs")]
    return cases


@pytest.mark.parametrize("args, expected", refusals())
def test_a_bad_machine_setting_is_one_line_and_leaves_nothing(tmp_path, rlrun, args, expected):
    out = rlrun(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], out.stderr
    assert list(tmp_path.iterdir()) == []  # not even an empty outputs/<date>/


def test_a_refusal_keeps_an_outputs_directory_that_was_there(tmp_path, rlrun):
    (tmp_path / "outputs" / "mine").mkdir(parents=True)
    out = rlrun("env=breakout", "replay.buffer_size=1000000000", cwd=tmp_path)
    assert out.returncode == 2
    assert [p.relative_to(tmp_path).as_posix() for p in sorted(tmp_path.rglob("*"))] == ["outputs", "outputs/mine"]


def test_a_file_that_is_not_an_rlrun_checkpoint_is_named_as_such(tmp_path, cli):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pt")  # a whole pickled model
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "weights.pt")
    before = sorted(tmp_path.rglob("*"))
    for name, expected in [("model.pt", "not an rlrun checkpoint, it holds Python objects"),
                           ("weights.pt", "is not an rlrun checkpoint of format 1: it holds a dict without rlrun's")]:
        out = cli("rlrun-eval", tmp_path / name, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], out.stderr
        assert "weights_only" not in out.stderr  # torch's advice to run the file's code is not passed on
    assert sorted(tmp_path.rglob("*")) == before


def test_a_buffer_close_to_the_available_memory_warns(monkeypatch, capsys):
    import psutil

    class Memory:
        available = 10 * 10**9

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory)
    core_config.check_memory("replay.buffer_size", 5, 7 * 10**9, "the replay buffer")  # 70%: quiet
    assert capsys.readouterr().err == ""
    core_config.check_memory("replay.buffer_size", 6, 9 * 10**9, "the replay buffer")  # 90%: a warning
    assert "needs 9.0 GB of the 10.0 GB available" in capsys.readouterr().err
    with pytest.raises(core_config.ConfigError, match="needs 11.0 GB, 10.0 GB available"):
        core_config.check_memory("replay.buffer_size", 7, 11 * 10**9, "the replay buffer")


MUJOCO_PROBE = """
import sys, warnings
from pathlib import Path
import numpy as np
from hydra import compose, initialize_config_module
from rlrun.envs.factory import send_mujoco_log
from rlrun.envs.vector import GymVecEnv
with initialize_config_module(version_base="1.3", config_module="rlrun.configs"):
    cfg = compose("config", overrides=["algo=ppo", "env=gym", "env.id=Hopper-v4"])
warnings.simplefilter("default")
envs = GymVecEnv.from_config(cfg.env, 4)     # four envs of an outdated id
again = GymVecEnv.from_config(cfg.env, 2)    # and more later, as an evaluation does
print(send_mujoco_log(cfg, Path(sys.argv[1])))
import mujoco
model = mujoco.MjModel.from_xml_string('<mujoco><worldbody><body><freejoint/><geom size="0.1"/></body></worldbody></mujoco>')
data = mujoco.MjData(model)
data.qpos[:] = np.nan
mujoco.mj_step(model, data)                   # "Nan, Inf or huge value in QPOS": MuJoCo logs a warning
"""


def test_mujoco_logs_into_the_run_directory_and_warns_once(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    out = subprocess.run([sys.executable, "-c", MUJOCO_PROBE, str(run_dir)], cwd=work, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert list(work.iterdir()) == []  # no MUJOCO_LOG.TXT in the working directory
    assert "Nan, Inf or huge value in QPOS" in (run_dir / "MUJOCO_LOG.TXT").read_text()
    assert out.stderr.count("Hopper-v4 is out of date") == 1  # six envs, one warning


# ---- 3. progress and context ------------------------------------------------------------------------------------
def test_the_eta_follows_the_recent_rate(capsys):
    clock = [0.0]
    progress = Progress("lines", interval=1.0, total=100_000, clock=lambda: clock[0])
    step = 0
    for _ in range(20):  # DQN's warm-up: 20 s at 1,000 steps/s
        clock[0] += 1.0
        step += 1_000
        progress.update(step, None)
    for _ in range(120):  # learning: 2 minutes at 100 steps/s
        clock[0] += 1.0
        step += 100
        progress.update(step, 1.5)
    # 100,000 - 32,000 steps left at 100 steps/s: 680 s; the average since the start (32,000 / 140 s = 229/s)
    # would say 297 s
    assert progress.sps() == 100
    assert progress.eta(step) == pytest.approx(680.0)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "[rlrun] step 32000/100000 (32.0%) ETA=11m20s SPS=100 return=1.5"


def test_the_recent_rate_starts_from_the_first_sample():
    rate = RecentRate(window=60.0)
    assert rate.rate() is None
    rate.add(0.0, 0)
    rate.add(10.0, 5_000)
    assert rate.rate() == 500.0  # less than a window so far: since the first sample
    for t in range(11, 200):
        rate.add(float(t), 5_000 + (t - 10) * 10)
    assert rate.rate() == pytest.approx(10.0)  # the window holds only the slow part


def test_a_score_is_put_in_context():
    breakout = score_context("dqn", "breakout")
    assert "random play scores 1.7" in breakout and "366.9" in breakout
    assert score_context("ppo", "breakout").endswith("414.7 in CleanRL's table")
    assert score_context("sft", "sentiment") is None


@pytest.mark.slow
def test_the_quickstart_ends_with_its_score_in_context(tmp_path, rlrun):
    out = rlrun("algo=dqn", "env=breakout", "+experiment=quickstart", "total_timesteps=3000",
                "algo.learning_starts=1000", "replay.buffer_size=3000", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("rlrun: for scale: random play scores 1.7") and "after 3000 steps" in last
    assert np.isfinite(float(last.split("(this run: ")[1].split()[0]))
