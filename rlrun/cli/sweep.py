"""Sweeps (``rlrun -m ...``): robust jobs, a live summary, and a check of the command before it starts.

Hydra's launchers run the jobs (configs/hydra/launcher/: ``local`` = joblib processes, ``slurm`` and
``submitit_local`` = submitit, ``ray``); Optuna proposes them with ``+hparams_search=...``. This module
adds what a long sweep needs on top of them:

- **A sweep directory that a rerun finds again.** ``outputs/multirun/<sweep_name>``, where the default
  name is ``sweep-<hash>`` of the command's overrides (in any order; the launcher's own settings,
  ``hydra/launcher=...`` and ``hydra.launcher.*``, are left out so that the same sweep can continue
  on another launcher). Rerunning the same command skips the jobs that finished, resumes those that
  were interrupted or failed after a checkpoint, and restarts those that stopped before one
  (:func:`prepare_run_dir`).
- **A status file per job, a summary per sweep.** The Hydra callback :class:`SweepSummary` writes
  ``<run dir>/job_status.json`` when a job starts and ends (in the job's own process, so parallel
  jobs never write the same file) and rebuilds ``<sweep dir>/sweep_summary.csv`` from all of them
  each time (temporary file + rename: a reader never sees half a file). The sweep's process rebuilds
  it once more when it ends, however it ends.
- **Threads.** With ``torch_threads=0``, a job gets its share of the cores (:func:`job_torch_threads`).
- **Preemption.** Under submitit, the preemption signal first makes the run write a checkpoint, then
  submitit requeues the job, and the new job resumes its run directory (:class:`SubmititPreemption`).
- **Bad commands.** :func:`preflight` refuses an unknown key, an unknown option or a launcher whose
  extra is not installed with one line, before anything starts.
"""

from __future__ import annotations

import atexit
import csv
import hashlib
import importlib
import json
import os
import re
import signal
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from rlrun.core.checkpoint import checkpoint_paths
from rlrun.core.events import read_scalars
from rlrun.core.run import Run, RunDirError

STATUS_FILE = "job_status.json"     # in every job's run directory
SUMMARY_FILE = "sweep_summary.csv"  # in the sweep directory
SUMMARY_COLUMNS = ["job", "run_dir", "status", "overrides", "seed", "final_return", "best_return", "steps",
                   "wall_time_s", "torch_threads", "error"]
RUNNING, FINISHED, FAILED, SKIPPED = "running", "finished", "failed", "skipped"  # a job's status
DONE = (FINISHED, SKIPPED)          # statuses of a job whose run is complete
SKIP, RESUME, NEW = "skip", "resume", "new"  # what a job does with its run directory (prepare_run_dir)
SWEEP_HASH_CHARS = 10               # hex digits of SHA-1 in a default sweep name (a clash needs ~10^6 sweeps)
SWEEP_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # sweep_name: one plain directory name
LAUNCHER_KEYS = ("hydra/launcher", "hydra.launcher")  # overrides that do not change which sweep it is
EXIT_BAD_SWEEP = 2                  # exit status when the sweep command is refused (as for a bad config)

JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SUBMITIT_LAUNCHERS = ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                      "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher")
RAY_LAUNCHER = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
PLUGIN_EXTRAS = {  # Hydra plugin package -> the rlrun extra that installs it
    "hydra_plugins.hydra_joblib_launcher": "local",
    "hydra_plugins.hydra_submitit_launcher": "slurm",
    "hydra_plugins.hydra_ray_launcher": "ray",
    "hydra_plugins.hydra_optuna_sweeper": "tune",
}
PLUGIN_CONFIGS = {  # configs that only exist when their plugin is installed -> the extra to install
    "hydra/sweeper/optuna": "tune", "hydra/launcher/joblib": "local", "hydra/launcher/submitit_slurm": "slurm",
}
HYDRA_DETAIL_LINES = ("full_key:", "object_type=", "reference_type=")  # OmegaConf's details under an error
HYDRA_SEARCH_PATH_LINE = "Config search path"  # Hydra's listing of where it looked, after an error


# ---- the sweep directory -----------------------------------------------------------------------

def default_sweep_name(task_overrides: list[str], hydra_overrides: list[str] = ()) -> str:
    """``sweep-<hash>``: the first SWEEP_HASH_CHARS hex digits of the SHA-1 of the sorted overrides,
    without ``sweep_name=`` and the launcher's settings (LAUNCHER_KEYS).

    The same command, its overrides in any order, gives the same name; any other override, a swept
    value or an Optuna setting (``hydra.sweeper.*``) included, gives another.
    """
    kept = sorted(str(o) for o in [*task_overrides, *hydra_overrides]
                  if not str(o).startswith(("sweep_name=", *LAUNCHER_KEYS, *(f"+{k}" for k in LAUNCHER_KEYS))))
    return "sweep-" + hashlib.sha1("\n".join(kept).encode()).hexdigest()[:SWEEP_HASH_CHARS]


def _sweep_name_resolver(name: Any, task_overrides: ListConfig, hydra_overrides: ListConfig) -> str:
    """``${rlrun_sweep_name:${sweep_name},${hydra.overrides.task},${hydra.overrides.hydra}}``.

    Cached: Hydra copies the sweep process's resolver cache into every job's config, so a job gets
    its sweep's name although its own ``hydra.overrides.task`` holds only its values (as with ``now``).
    """
    if name is None or name == "":
        return default_sweep_name(list(task_overrides), list(hydra_overrides))
    check_sweep_name(name)
    return str(name)


def check_sweep_name(name: Any) -> None:
    """Raise ValueError unless ``name`` (the sweep_name key) is null or one plain directory name."""
    if name is not None and not SWEEP_NAME_PATTERN.fullmatch(str(name)):
        raise ValueError(f"sweep_name={name!r} is not allowed: expected one directory name of letters, digits, "
                         "'.', '_' and '-' (or null)")


if not OmegaConf.has_resolver("rlrun_sweep_name"):
    OmegaConf.register_new_resolver("rlrun_sweep_name", _sweep_name_resolver, use_cache=True)

# configs/hydra/launcher/{ray,submitit_local}.yaml have the names of the plugins' own configs on purpose
# (the plugins' usual command, and rlrun's one-line error when a plugin is missing). Hydra validates
# them against the plugin's schema and says so in a deprecation warning, in the sweep's process and
# in every job's (which imports this module with the task function): it is not news to the user.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema")


# ---- threads -------------------------------------------------------------------------------------

def job_torch_threads(launcher: DictConfig) -> int | None:
    """torch threads for one job of a sweep run by ``launcher`` (the ``hydra.launcher`` config), or
    None (the basic launcher runs one job at a time: keep torch's default, one thread per core).

    - joblib (``local``): cores // jobs at once, where ``n_jobs=-k`` means cores + 1 - k jobs at once
      (joblib's convention, cores as ``joblib.cpu_count()`` counts them) and at least 1;
    - submitit (``slurm``, ``submitit_local``): ``cpus_per_task``, 1 when unset (SLURM's default);
    - Ray: ``ray.remote.num_cpus``, 1 when unset (Ray's default for a task).
    """
    target = str(launcher.get("_target_", ""))
    if target == JOBLIB_LAUNCHER:
        from joblib import cpu_count

        cores, n_jobs = cpu_count(), int(launcher.get("n_jobs") or 1)
        parallel = n_jobs if n_jobs > 0 else max(cores + 1 + n_jobs, 1)
        return max(cores // parallel, 1)
    if target in SUBMITIT_LAUNCHERS:
        return int(launcher.get("cpus_per_task") or 1)
    if target == RAY_LAUNCHER:
        return int(OmegaConf.select(launcher, "ray.remote.num_cpus", default=None) or 1)
    return None


def is_submitit(launcher: DictConfig) -> bool:
    """True when ``launcher`` (the ``hydra.launcher`` config) is one of submitit's."""
    return str(launcher.get("_target_", "")) in SUBMITIT_LAUNCHERS


# ---- job status files and the summary -------------------------------------------------------------

def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file in the same directory and a rename."""
    tmp = path.with_name(f".tmp_{path.name}.{socket.gethostname()}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The job status in ``run_dir/job_status.json``, or None if there is none (or it is unreadable)."""
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def run_results(run_dir: Path, episodes: int) -> tuple[float | None, int]:
    """(best return, steps done) of the run in ``run_dir``.

    best return: the highest mean raw return over ``episodes`` consecutive episodes
    (``logging.metric_episodes``; over all episodes when fewer ended), from the TensorBoard tag
    charts/episodic_return; None if no episode ended. The run's final metric is the last such mean,
    so best >= final. steps done: the step of the newest checkpoint (the work a rerun keeps), 0 if none.
    """
    paths = checkpoint_paths(run_dir)
    steps = int(paths[-1].stem.split("_")[1]) if paths else 0
    try:  # read_scalars keeps tensorboard's own logging quiet
        returns = np.array([v for _, v, _ in read_scalars(run_dir).get("charts/episodic_return", [])])
    except FileNotFoundError:
        return None, steps
    if returns.size == 0:
        return None, steps
    window = min(episodes, returns.size)
    sums = np.convolve(returns, np.ones(window), mode="valid")  # sums of every `window` consecutive returns
    return float(sums.max() / window), steps


def write_summary(sweep_dir: Path) -> Path:
    """Rebuild ``sweep_dir/sweep_summary.csv`` from the jobs' status files, one row per job in job order.

    Columns (SUMMARY_COLUMNS): job number, run directory (relative to the sweep dir), status
    (running, finished, failed, skipped), the job's overrides, seed, final return (the job's metric:
    the mean raw return of its last ``logging.metric_episodes`` episodes), best return (see
    :func:`run_results`), steps done, wall time in seconds (every attempt: one killed without ending
    counts up to its newest checkpoint, a running one up to now), the torch threads the job used,
    and a failed job's error. Written atomically (temporary file + rename).
    """
    rows = []
    for path in sorted(Path(sweep_dir).glob(f"*/{STATUS_FILE}")):
        status = read_status(path.parent)
        if status is None:
            continue
        wall = status.get("wall_time_s") or 0.0
        if status.get("status") == RUNNING and status.get("started"):
            wall += time.time() - status["started"]
        values = {**status, "run_dir": path.parent.name, "overrides": " ".join(status.get("overrides", [])),
                  "wall_time_s": round(wall, 1)}
        rows.append([("" if values.get(c) is None else values.get(c)) for c in SUMMARY_COLUMNS])
    rows.sort(key=lambda row: (int(row[0]) if str(row[0]).isdigit() else sys.maxsize, row[1]))
    out = Path(sweep_dir) / SUMMARY_FILE
    tmp = out.with_name(f".tmp_{SUMMARY_FILE}.{socket.gethostname()}.{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SUMMARY_COLUMNS)
        writer.writerows(rows)
    os.replace(tmp, out)
    return out


def prepare_run_dir(run_dir: Path, overrides: list[str]) -> str:
    """Decide what a sweep job does with its run directory, from the status an earlier attempt left.

    Returns SKIP (it finished before), RESUME (it has a checkpoint: it was interrupted, preempted or
    failed after one) or NEW. A directory whose earlier attempt of this job stopped before its first
    checkpoint is emptied (all but the status file) and the job starts again; files that no earlier
    attempt made are left alone (the Run then refuses the directory).

    Raises:
        RunDirError: if the directory holds the run of a job with other overrides (the sweep directory
            was reused for another sweep, e.g. with the same sweep_name).
    """
    status = read_status(run_dir)
    if status is not None and sorted(status.get("overrides", [])) != sorted(overrides):
        raise RunDirError(f"{run_dir} holds the job {' '.join(status.get('overrides', []))!r}, not "
                          f"{' '.join(overrides)!r}: this sweep directory belongs to another sweep; "
                          "pass another sweep_name=...")
    if status is not None and status.get("status") in DONE:
        return SKIP
    if checkpoint_paths(run_dir):
        return RESUME
    earlier_attempt = status is not None and (status.get("status") != RUNNING or status.get("attempt", 1) > 1)
    if earlier_attempt:  # (SweepSummary.on_job_start has already marked this attempt as running)
        for path in Path(run_dir).iterdir():
            if path.name != STATUS_FILE:
                _remove(path)
    return NEW


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _remove(child)
        path.rmdir()
    else:
        path.unlink()


def _is_multirun(config: DictConfig) -> bool:
    return OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN


def _error_line(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class SweepSummary(Callback):
    """Hydra callback (``hydra.callbacks.sweep_summary`` in configs/config.yaml) that keeps
    ``job_status.json`` in every job's run directory and ``sweep_summary.csv`` in the sweep directory.

    on_job_start and on_job_end run in the job's own process (a joblib worker, a SLURM job, a Ray
    worker); each writes only its job's status file and then rebuilds the summary from all of them,
    so parallel jobs need no lock. The sweep's own process rebuilds it a last time at the end of the
    multirun, or when it exits after a failed job or Ctrl-C (then on_multirun_end never runs), and
    prints a one-line count. Single runs are left alone.
    """

    def __init__(self) -> None:
        self._sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._sweep_dir = Path(str(config.hydra.sweep.dir))
        atexit.register(self._finish)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self._finish)
        self._finish()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return
        run_dir, overrides = Path(config.hydra.runtime.output_dir), list(config.hydra.overrides.task)
        prior = read_status(run_dir)
        if prior is not None and sorted(prior.get("overrides", [])) != sorted(overrides):
            return  # another sweep's job: leave its record alone (the job itself refuses the directory)
        if prior is not None and prior.get("status") in DONE:
            status = {**prior, "status": SKIPPED}
        else:
            prior = prior or {}
            paths = checkpoint_paths(run_dir)
            wall = prior.get("wall_time_s") or 0.0
            if prior.get("status") == RUNNING and prior.get("started") and paths:
                wall += max(paths[-1].stat().st_mtime - prior["started"], 0.0)  # killed: count up to its checkpoint
            status = {"job": int(config.hydra.job.num), "overrides": overrides, "seed": config.get("seed"),
                      "status": RUNNING, "final_return": None, "best_return": None,
                      "steps": int(paths[-1].stem.split("_")[1]) if paths else 0, "wall_time_s": wall,
                      "torch_threads": None, "error": None, "attempt": prior.get("attempt", 0) + 1,
                      "host": socket.gethostname(), "pid": os.getpid()}
        status["started"] = time.time()
        write_json_atomic(run_dir / STATUS_FILE, status)
        write_summary(run_dir.parent)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return
        import torch

        run_dir, overrides = Path(config.hydra.runtime.output_dir), list(config.hydra.overrides.task)
        status = read_status(run_dir)
        if status is not None and sorted(status.get("overrides", [])) == sorted(overrides) \
                and status["status"] == RUNNING:
            status["wall_time_s"] = (status.get("wall_time_s") or 0.0) + time.time() - status["started"]
            status["best_return"], status["steps"] = run_results(run_dir, int(config.logging.metric_episodes))
            status["torch_threads"] = torch.get_num_threads()
            if job_return.status == JobStatus.COMPLETED:
                metric = job_return.return_value
                status["status"], status["final_return"] = FINISHED, None if metric is None else float(metric)
            else:
                try:
                    job_return.return_value  # a failed job's return value raises its exception
                except Exception as exc:
                    status["status"], status["error"] = FAILED, _error_line(exc)
            write_json_atomic(run_dir / STATUS_FILE, status)
        write_summary(run_dir.parent)

    def _finish(self) -> None:
        sweep_dir = self._sweep_dir
        if sweep_dir is None or not sweep_dir.is_dir():
            return
        if not list(sweep_dir.glob(f"*/{STATUS_FILE}")):
            if [p.name for p in sweep_dir.iterdir()] == ["multirun.yaml"]:
                _remove(sweep_dir)  # refused before any job started: leave nothing behind
            return
        path = write_summary(sweep_dir)
        with open(path, newline="") as f:
            statuses = [row["status"] for row in csv.DictReader(f)]
        counts = ", ".join(f"{statuses.count(s)} {s}" for s in (FINISHED, SKIPPED, FAILED, RUNNING)
                           if statuses.count(s))
        print(f"rlrun: sweep of {len(statuses)} jobs: {counts}; summary in {path}", flush=True)


# ---- preemption under submitit ---------------------------------------------------------------------

class SubmititPreemption:
    """Under a submitit launcher: the preemption signal first stops the run with a checkpoint, then
    submitit requeues the job.

    submitit (``slurm``, ``submitit_local``) sends its preemption signal (USR2 unless the environment
    variable SUBMITIT_PREEMPT_SIGNAL names another) when SLURM preempts a job and ``signal_delay_s``
    before its time limit; its own handler requeues the job at once (Hydra's launcher resubmits the
    same job) and exits. This class takes the signal first: while a Run is open, the run is asked to
    stop as on SIGTERM (it writes a checkpoint and returns), and the caller then calls
    :meth:`requeue`; without an open run, submitit's handler runs right away. The requeued job finds
    its run directory with a checkpoint and resumes it (:func:`prepare_run_dir`).
    Install it in the job's main thread, before the Run is opened.
    """

    def __init__(self) -> None:
        from submitit import JobEnvironment

        self.signum = JobEnvironment._usr_sig()  # submitit's own choice of signal
        self._submitit_handler: Callable[..., Any] | Any = signal.getsignal(self.signum)
        self.received = False
        signal.signal(self.signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.received = True
        stop = signal.getsignal(signal.SIGTERM)  # an open Run's handler: checkpoint and stop
        if isinstance(getattr(stop, "__self__", None), Run):
            print(f"rlrun: preemption signal {signal.Signals(signum).name} from submitit: checkpointing, "
                  "then requeueing", file=sys.stderr, flush=True)
            stop(signum, frame)
        else:
            self.requeue()

    def requeue(self) -> None:
        """Let submitit requeue this job; its handler exits the process (SystemExit)."""
        if callable(self._submitit_handler):
            self._submitit_handler(self.signum, None)


# ---- checking a sweep command before it starts ------------------------------------------------------

def one_line(exc: BaseException) -> str:
    """Hydra's composition error (and its cause) as one line, without OmegaConf's detail lines."""
    text = str(exc)
    if exc.__cause__ is not None and str(exc.__cause__) not in text:
        text += "\n" + str(exc.__cause__)
    lines = []
    for line in (raw.strip() for raw in text.splitlines()):
        if line.startswith(HYDRA_SEARCH_PATH_LINE):
            break  # the listing that follows is about rlrun's install, not about the command
        if line and not line.startswith(HYDRA_DETAIL_LINES):
            lines.append(line)
    message = " ".join(lines)
    for config, extra in PLUGIN_CONFIGS.items():
        if f"'{config}'" in message:
            message += f" (install its plugin: pip install \"rlrun[{extra}]\")"
    return message


def sweep_variants(overrides: list[str]) -> list[list[str]]:
    """Override lists that together use every value of every swept key once: the first values of all
    sweeps, then each other value of each sweep with the first values of the rest. Composing them
    finds any key or option that does not exist, without composing every combination.
    Interval sweeps (Optuna's ``interval(a, b)``) contribute their lower end.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    values: list[list[str]] = []
    for o in parsed:
        key = o.get_key_element()
        if o.is_discrete_sweep():
            try:
                values.append([f"{key}={v}" for v in o.sweep_string_iterator()])
            except Exception:  # a glob over a group's options: Hydra expands it itself
                values.append([])
        elif o.is_interval_sweep():
            values.append([f"{key}={o.value().start}"])
        else:
            values.append([o.input_line])
    first = [v[0] for v in values if v]
    variants = [first]
    for i, vals in enumerate(values):
        for v in vals[1:]:
            variants.append([v if j == i else f for j, f in enumerate(first)])
    return variants


def preflight(overrides: list[str]) -> None:
    """Check a sweep command (``rlrun -m <overrides>``) before anything starts; on a problem print one
    line ``rlrun: invalid sweep: ...`` to stderr and exit with status EXIT_BAD_SWEEP.

    Refused: a key or a config option that does not exist in any of the sweep's jobs (Hydra would
    refuse it too, over several lines), a launcher or sweeper whose plugin is not installed (the
    line names the pip extra, e.g. ``pip install "rlrun[ray]"``), and a sweep_name that is not one
    plain directory name. Values are checked by each job (a bad one fails that job only).
    """
    from hydra import compose, initialize_config_module

    try:
        variants = sweep_variants(overrides)
    except Exception:
        return  # a syntax error: Hydra reports it with its position in the override
    with initialize_config_module(version_base="1.3", config_module="rlrun.configs"):
        for variant in variants:
            try:
                cfg = compose("config", overrides=variant, return_hydra_config=True)
            except Exception as exc:
                _refuse(one_line(exc))
            if variant is variants[0]:
                try:
                    check_sweep_name(cfg.get("sweep_name"))
                except ValueError as exc:
                    _refuse(str(exc))
                for group in ("launcher", "sweeper"):
                    _check_plugin(cfg, group)


def _check_plugin(cfg: DictConfig, group: str) -> None:
    target = str(OmegaConf.select(cfg, f"hydra.{group}._target_", default=""))
    module = target.rpartition(".")[0]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        choice = OmegaConf.select(cfg, f"hydra.runtime.choices.hydra/{group}", default=None) or target
        extra = next((e for package, e in PLUGIN_EXTRAS.items() if module.startswith(package)), None)
        install = f'pip install "rlrun[{extra}]"' if extra else f"install the package that provides {module}"
        _refuse(f"hydra/{group}={choice} needs a plugin that is not installed ({exc}): {install}")


def _refuse(message: str) -> None:
    print(f"rlrun: invalid sweep: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_BAD_SWEEP)
