"""The ``rlrun`` command: compose the config with Hydra, validate it, open the Run, dispatch.

    rlrun algo=dqn env=breakout seed=3
    rlrun --cfg job                       # print the composed config
    rlrun -m algo.learning_rate=1e-4,3e-4 # a sweep, one run directory per job (see rlrun.cli.sweep)

Bad values end the program with one line naming the key, the value and what is
allowed, before any env, network or buffer is created.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra._internal.utils import get_args_parser
from hydra.experimental.callback import Callback
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

import rlrun.algos  # noqa: F401 (registers every algorithm)
from rlrun.cli import presets, sweep
from rlrun.cli.evaluate import make_evaluator
from rlrun.core import registry
from rlrun.core.checkpoint import CheckpointError, latest_checkpoint
from rlrun.core.config import RESUMABLE_KEYS, ConfigError, experiment_keys, fail, get, validate_run
from rlrun.core.registry import AlgoSpec
from rlrun.core.run import Run, RunDirError, seed_everything
from rlrun.core.trackers import validate_trackers
from rlrun.envs.factory import send_mujoco_log, validate_env
from rlrun.envs.scores import score_context
from rlrun.rlhf.learned_reward import validate_reward

EXIT_BAD_CONFIG = 2  # exit status for invalid configs and unusable run directories
EXIT_CHECKPOINT_FAILED = 1  # exit status when a checkpoint cannot be written (the previous one is intact)
NEW_DIRS: list[Path] = []  # the run directory and its parents that did not exist before Hydra made them


class NewRunDirs(Callback):
    """Hydra callback (``hydra.callbacks.new_run_dirs`` in configs/config.yaml): before Hydra creates a
    single run's directory, note it and those of its parents that do not exist yet (``outputs/``,
    ``outputs/<date>/``), so that a refused run removes exactly what was made for it (:func:`remove_new_dirs`)."""

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        run_dir = Path(str(config.hydra.run.dir)).absolute()
        NEW_DIRS[:] = [p for p in (run_dir, *run_dir.parents) if not p.exists()]


def remove_new_dirs() -> None:
    """Remove the directories :class:`NewRunDirs` saw Hydra about to create, deepest first, where still empty."""
    for path in NEW_DIRS:
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def validate(cfg: DictConfig) -> AlgoSpec:
    """Validate the whole composed config; returns the algorithm's spec. Raises ConfigError."""
    validate_run(cfg)
    validate_trackers(cfg)
    spec = registry.get(cfg.algo.name)
    if spec.task == "env" or (spec.task == "both" and get(cfg, "env.family") != "text"):
        validate_env(cfg)  # a text task is checked by the language-model algorithm itself
    validate_reward(cfg, [s.name for s in registry.specs() if s.learned_reward])
    if cfg.eval.interval > 0 and spec.make_policy is None:
        fail("eval.interval", cfg.eval.interval, f"0 for algo={spec.name}: it has no policy to evaluate")
    spec.validate(cfg)
    return spec


def run_training(cfg: DictConfig, run_dir: str | Path, resume: dict | None = None) -> float:
    """Validate ``cfg``, open a Run in ``run_dir``, train, and return the final metric.

    Args:
        resume: a loaded checkpoint of the run in ``run_dir`` to continue from, or None.

    Raises:
        ConfigError: on a bad config value (nothing has been created then).
        RunDirError: if ``run_dir`` already holds a run and ``resume`` is None.
        CheckpointError: if a checkpoint cannot be written.
        StoppedBySignal: if SIGINT or SIGTERM stopped training (after its checkpoint was written).
    """
    spec = validate(cfg)
    if cfg.torch_threads > 0:
        torch.set_num_threads(int(cfg.torch_threads))
    torch.backends.cudnn.deterministic = bool(cfg.torch_deterministic)
    seed_everything(int(cfg.seed))
    run = Run(cfg, run_dir, resume=resume, evaluate=make_evaluator(cfg, spec) if spec.make_policy else None)
    send_mujoco_log(cfg, run.dir)
    verb = f"resuming from step {run.start_step} in" if resume else "run directory"
    print(f"rlrun: {cfg.algo.name} on {cfg.env.id}, {verb} {run.dir}\n"
          f"rlrun: watch it with: tensorboard --logdir {run.dir}", flush=True)
    if OmegaConf.select(cfg, "family_preset"):
        print(f"rlrun: settings: the family preset {cfg.family_preset} (configs/preset/{cfg.family_preset}.yaml) "
              "under any tuned file and the command line", flush=True)
    try:
        metric = spec.train(cfg, run)
    finally:
        run.close()
    if run.should_stop:
        print(f"rlrun: stopped by {signal.Signals(run.stop_signal).name} at step {run.last_checkpoint_step}, "
              f"checkpoint written; continue with: rlrun resume={run.dir}", flush=True)
        raise StoppedBySignal(run.stop_signal)
    else:
        what = spec.metric or f"mean return of the last {len(run.returns)} episodes"
        print(f"rlrun: done, {what}: {metric:.2f}; "
              f"checkpoints in {run.ckpt_dir}", flush=True)
        context = score_context(str(cfg.algo.name), str(cfg.env.id)) if not spec.metric and math.isfinite(metric) else None
        if context:
            print(f"rlrun: {context} (this run: {metric:.1f} after {run.total} steps)", flush=True)
    return metric


class StoppedBySignal(Exception):
    """Training stopped early on SIGINT or SIGTERM after writing a checkpoint; ``args[0]`` is the signal."""


def algo_defaults(name: str) -> DictConfig:
    """The keys of ``configs/algo/<name>.yaml`` with those of the files its defaults list includes
    (``rainbow`` includes ``dqn``)."""
    import importlib.resources

    text = importlib.resources.files("rlrun.configs").joinpath("algo", f"{name}.yaml").read_text()
    own = OmegaConf.create(text)
    merged = OmegaConf.create()
    for base in own.pop("defaults", []):
        if base != "_self_":
            merged = OmegaConf.merge(merged, algo_defaults(str(base)))
    return OmegaConf.merge(merged, own)


def add_new_algo_keys(saved: DictConfig) -> None:
    """Give the config of a run written by an older rlrun the algorithm keys added since, at their defaults
    (new switches default to off, so the run continues as the old code ran it). Keys it has are kept."""
    try:
        defaults = algo_defaults(str(saved.algo.name))
    except (FileNotFoundError, OSError):
        return  # an algorithm this version does not know: validation names it
    for key, value in defaults.items():
        if key not in saved.algo:
            with open_dict(saved.algo):
                saved.algo[key] = value


def resume_config(run_dir: Path, overrides: list[str], checkpoint: dict) -> DictConfig:
    """The config of a run being resumed: its saved config.yaml plus the allowed ``overrides``.

    Raises:
        ConfigError: if an override changes the experiment (anything outside RESUMABLE_KEYS),
            total_timesteps is below the checkpoint's step, or config.yaml was edited away
            from the checkpoint's config in a key that defines the experiment.
    """
    saved = OmegaConf.load(run_dir / "config.yaml")
    in_checkpoint = OmegaConf.create(checkpoint["config"])
    add_new_algo_keys(saved)
    add_new_algo_keys(in_checkpoint)
    for key in experiment_keys(saved) | experiment_keys(in_checkpoint):
        a, b = OmegaConf.select(saved, key), OmegaConf.select(in_checkpoint, key)
        if a != b:
            raise ConfigError(f"{run_dir / 'config.yaml'} was edited: {key}={a!r} but the checkpoint was trained "
                              f"with {key}={b!r}; only {', '.join(RESUMABLE_KEYS)} may change on resume")
    parsed = OverridesParser.create().parse_overrides(overrides)
    for override in parsed:
        key = override.key_or_group
        if key == "resume" or key.startswith("hydra"):
            continue
        if not key.split(".")[0] in RESUMABLE_KEYS or override.is_add() or override.is_delete():
            raise ConfigError(f"{override.input_line} changes the experiment being resumed; only "
                              f"{', '.join(RESUMABLE_KEYS)} may change on resume (start a new run instead)")
        OmegaConf.update(saved, key, override.value(), merge=True)
    saved.resume = str(run_dir)
    step = int(checkpoint["global_step"])
    if saved.total_timesteps < step:
        fail("total_timesteps", saved.total_timesteps, f"at least the checkpoint's step {step} when resuming")
    return saved


def resume_run(run_dir: Path, overrides: list[str]) -> float:
    """Continue the run in ``run_dir`` from its newest valid checkpoint (see ``rlrun resume=<dir>``)."""
    try:
        path, checkpoint = latest_checkpoint(run_dir)
    except FileNotFoundError as exc:
        raise RunDirError(f"cannot resume: {exc}") from None
    cfg = resume_config(run_dir, overrides, checkpoint)
    changed = [o for o in overrides if not o.startswith(("resume=", "hydra"))]
    with open(run_dir / "resumes.log", "a") as log:
        log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} resumed from {path.name} at step "
                  f"{checkpoint['global_step']}; overrides: {' '.join(changed) or 'none'}\n")
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return run_training(cfg, run_dir, resume=checkpoint)


def run_sweep_job(cfg: DictConfig, run_dir: Path, overrides: list[str], launcher: DictConfig) -> float:
    """Run one job of a sweep (``rlrun -m``) in ``run_dir`` and return its metric.

    A job that finished in an earlier run of the same sweep is skipped (its recorded metric is
    returned); one that has a checkpoint (interrupted, preempted, or failed after a checkpoint) is
    resumed; any other starts anew (see :func:`rlrun.cli.sweep.prepare_run_dir`). With
    ``torch_threads=0`` the job gets its share of the cores under ``launcher`` (the
    ``hydra.launcher`` config; :func:`rlrun.cli.sweep.job_torch_threads`). Under submitit, a preemption
    writes a checkpoint and requeues the job (:class:`rlrun.cli.sweep.SubmititPreemption`).

    Raises:
        RunDirError: if ``run_dir`` holds another job's run, or a run of other hyperparameters;
            otherwise as :func:`run_training`.
    """
    threads = sweep.job_torch_threads(launcher)
    if cfg.torch_threads == 0 and threads is not None:
        cfg.torch_threads = threads
    action = sweep.prepare_run_dir(run_dir, overrides)
    if action != sweep.NEW:
        check_same_experiment(cfg, run_dir)
    if action == sweep.SKIP:
        metric = sweep.read_status(run_dir)["final_return"]
        print(f"rlrun: skipped {run_dir}: it finished in an earlier run of this sweep (metric {metric})", flush=True)
        return float("nan") if metric is None else float(metric)
    preemption = sweep.SubmititPreemption() if sweep.is_submitit(launcher) else None
    try:
        if action == sweep.RESUME:
            return resume_run(run_dir, [*resumable_overrides(overrides), f"torch_threads={cfg.torch_threads}"])
        return run_training(cfg, run_dir)
    except StoppedBySignal:
        if preemption is not None and preemption.received:
            preemption.requeue()  # submitit requeues the job and exits; the new job resumes run_dir
        raise


def resumable_overrides(overrides: list[str]) -> list[str]:
    """The overrides among ``overrides`` that a resume accepts (keys under RESUMABLE_KEYS)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.input_line for o in parsed if o.key_or_group.split(".")[0] in RESUMABLE_KEYS
            and not (o.is_add() or o.is_delete())]


def check_same_experiment(cfg: DictConfig, run_dir: Path) -> None:
    """Refuse to skip or resume the run in ``run_dir`` if its config.yaml differs from ``cfg`` in a key
    that defines the experiment (e.g. a tuned file was edited since the sweep first ran).

    Raises:
        RunDirError: naming the first differing key and both values.
    """
    if not (run_dir / "config.yaml").is_file():
        return
    saved = OmegaConf.load(run_dir / "config.yaml")
    for key in sorted(experiment_keys(cfg) | experiment_keys(saved)):
        ours, theirs = OmegaConf.select(cfg, key), OmegaConf.select(saved, key)
        if ours != theirs:
            raise RunDirError(f"{run_dir} was run with {key}={theirs!r} but this job has {key}={ours!r}; "
                              "pass another sweep_name=... to run the changed sweep in a new directory")


@hydra.main(version_base="1.3", config_path="pkg://rlrun.configs", config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        if cfg.resume:
            return resume_run(Path(cfg.resume), list(hydra_cfg.overrides.task))
        if in_sweep:
            cfg = presets.job_config(cfg, list(hydra_cfg.overrides.task), hydra_cfg.runtime.choices)
            return run_sweep_job(cfg, run_dir, list(hydra_cfg.overrides.task), hydra_cfg.launcher)
        return run_training(cfg, run_dir)
    except StoppedBySignal as stop:
        sys.exit(128 + stop.args[0])  # the shell convention for "ended by signal N"
    except (ConfigError, RunDirError, CheckpointError) as exc:
        if in_sweep:
            raise  # Hydra records the job as failed (so does sweep_summary.csv) and runs the others
        remove_new_dirs()  # Hydra created them for this run; leave nothing behind
        print(f"rlrun: invalid config: {exc}" if isinstance(exc, ConfigError) else f"rlrun: {exc}",
              file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_CONFIG if not isinstance(exc, CheckpointError) else EXIT_CHECKPOINT_FAILED)


def main() -> None:
    """Console-script entry point: a sweep command (``-m``) is checked first (:func:`rlrun.cli.sweep.preflight`)."""
    args = get_args_parser().parse_args(sys.argv[1:])
    runs_a_sweep = args.multirun and not (args.cfg or args.help or args.hydra_help or args.info
                                          or args.shell_completion)
    own_configs = not (args.config_path or args.config_dir or args.config_name)
    if runs_a_sweep and own_configs:  # rlrun's own configs
        sweep.preflight(args.overrides)
    elif own_configs and not (args.multirun or args.help or args.hydra_help or args.info or args.shell_completion):
        preset = presets.preset_override(args.overrides)  # a single run, or --cfg: the env's family preset
        if preset:  # right after the last override: argparse takes the overrides as one run of positionals
            at = len(sys.argv) - sys.argv[::-1].index(args.overrides[-1]) if args.overrides else 1
            sys.argv.insert(at, preset)
    _hydra_main()

