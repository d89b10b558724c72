"""rlrun-eval end to end on short real runs; the rendering env against the training env; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from rlrun.cli.evaluate import EXIT_BAD_INPUT, main
from rlrun.cli.train import run_training
from rlrun.core.events import read_scalars
from rlrun.envs.factory import make_vec_env
from rlrun.envs.render import make_render_env
from rlrun.envs.rollout import evaluate


@pytest.fixture(scope="session")
def rlrun_eval(cli):
    """rlrun_eval(*args) runs rlrun-eval in a subprocess and checks that it succeeded."""
    def _run(*args: str | Path):
        out = cli("rlrun-eval", *args)
        assert out.returncode == 0, out.stderr
        return out

    return _run


def frame_count(path: Path) -> int:
    """Frames decoded from a video file (0 if it is not a readable video)."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_eval_of_a_breakout_run_writes_json_and_scalars(make_cfg, tmp_path, rlrun_eval):
    run_dir = tmp_path / "run"
    run_training(make_cfg("env=breakout", "total_timesteps=600", "algo.learning_starts=400",
                          "replay.buffer_size=1000", "checkpoint.interval=300"), run_dir)

    out = rlrun_eval(run_dir, "--episodes", "2")  # the newest checkpoint, step 600
    report = json.loads((run_dir / "eval" / "step_000000000600.json").read_text())
    returns = report["returns"]
    assert report["episodes"] == len(returns) == len(report["lengths"]) == 2
    assert all(r >= 0 and float(r).is_integer() for r in returns)  # raw Breakout scores
    assert all(length > 0 for length in report["lengths"])
    assert report["mean"] == pytest.approx(np.mean(returns)) and report["std"] == pytest.approx(np.std(returns))
    assert (report["min"], report["max"]) == (min(returns), max(returns))
    assert report["checkpoint"].endswith("step_000000000600.pt") and report["global_step"] == 600
    assert (report["epsilon"], report["seed"], report["video_dir"]) == (0.05, 1 + 10000, None)  # config defaults
    assert out.stdout.count("\n") == 1 and f"mean {report['mean']:.2f}" in out.stdout

    # a checkpoint file, with explicit epsilon and seed
    # (not epsilon 0: a greedy Breakout agent that never presses FIRE after losing a life plays to the time limit)
    rlrun_eval(run_dir / "checkpoints" / "step_000000000300.pt", "--episodes", "1", "--epsilon", "1", "--seed", "3")
    report_300 = json.loads((run_dir / "eval" / "step_000000000300.json").read_text())
    assert [report_300[k] for k in ("global_step", "episodes", "epsilon", "seed")] == [300, 1, 1.0, 3]

    scalars = read_scalars(run_dir / "eval")
    assert sorted((s, v) for s, v, _ in scalars["eval/episodic_return"]) == sorted(
        [(300, report_300["returns"][0]), (600, returns[0]), (600, returns[1])])
    assert sorted((s, v) for s, v, _ in scalars["eval/mean_return"]) == [
        (300, report_300["mean"]), (600, pytest.approx(report["mean"]))]
    assert read_scalars(run_dir)["charts/episodic_return"]  # the training curves are still there


def test_video_of_a_cartpole_run_has_one_mp4_per_episode_with_every_frame(make_cfg, tmp_path, rlrun_eval):
    run_dir = tmp_path / "run"
    run_training(make_cfg("env=cartpole", "env.max_episode_steps=60", "total_timesteps=1500",
                          "algo.learning_starts=500"), run_dir)
    rlrun_eval(run_dir, "--episodes", "2", "--video")
    report = json.loads((run_dir / "eval" / "step_000000001500.json").read_text())
    video_dir = run_dir / "videos" / "step_000000001500"
    assert report["video_dir"] == str(video_dir)
    assert sorted(p.name for p in video_dir.iterdir()) == ["episode_0.mp4", "episode_1.mp4"]
    for i, length in enumerate(report["lengths"]):
        assert 0 < length <= 60
        assert frame_count(video_dir / f"episode_{i}.mp4") == length + 1  # the reset frame, then one per step


def test_evaluate_plays_whole_episodes_and_reports_their_statistics(make_cfg):
    cfg = make_cfg("env=cartpole", "env.max_episode_steps=7")
    result = evaluate(cfg, lambda env: (lambda obs: np.zeros(len(obs), np.int64)), episodes=3, seed=0)
    assert result["episodes"] == len(result["lengths"]) == 3 and all(0 < n <= 7 for n in result["lengths"])
    assert result["returns"] == [float(length) for length in result["lengths"]]  # CartPole pays 1 per step
    assert result["mean"] == pytest.approx(np.mean(result["returns"]))


@pytest.mark.parametrize("overrides", [["env=breakout"], ["env=pong", "env.full_action_space=true"]])
def test_atari_render_env_observations_match_the_training_env(make_cfg, overrides):
    cfg = make_cfg(*overrides)
    train_env, render_env = make_vec_env(cfg, 1), make_render_env(cfg)
    assert render_env.single_observation_space == train_env.single_observation_space
    assert render_env.single_action_space == train_env.single_action_space
    assert render_env.num_envs == 1 and render_env.frame_stack == train_env.frame_stack == 4
    for env in (train_env, render_env):
        obs = env.reset(seed=0)
        assert obs.shape == (1, 4, 84, 84) and obs.dtype == np.uint8
        assert not obs[:, :3].any() and obs[:, 3].any()  # zero-padded at reset: [0, 0, 0, f0]
        step = env.step(np.zeros(1, np.int64))
        np.testing.assert_array_equal(step.obs[:, :3], obs[:, 1:])
        env.close()
    assert render_env.get_state() is None
    frame = render_env._env.envs[0].render()
    assert frame.shape == (210, 160, 3) and frame.dtype == np.uint8


def fake_runs(root: Path) -> None:
    """Two run directories without a valid checkpoint: ``empty`` has none, ``corrupt`` a corrupt one."""
    for name in ("empty", "corrupt"):
        (root / name / "checkpoints").mkdir(parents=True)
        (root / name / "config.yaml").write_text("seed: 1\n")
    (root / "corrupt" / "checkpoints" / "step_000000000100.pt").write_bytes(b"not a checkpoint")


@pytest.mark.parametrize("args, expected", [
    (["{tmp}/missing"], "missing does not exist: expected a run directory or a checkpoint file"),
    (["{tmp}"], "is not an rlrun run directory"),
    (["{tmp}/empty"], "holds no valid checkpoint"),
    (["{tmp}/corrupt/checkpoints/step_000000000100.pt"], "cannot load checkpoint"),
    (["{tmp}/empty/config.yaml"], "PyTorch cannot read it"),
    (["{tmp}/empty", "--episodes", "0"], "--episodes=0 is not allowed: expected an integer >= 1"),
    (["{tmp}/empty", "--epsilon", "2"], "--epsilon=2.0 is not allowed: expected a number in [0, 1]"),
    (["{tmp}/empty", "--device", "gpu"], "--device=gpu is not allowed"),
])
def test_bad_input_is_one_line_on_stderr_exit_2_and_nothing_written(tmp_path, capsys, args, expected):
    fake_runs(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(tmp=tmp_path) for a in args])
    assert exit_info.value.code == EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("rlrun-eval: ") and expected in err, err
    assert sorted(tmp_path.rglob("*")) == before


def test_bad_input_from_the_command_line_has_no_traceback(tmp_path, cli):
    out = cli("rlrun-eval", tmp_path, "--episodes", "3")
    assert out.returncode == EXIT_BAD_INPUT
    assert out.stderr == f"rlrun-eval: {tmp_path} is not an rlrun run directory (no config.yaml and checkpoints/)\n"


def test_periodic_evaluation_during_training_logs_eval_tags(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    run_training(make_cfg("env=cartpole", "env.max_episode_steps=30", "total_timesteps=2000",
                          "algo.learning_starts=500", "eval.interval=1000", "eval.episodes=2", "eval.video=true"), run_dir)
    scalars = read_scalars(run_dir)
    assert [s for s, _, _ in scalars["eval/mean_return"]] == [1000, 2000]
    assert [s for s, _, _ in scalars["eval/episodic_return"]] == [1000, 1000, 2000, 2000]
    for step in ("step_000000001000", "step_000000002000"):
        videos = sorted((run_dir / "videos" / step).glob("*.mp4"))
        assert [v.name for v in videos] == ["episode_0.mp4", "episode_1.mp4"]
        assert all(frame_count(v) > 1 for v in videos)


def test_ppo_eval_plays_the_policy_mode_and_refuses_an_epsilon(make_cfg, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_training(make_cfg("algo=ppo", "env=cartpole", "total_timesteps=512"), run_dir)
    capsys.readouterr()
    main([str(run_dir), "--episodes", "2"])
    out = capsys.readouterr().out
    assert "2 episodes (the policy's mode, seed 10001)" in out
    assert json.loads((run_dir / "eval" / "step_000000000512.json").read_text())["epsilon"] is None
    before = sorted(run_dir.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        main([str(run_dir), "--epsilon", "0.1"])
    assert exit_info.value.code == EXIT_BAD_INPUT
    assert "--epsilon=0.1 is not allowed for ppo" in capsys.readouterr().err
    assert sorted(run_dir.rglob("*")) == before
