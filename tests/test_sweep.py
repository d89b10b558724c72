"""Sweeps: real `rlrun -m` runs of tiny CartPole jobs through Hydra's launchers and Optuna, failed,
skipped and preempted jobs, sweep_summary.csv, bad sweep commands; and the helpers of rlrun.cli.sweep.

The real sweeps run several rlrun processes each and are marked slow."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from rlrun.cli import sweep
from rlrun.core.run import RunDirError

# PPO on CartPole, 4 envs x 32 steps per rollout: 1000 steps are 7 rollouts = 896 steps
TINY = ["algo=ppo", "env=cartpole", "total_timesteps=1000", "algo.num_steps=32"]
TINY_STEPS = 896
LOCAL_TWO_WORKERS = ["hydra/launcher=local", "hydra.launcher.n_jobs=2"]


@pytest.fixture(scope="session")
def rlrun(cli):
    """conftest's rlrun, but leaving torch_threads to the sweep (each job's share of the cores)."""
    def _run(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
        return cli("rlrun", *args, cwd=cwd, timeout=timeout, one_thread=False)

    return _run


def only_sweep_dir(cwd: Path) -> Path:
    dirs = list((cwd / "outputs" / "multirun").iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def read_summary(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / sweep.SUMMARY_FILE, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == sweep.SUMMARY_COLUMNS
        return list(reader)


def run_files(sweep_dir: Path) -> dict[Path, int]:
    """The files of a sweep's runs with their modification times (not the sweep's bookkeeping files)."""
    return {p.relative_to(sweep_dir): p.stat().st_mtime_ns for p in sweep_dir.glob("*/**/*")
            if p.is_file() and p.name != sweep.STATUS_FILE}


def printed_metrics(stdout: str) -> list[float]:
    return sorted(float(m) for m in re.findall(r"rlrun: done, mean return of the last \d+ episodes: ([\d.]+)", stdout))


def importable(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


# ---- launchers -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_sweep(rlrun, tmp_path_factory):
    """4 jobs (seed=1,2,3,4) through the joblib launcher with 2 workers: (cwd, sweep dir, output,
    summary rows and the run directories' files right after it)."""
    cwd = tmp_path_factory.mktemp("local")
    out = rlrun("-m", *LOCAL_TWO_WORKERS, *TINY, "seed=1,2,3,4", cwd=cwd)
    assert out.returncode == 0, out.stderr
    sweep_dir = only_sweep_dir(cwd)
    return cwd, sweep_dir, out, read_summary(sweep_dir), run_files(sweep_dir)


@pytest.mark.slow
def test_local_launcher_runs_four_jobs_into_four_run_dirs_and_a_summary(local_sweep):
    _, sweep_dir, out, rows, _ = local_sweep
    assert re.fullmatch(r"sweep-[0-9a-f]{10}", sweep_dir.name) and sweep_dir.parent.name == "multirun"
    run_dirs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert run_dirs == [f"{i}_ppo_cartpole_s{i + 1}" for i in range(4)]
    for name in run_dirs:
        assert (sweep_dir / name / "checkpoints" / f"step_{TINY_STEPS:012d}.pt").is_file()
        assert list((sweep_dir / name).glob("events.out.tfevents.*"))
    assert [r["status"] for r in rows] == ["finished"] * 4
    assert [r["run_dir"] for r in rows] == run_dirs and [r["seed"] for r in rows] == ["1", "2", "3", "4"]
    assert all(r["overrides"].endswith(f"seed={r['seed']}") and "algo=ppo" in r["overrides"] for r in rows)
    finals = [float(r["final_return"]) for r in rows]
    assert sorted(round(f, 2) for f in finals) == printed_metrics(out.stdout)  # the metric each job returned
    assert all(8 <= f <= 500 for f in finals)  # CartPole-v1 episodes last 8 to 500 steps
    assert all(float(r["best_return"]) >= float(r["final_return"]) for r in rows)
    assert all(int(r["steps"]) == TINY_STEPS and float(r["wall_time_s"]) > 0 and r["error"] == "" for r in rows)
    # torch_threads=0: each of the 2 parallel jobs gets half of the cores
    from joblib import cpu_count

    assert {int(r["torch_threads"]) for r in rows} == {max(cpu_count() // 2, 1)}
    pids = {json.loads((sweep_dir / name / sweep.STATUS_FILE).read_text())["pid"] for name in run_dirs}
    assert len(pids) <= 2  # two worker processes at most
    assert "rlrun: sweep of 4 jobs: 4 finished; summary in" in out.stdout


@pytest.mark.slow
def test_rerunning_the_same_sweep_skips_every_finished_job(local_sweep, rlrun):
    cwd, sweep_dir, _, rows, files = local_sweep
    # the same command, its overrides in another order and with another worker count
    out = rlrun("-m", "seed=1,2,3,4", *reversed(TINY), "hydra/launcher=local", "hydra.launcher.n_jobs=1", cwd=cwd)
    assert out.returncode == 0, out.stderr
    assert only_sweep_dir(cwd) == sweep_dir
    assert run_files(sweep_dir) == files  # no new run dir, checkpoint or event file; nothing rewritten
    assert out.stdout.count("it finished in an earlier run of this sweep") == 4
    assert "rlrun: done" not in out.stdout
    again = read_summary(sweep_dir)
    assert [r["status"] for r in again] == ["skipped"] * 4
    assert [r["final_return"] for r in again] == [r["final_return"] for r in rows]


@pytest.mark.slow
def test_submitit_local_launcher_runs_jobs_with_one_thread_per_cpu_of_the_task(tmp_path, rlrun):
    out = rlrun("-m", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1", *TINY, "seed=1,2,3,4",
                "sweep_name=sub", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    sweep_dir = tmp_path / "outputs" / "multirun" / "sub"
    rows = read_summary(sweep_dir)
    assert [(r["run_dir"], r["status"], r["torch_threads"]) for r in rows] == [
        (f"{i}_ppo_cartpole_s{i + 1}", "finished", "1") for i in range(4)]
    assert all(int(r["steps"]) == TINY_STEPS for r in rows)
    assert len(list((sweep_dir / ".submitit").glob("*/*_log.out"))) == 4  # submitit's per-job logs
    assert "validated against ConfigStore schema" not in out.stderr


def test_slurm_preset_becomes_an_sbatch_script_with_its_resources(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", staticmethod(lambda: 1))  # pretend srun exists
    with initialize_config_module(version_base="1.3", config_module="rlrun.configs"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                           "hydra.launcher.gpus_per_node=1"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher)
    assert params["_target_"] == sweep.SUBMITIT_LAUNCHERS[0]
    # what the plugin's SlurmLauncher.launch does with its parameters
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm", slurm_max_num_timeout=params["max_num_timeout"])
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in generic else f"slurm_{k}": v for k, v in params.items()
                                  if k not in ("_target_", "submitit_folder", "max_num_timeout", "name")})
    script = executor._executor._make_submission_file_text("rlrun", "uid")
    for line in ["--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=4", "--time=1440", "--mem=16GB",
                 f"--signal={submitit.JobEnvironment._usr_sig().name.removeprefix('SIG')}@120"]:
        assert f"#SBATCH {line}\n" in script, line


@pytest.mark.skipif(not importable("ray", "hydra_plugins.hydra_ray_launcher"),
                    reason='the Ray launcher is not installed (pip install "rlrun[ray]")')
@pytest.mark.slow
def test_ray_launcher_runs_jobs_on_a_local_ray(tmp_path, rlrun):
    out = rlrun("-m", "hydra/launcher=ray", *TINY, "seed=1,2", "sweep_name=ray", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = read_summary(tmp_path / "outputs" / "multirun" / "ray")
    assert [(r["status"], r["torch_threads"], r["steps"]) for r in rows] == [("finished", "1", str(TINY_STEPS))] * 2


# ---- robustness ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_next_job_still_runs(tmp_path, rlrun):
    # cuda:99 is no device on any machine: that job is refused (validation names the devices there are)
    out = rlrun("-m", *TINY, "seed=1", "device=cuda:99,cpu", "sweep_name=fail", cwd=tmp_path)
    assert out.returncode == 1  # the sweep reports that a job failed
    sweep_dir = tmp_path / "outputs" / "multirun" / "fail"
    failed, finished = read_summary(sweep_dir)
    assert failed["status"] == "failed" and "device='cuda:99' is not allowed" in failed["error"]
    assert failed["final_return"] == ""
    assert not (sweep_dir / failed["run_dir"] / "config.yaml").exists()  # refused before the run opened
    assert finished["status"] == "finished" and int(finished["steps"]) == TINY_STEPS
    assert out.stdout.strip().splitlines()[-1].startswith("rlrun: sweep of 2 jobs: 1 finished, 1 failed")


@pytest.mark.slow
def test_a_preempted_submitit_job_checkpoints_requeues_and_resumes(tmp_path, cli_argv):
    total = 20000
    proc = subprocess.Popen(cli_argv("rlrun", "-m", "hydra/launcher=submitit_local", *TINY, f"total_timesteps={total}",
                                     "checkpoint.interval=1000", "seed=1", "sweep_name=pre", one_thread=False),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "outputs" / "multirun" / "pre" / "0_ppo_cartpole_s1"
    deadline = time.time() + 120
    while not list((run_dir / "checkpoints").glob("step_*.pt")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    os.kill(json.loads((run_dir / sweep.STATUS_FILE).read_text())["pid"], signal.SIGUSR2)  # submitit's signal
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    [row] = read_summary(run_dir.parent)
    assert row["status"] == "finished" and int(row["steps"]) == total // 128 * 128
    status = json.loads((run_dir / sweep.STATUS_FILE).read_text())
    assert status["attempt"] == 2  # requeued once
    resumed = (run_dir / "resumes.log").read_text()
    step = int(re.search(r"at step (\d+)", resumed).group(1))
    assert 0 < step < total  # the preempted job wrote a checkpoint that the requeued job resumed from


# ---- Optuna -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_optuna_preset_runs_three_trials_and_writes_the_best_parameters(tmp_path, rlrun):
    out = rlrun("-m", "+hparams_search=ppo_cartpole", "hydra.sweeper.n_trials=3", *TINY[2:], "torch_threads=1",
                cwd=tmp_path)  # one thread per trial: they run one after the other
    assert out.returncode == 0, out.stderr
    sweep_dir = only_sweep_dir(tmp_path)
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna" and set(best["best_params"]) == {
        "algo.learning_rate", "algo.ent_coef", "algo.clip_coef", "algo.gae_lambda", "algo.gamma",
        "algo.num_minibatches", "algo.update_epochs"}
    assert 1e-4 <= best["best_params"]["algo.learning_rate"] <= 3e-3
    rows = read_summary(sweep_dir)
    assert [r["status"] for r in rows] == ["finished"] * 3
    assert best["best_value"] == max(float(r["final_return"]) for r in rows)  # maximized, the jobs' own metric
    assert len({r["overrides"] for r in rows}) == 3


@pytest.mark.parametrize("preset", ["ppo_cartpole", "dqn_cartpole"])
def test_optuna_presets_search_keys_that_exist(preset):
    with initialize_config_module(version_base="1.3", config_module="rlrun.configs"):
        cfg = compose("config", overrides=[f"+hparams_search={preset}"], return_hydra_config=True)
    assert cfg.algo.name == preset.split("_")[0] and cfg.env.name == "cartpole"
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.hydra.sweeper.sampler.seed is not None
    params = cfg.hydra.sweeper.params
    assert len(params) >= 5
    for key in params:
        assert OmegaConf.select(cfg, key, default="missing") != "missing", key


# ---- bad sweep commands -----------------------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (["algo.learning_rat=1e-3,3e-4"], "Could not override 'algo.learning_rat'"),
    (["algo=dqn,ppoo"], "Could not find 'algo/ppoo'"),
    (["algo=dqn,ppo", "algo.clip_coef=0.1"], "Could not override 'algo.clip_coef'"),  # no such key in dqn's jobs
    (["sweep_name=../elsewhere"], "sweep_name='../elsewhere' is not allowed"),
])
def test_a_bad_sweep_command_ends_with_one_line_before_any_job(tmp_path, args, expected, rlrun):
    out = rlrun("-m", "env=cartpole", "seed=1,2", *args, cwd=tmp_path)
    assert out.returncode == sweep.EXIT_BAD_SWEEP
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert out.stderr.startswith("rlrun: invalid sweep: ") and expected in out.stderr, out.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.skipif(importable("hydra_plugins.hydra_ray_launcher"), reason="the ray extra is installed here")
def test_a_launcher_whose_extra_is_missing_names_the_pip_extra(tmp_path, rlrun):
    out = rlrun("-m", "hydra/launcher=ray", *TINY, "seed=1,2", cwd=tmp_path)
    assert out.returncode == sweep.EXIT_BAD_SWEEP
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("rlrun: invalid sweep: hydra/launcher=ray needs a plugin that is not installed")
    assert line.endswith('pip install "rlrun[ray]"')
    assert not (tmp_path / "outputs").exists()


# ---- helpers ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("launcher, threads", [
    ({"_target_": sweep.JOBLIB_LAUNCHER, "n_jobs": 2}, 4),
    ({"_target_": sweep.JOBLIB_LAUNCHER, "n_jobs": 3}, 2),
    ({"_target_": sweep.JOBLIB_LAUNCHER, "n_jobs": -1}, 1),   # one job per core
    ({"_target_": sweep.JOBLIB_LAUNCHER, "n_jobs": -5}, 2),   # 8 + 1 - 5 = 4 jobs at once
    ({"_target_": sweep.SUBMITIT_LAUNCHERS[0], "cpus_per_task": 6}, 6),
    ({"_target_": sweep.SUBMITIT_LAUNCHERS[1], "cpus_per_task": None}, 1),
    ({"_target_": sweep.RAY_LAUNCHER, "ray": {"init": {"address": None}, "remote": {"num_cpus": 3}}}, 3),
    ({"_target_": sweep.RAY_LAUNCHER, "ray": {"init": {"address": None}, "remote": {}}}, 1),
    ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, None),
])
def test_torch_threads_are_a_jobs_share_of_the_cores(monkeypatch, launcher, threads):
    import joblib

    monkeypatch.setattr(joblib, "cpu_count", lambda: 8)
    assert sweep.job_torch_threads(OmegaConf.create(launcher)) == threads


def test_the_default_sweep_name_depends_on_the_command_not_on_order_or_launcher():
    name = sweep.default_sweep_name(["seed=1,2", "algo=ppo"], ["hydra/launcher=local", "hydra.launcher.n_jobs=2",
                                                              "hydra.mode=MULTIRUN"])
    assert re.fullmatch(r"sweep-[0-9a-f]{10}", name)
    assert name == sweep.default_sweep_name(["algo=ppo", "seed=1,2", "sweep_name=x"], ["hydra.mode=MULTIRUN"])
    assert name != sweep.default_sweep_name(["algo=ppo", "seed=1,2,3"], ["hydra.mode=MULTIRUN"])
    assert name != sweep.default_sweep_name(["algo=ppo", "seed=1,2"], ["hydra.mode=MULTIRUN",
                                                                       "hydra.sweeper.n_trials=5"])


def make_job_dir(path: Path, status: str | None, overrides: list[str], checkpoint_step: int | None,
                 attempt: int = 1) -> Path:
    (path / "checkpoints").mkdir(parents=True)
    (path / "config.yaml").write_text("seed: 1\n")
    if checkpoint_step is not None:
        (path / "checkpoints" / f"step_{checkpoint_step:012d}.pt").write_bytes(b"")
    if status is not None:
        sweep.write_json_atomic(path / sweep.STATUS_FILE, {"status": status, "overrides": overrides,
                                                           "attempt": attempt})
    return path


def test_a_rerun_job_is_skipped_resumed_or_started_again_from_its_status(tmp_path):
    ov = ["seed=1", "algo=ppo"]
    assert sweep.prepare_run_dir(make_job_dir(tmp_path / "a", "finished", ov, 500), ov) == sweep.SKIP
    assert sweep.prepare_run_dir(make_job_dir(tmp_path / "b", "skipped", ov, 500), ov[::-1]) == sweep.SKIP
    assert sweep.prepare_run_dir(make_job_dir(tmp_path / "c", "running", ov, 500), ov) == sweep.RESUME
    assert sweep.prepare_run_dir(make_job_dir(tmp_path / "d", "failed", ov, 500), ov) == sweep.RESUME
    killed_early = make_job_dir(tmp_path / "e", "running", ov, None, attempt=2)  # attempt 1 left no checkpoint
    assert sweep.prepare_run_dir(killed_early, ov) == sweep.NEW
    assert [p.name for p in killed_early.iterdir()] == [sweep.STATUS_FILE]  # emptied for a fresh start
    not_ours = make_job_dir(tmp_path / "g", "running", ov, None, attempt=1)  # a first attempt found these files
    assert sweep.prepare_run_dir(not_ours, ov) == sweep.NEW
    assert (not_ours / "config.yaml").is_file()  # left alone: the Run refuses the directory
    with pytest.raises(RunDirError, match="belongs to another sweep"):
        sweep.prepare_run_dir(make_job_dir(tmp_path / "f", "finished", ["seed=2"], 500), ov)
    assert sweep.prepare_run_dir(tmp_path / "new", ov) == sweep.NEW


def test_best_return_is_the_best_mean_over_metric_episodes_and_steps_the_newest_checkpoint(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path))
    for step, ret in enumerate([10.0, 30.0, 50.0, 20.0, 0.0]):
        writer.add_scalar("charts/episodic_return", ret, step)
    writer.close()
    (tmp_path / "checkpoints").mkdir()
    for step in (256, 1024):
        (tmp_path / "checkpoints" / f"step_{step:012d}.pt").write_bytes(b"")
    assert sweep.run_results(tmp_path, episodes=2) == (40.0, 1024)   # (30 + 50) / 2
    assert sweep.run_results(tmp_path, episodes=100) == (22.0, 1024)  # fewer episodes than the window: all
    assert sweep.run_results(tmp_path / "checkpoints", episodes=2) == (None, 0)  # no event file, no checkpoint


def test_the_summary_is_rebuilt_from_the_status_files_in_job_order(tmp_path):
    for job, status in [(10, {"status": "running", "wall_time_s": 5.0, "started": time.time() - 60}),
                        (2, {"status": "finished", "final_return": 21.5, "wall_time_s": 3.0})]:
        run_dir = tmp_path / f"{job}_ppo_cartpole_s1"
        run_dir.mkdir()
        sweep.write_json_atomic(run_dir / sweep.STATUS_FILE, {"job": job, "overrides": ["seed=1", f"x={job}"],
                                                              "seed": 1, **status})
    rows = read_summary(sweep.write_summary(tmp_path).parent)
    assert [(r["job"], r["status"], r["overrides"]) for r in rows] == [("2", "finished", "seed=1 x=2"),
                                                                       ("10", "running", "seed=1 x=10")]
    assert rows[0]["final_return"] == "21.5" and rows[0]["best_return"] == ""
    assert float(rows[1]["wall_time_s"]) >= 65  # a running job's time so far
    assert not list(tmp_path.glob(".tmp_*"))
