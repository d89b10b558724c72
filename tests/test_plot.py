"""rlrun-plot on synthetic TensorBoard runs with known returns: files, numbers, x axes, groups, bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from rlrun.cli.plot import X_AXES, main

TAG = "charts/episodic_return"
EPISODE_STEPS = np.arange(100, 1001, 100)  # every run ends one episode each 100 agent steps, up to step 1000
BINS = 10                                   # --window: bins (0, 100], (100, 200], ... hold one episode each
BASE = {"ppo": 10.0, "dqn": 100.0}          # a run's return at step s is BASE + s / 100 + OFFSET[seed]
OFFSET = {1: 0.0, 2: 3.0, 3: 9.0, 4: 40.0}
SEEDS = {"ppo": (1, 2, 3), "dqn": (1, 2, 3, 4)}  # 3 seeds: IQM = mean; 4 seeds: IQM = mean of the middle two
T0 = 1_800_000_000.0                        # wall time (s) of each run's first scalar
SECONDS_PER_STEP = 0.01                     # wall time between agent steps in the synthetic runs
REPS = 2000                                 # bootstrap resamples: enough for the checks, fast
LAST = 3                                    # --last: final score = mean of the returns at steps 800, 900, 1000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(run_dir: Path, algo: str, seed: int, env: str = "cartpole", steps=EPISODE_STEPS, frame_skip=None,
              learning_rate: float = 0.00025, progress: str = "none") -> None:
    """A run directory with a config.yaml and an event file of known returns (see BASE, OFFSET)."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir.mkdir(parents=True)
    preprocessing = {"name": "atari", "frame_skip": frame_skip} if frame_skip else {"name": "none"}
    cfg = {"algo": {"name": algo, "learning_rate": learning_rate}, "env": {"name": env, "id": env},
           "preprocessing": preprocessing, "seed": seed, "logging": {"progress": progress}, "resume": None}
    OmegaConf.save(OmegaConf.create(cfg), run_dir / "config.yaml")
    writer = SummaryWriter(log_dir=str(run_dir))
    writer.add_scalar("charts/SPS", 1.0, 0, walltime=T0)
    for step in steps:
        ret = BASE[algo] + step / 100 + OFFSET[seed]
        writer.add_scalar(TAG, ret, int(step), walltime=T0 + SECONDS_PER_STEP * step)
    writer.close()


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def column(rows, name, group=None) -> np.ndarray:
    return np.array([float(r[name]) for r in rows if group is None or r["group"] == group])


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A sweep directory: ppo x 3 seeds and dqn x 4 seeds on cartpole, one run directory per job
    (the ppo runs differ in logging.progress, which must not split their group)."""
    root = tmp_path / "sweep"
    job = 0
    for algo, seeds in SEEDS.items():
        for seed in seeds:
            write_run(root / f"{job}_{algo}_cartpole_s{seed}", algo, seed, progress=("none", "lines")[seed % 2])
            job += 1
    return root


def plot(*args) -> None:
    main([*map(str, args), "--reps", str(REPS)])


def test_writes_pngs_and_csvs_with_the_known_numbers(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    plot(sweep, "--out", out, "--window", BINS, "--last", LAST)
    assert "wrote 5 files" in capsys.readouterr().out
    png = out / "learning_curves_cartpole.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    from matplotlib.image import imread

    assert imread(png).shape == (675, 1050, 4)  # FIGURE_SIZE 7.0 x 4.5 inches at 150 dpi, RGBA

    curves = read_csv(out / "learning_curves_cartpole.csv")
    assert list(curves[0]) == ["group", "algo", "env", "x", "mean", "ci_low", "ci_high", "n_runs"]
    for algo, seeds in SEEDS.items():
        x, mean = column(curves, "x", algo), column(curves, "mean", algo)
        np.testing.assert_allclose(x, EPISODE_STEPS - 50)  # bin centres
        expected = BASE[algo] + EPISODE_STEPS / 100 + np.mean([OFFSET[s] for s in seeds])
        np.testing.assert_allclose(mean, expected)
        low, high = column(curves, "ci_low", algo), column(curves, "ci_high", algo)
        assert np.all(low < mean) and np.all(mean < high)  # the seeds differ: a band of non-zero width
        spread = np.array([OFFSET[s] for s in seeds]) - np.mean([OFFSET[s] for s in seeds])
        assert np.all(low >= mean + spread.min()) and np.all(high <= mean + spread.max())  # within the seeds' range
        assert set(column(curves, "n_runs", algo)) == {len(seeds)}

    final = {r["group"]: r for r in read_csv(out / "final_scores.csv")}
    assert list(final) == ["dqn", "ppo"]
    ppo, dqn = final["ppo"], final["dqn"]
    assert (int(ppo["n_runs"]), float(ppo["mean"])) == (3, 23.0)  # last 3 returns of seed s: 19 + OFFSET[s]
    assert float(ppo["std"]) == pytest.approx(np.sqrt(21))          # sample std of 0, 3, 9
    assert float(ppo["iqm"]) == pytest.approx(23.0)                  # 3 runs: trim_mean cuts floor(0.75) = 0
    assert float(dqn["mean"]) == pytest.approx(122.0)                # scores 109, 112, 118, 149
    assert float(dqn["iqm"]) == pytest.approx((112 + 118) / 2)       # the middle two of four
    for r in final.values():
        assert float(r["iqm_ci_low"]) <= float(r["iqm"]) <= float(r["iqm_ci_high"])
    assert "| cartpole | dqn | 4 | 122.00 +- " in (out / "final_scores.md").read_text()

    per_run = read_csv(out / "per_run.csv")
    assert len(per_run) == 7
    assert {(r["algo"], r["seed"], r["steps"], r["episodes"]) for r in per_run} >= {("ppo", "2", "1000", "10")}
    assert [float(r["final_score"]) for r in per_run if r["algo"] == "ppo"] == [19.0, 22.0, 28.0]


def test_x_frames_multiplies_by_frame_skip_and_wall_is_seconds(sweep, tmp_path):
    atari = tmp_path / "atari"
    for seed in (1, 2):
        write_run(atari / f"s{seed}", "dqn", seed, env="breakout", frame_skip=4)
    for axis in X_AXES:
        plot(sweep, atari, "--x", axis, "--out", tmp_path / axis, "--window", BINS)
    for env, frame_skip in (("cartpole", 1), ("breakout", 4)):
        steps, frames, wall = (read_csv(tmp_path / axis / f"learning_curves_{env}.csv") for axis in X_AXES)
        np.testing.assert_allclose(column(frames, "x"), frame_skip * column(steps, "x"))
        np.testing.assert_allclose(column(wall, "x"), SECONDS_PER_STEP * column(steps, "x"))
        for other in (frames, wall):  # the same bins, so the same means
            np.testing.assert_allclose(column(other, "mean"), column(steps, "mean"))


def test_groups_split_by_a_swept_key_and_shorter_runs_drop_out(tmp_path, capsys):
    for seed in (1, 2):
        write_run(tmp_path / "runs" / f"lr3_s{seed}", "ppo", seed, learning_rate=0.001)
    write_run(tmp_path / "runs" / "lr4_s1", "ppo", 1, learning_rate=0.0001)
    write_run(tmp_path / "runs" / "lr4_s2", "ppo", 2, learning_rate=0.0001, steps=EPISODE_STEPS[:5])
    plot(tmp_path / "runs", "--window", BINS)
    assert "ppo algo.learning_rate=0.0001 on cartpole ended at different steps (500 to 1000)" in capsys.readouterr().err
    curves = read_csv(tmp_path / "runs" / "plots" / "learning_curves_cartpole.csv")
    assert sorted({r["group"] for r in curves}) == ["ppo algo.learning_rate=0.0001", "ppo algo.learning_rate=0.001"]
    short = "ppo algo.learning_rate=0.0001"
    n = column(curves, "n_runs", short)
    np.testing.assert_array_equal(n, [2] * 5 + [1] * 5)  # the second seed stopped at step 500
    late = slice(5, None)  # only seed 1 left: its own return, a band of zero width
    np.testing.assert_allclose(column(curves, "mean", short)[late], BASE["ppo"] + EPISODE_STEPS[late] / 100)
    np.testing.assert_allclose(column(curves, "ci_low", short)[late], column(curves, "ci_high", short)[late])


def test_bad_input_is_one_line_exit_2_and_writes_nothing(sweep, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "config.yaml").write_text("seed: 1\n")  # a config.yaml without event files is no run
    cases = {
        (str(tmp_path / "missing"),): "is not a directory",
        (str(sweep), str(empty)): "empty holds no run directory",
        (str(sweep), "--tag", "charts/nope"): "'charts/nope': no run logged it; the runs have: charts/SPS, " + TAG,
        (str(sweep), "--x", "episodes"): "--x 'episodes' is not allowed: expected one of steps, frames, wall",
        (str(sweep), "--window", "0"): "--window 0 is not allowed",
    }
    for args, message in cases.items():
        with pytest.raises(SystemExit) as exc:
            main([*args, "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and err.count("\n") == 1, (args, err)
    assert not (tmp_path / "out").exists() and not (sweep / "plots").exists()


def test_a_real_tiny_ppo_run(make_cfg, tmp_path):
    import torch

    from rlrun.cli.train import run_training

    threads = torch.get_num_threads()
    try:
        run_training(make_cfg("algo=ppo", "env=cartpole", "total_timesteps=2048", "checkpoint.save_replay=false"), tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    plot(tmp_path / "run")
    (row,) = read_csv(tmp_path / "run" / "plots" / "per_run.csv")
    assert (row["algo"], row["env"], row["seed"], row["steps"]) == ("ppo", "cartpole", "1", "2048")
    assert int(row["episodes"]) > 0 and float(row["final_score"]) > 0
    assert (tmp_path / "run" / "plots" / "learning_curves_cartpole.png").read_bytes()[:8] == PNG_MAGIC
