"""The Run: everything a training run writes, in one directory, and the state it carries across a resume.

An algorithm gets a Run and only computes. It names its state once (:meth:`Run.track`), calls
:meth:`Run.end_iteration` once per iteration of its loop and :meth:`Run.finish` after it; the Run owns
the run directory, the checkpoints, periodic evaluation, the progress display, the stop signals and
the final metric. Layout::

    <run dir>/
      config.yaml                 the composed config, resolved
      events.out.tfevents.*       TensorBoard scalars and the hyperparameter table
      checkpoints/step_<N>.pt     the newest ``checkpoint.keep_last`` checkpoints (rlrun.core.checkpoint)
      checkpoints/replay_<N>/     the replay buffer at the newest checkpoint (``checkpoint.save_replay``)
      videos/step_<N>/            videos of evaluation episodes (``eval.video``)
"""

from __future__ import annotations

import collections
import csv
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlrun.core.checkpoint import (CHECKPOINT_FORMAT, CheckpointError, checkpoint_paths, padded_step, rng_state,
                                   set_rng_state, step_name)
from rlrun.core.events import hyperparameter_table
from rlrun.core.progress import Progress
from rlrun.core.state import is_directory_state, load_payload, state_payload
from rlrun.core.trackers import MirroredWriter, open_trackers

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # checkpoint and stop cleanly on these
RUN_MARKERS = ("config.yaml", "checkpoints")  # files whose presence means a directory already holds a run
RESERVED_KEYS = ("format", "algo", "global_step", "config", "rng", "run")  # checkpoint entries the Run writes

# evaluate(state, video_dir) -> {"returns": [...], "mean": ..., ...}: plays the algorithm's evaluation policy of a
# checkpoint-like state dict (rlrun.cli injects it; core never imports an algorithm)
Evaluator = Callable[[dict[str, Any], "Path | None"], dict[str, Any]]


class RunDirError(RuntimeError):
    """The run directory cannot be used (it already holds a run, or is not writable)."""


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's legacy and torch's global generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """Map the ``device`` key (auto, cpu, cuda, cuda:N, mps) to a torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Run:
    """An open training run: directory, TensorBoard writer, tracked state, checkpoints, evaluation, progress
    and signals.

    Args:
        cfg: the composed, validated config.
        run_dir: directory to write into; created if needed. A new run refuses a
            directory that already holds a run (``config.yaml`` or ``checkpoints/``).
        resume: the payload of the checkpoint to continue from (see
            :func:`rlrun.core.checkpoint.latest_checkpoint`), or None for a new run. A resumed run keeps its
            directory, continues its TensorBoard curves after the checkpoint's step (events written after
            it by the interrupted process are purged) and its episode statistics; :meth:`track` loads the
            algorithm's state back from it.
        evaluate: plays the algorithm's evaluation policy of a state dict (see :data:`Evaluator`); needed
            when ``eval.interval`` > 0.

    While the run is open, SIGINT and SIGTERM set :attr:`stop_signal`; :meth:`end_iteration` then
    returns True, the loop ends and :meth:`finish` writes a checkpoint. A second signal exits at once.

    Raises:
        RunDirError: if a new run's ``run_dir`` already holds a run.
    """

    def __init__(self, cfg: DictConfig, run_dir: str | Path, resume: dict[str, Any] | None = None,
                 evaluate: Evaluator | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.cfg = cfg
        self.dir = Path(run_dir).resolve()
        self.ckpt_dir = self.dir / "checkpoints"
        self.restored = resume
        self.total = int(cfg.total_timesteps)
        self.checkpoint_interval = int(cfg.checkpoint.interval)
        self.keep_last = int(cfg.checkpoint.keep_last)
        self.returns: collections.deque[float] = collections.deque(maxlen=int(cfg.logging.metric_episodes))
        self.tracked: dict[str, Any] = {}
        self._evaluate = evaluate
        if resume is None:
            taken = [m for m in RUN_MARKERS if (self.dir / m).exists()]
            if taken:
                raise RunDirError(f"run directory {self.dir} already holds a run ({', '.join(taken)}); "
                                  "rlrun never reuses one: pass another hydra.run.dir=..., or resume it with "
                                  f"resume={self.dir}")
            self.ckpt_dir.mkdir(parents=True, exist_ok=False)
            (self.dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            self.start_step = 0
            self.writer = SummaryWriter(log_dir=str(self.dir))
            self.writer.add_text("hyperparameters", hyperparameter_table(cfg))
        else:
            for stale in self.ckpt_dir.glob(".tmp_*"):  # left by a process killed while writing
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
            self.start_step = int(resume["global_step"])
            self.returns.extend(resume["run"]["returns"])
            # scalars at step g describe the run after g agent steps, so those up to the checkpoint's
            # step were written before it; later ones are the interrupted process's and are dropped
            self.writer = SummaryWriter(log_dir=str(self.dir), purge_step=self.start_step + 1)
        try:
            trackers = open_trackers(cfg, self.dir)
        except Exception as exc:  # a tracker that cannot start (not logged in, no network): nothing trained yet
            self.writer.close()
            first_line = (str(exc).strip().splitlines() or [""])[0]
            raise RunDirError(f"logging: the tracker could not start ({type(exc).__name__}: {first_line}); "
                              "run without it, or e.g. logging.wandb_mode=offline") from None
        if trackers:  # without trackers the SummaryWriter itself: nothing added to each scalar
            self.writer = MirroredWriter(self.writer, trackers)
        self.last_checkpoint_step = self.last_eval_step = self.start_step
        self.eval_interval = int(cfg.eval.interval)
        self.start_time = time.time()
        self.stop_signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._install_signal_handlers()
        self._progress = Progress(cfg.logging.progress, float(cfg.logging.progress_interval), self.total,
                                  start_step=self.start_step)

    # ---- the algorithm's state -----------------------------------------------------------------
    @property
    def resumed(self) -> bool:
        """True when this run continues from a checkpoint."""
        return self.restored is not None

    def track(self, **objects: Any) -> None:
        """Name the algorithm's state once: every checkpoint holds these objects (see rlrun.core.state for
        what each kind becomes), and periodic evaluation plays the same state.

        On a resumed run each object is loaded back in place from the checkpoint, in the order given,
        then a directory state (the replay buffer) from ``checkpoints/<name>_<step>/`` if it was saved,
        and last the global random generators: call this once everything is built, just before the loop.

        Raises:
            ValueError: if a name is one the Run writes itself (RESERVED_KEYS); a flat object's entry that is
                one is refused when a checkpoint is written.
            ConfigError: if the checkpoint lacks an entry or a network does not fit the config.
        """
        taken = sorted(set(objects) & set(RESERVED_KEYS))
        if taken:
            raise ValueError(f"cannot track {', '.join(taken)}: the Run writes these checkpoint entries itself")
        self.tracked = objects
        if self.restored is None:
            return
        load_payload(objects, self.restored, self.cfg)
        for name, obj in objects.items():
            snapshot = self.ckpt_dir / f"{name}_{padded_step(self.start_step)}"
            if is_directory_state(obj) and snapshot.is_dir():
                obj.load(snapshot)
        set_rng_state(self.restored["rng"])

    def state(self) -> dict[str, Any]:
        """The tracked objects' checkpoint entries (tensors and plain values), without directory state."""
        return state_payload(self.tracked)

    # ---- signals -------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (e.g. not in a Ray worker thread)
        for sig in STOP_SIGNALS:
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.stop_signal is not None:
            print(f"\nrlrun: second {name}: exiting now without a checkpoint", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.stop_signal = signum
        print(f"\nrlrun: {name} received: writing a checkpoint and stopping (send it again to exit at once)",
              file=sys.stderr, flush=True)

    @property
    def should_stop(self) -> bool:
        """True once SIGINT or SIGTERM was received: end the loop (:meth:`finish` writes the checkpoint)."""
        return self.stop_signal is not None

    # ---- once per iteration --------------------------------------------------------------
    def end_iteration(self, global_step: int) -> bool:
        """End one iteration of the training loop at ``global_step``: update the progress display, write a
        checkpoint when one is due (every ``checkpoint.interval`` steps) and evaluate when due (every
        ``eval.interval`` steps).

        Returns:
            True when a stop signal asks the loop to end (then call :meth:`finish`).
        """
        self.progress(global_step)
        if self.checkpoint_due(global_step):
            self.save_checkpoint(global_step)
        interval = self.eval_interval
        if interval > 0 and global_step // interval > self.last_eval_step // interval:
            self.evaluate(global_step)
        return self.should_stop

    def finish(self, global_step: int) -> None:
        """Write the checkpoint at the end of training or on a stop signal, unless one exists at this step."""
        if self.last_checkpoint_step != global_step or not checkpoint_paths(self.dir):
            self.save_checkpoint(global_step)

    # ---- scalars -------------------------------------------------------------------
    def sps(self, global_step: int) -> int:
        """Agent steps per second since the run (or its resumption) started."""
        return int((global_step - self.start_step) / max(time.time() - self.start_time, 1e-9))

    def log(self, global_step: int, scalars: dict[str, float]) -> None:
        """Write TensorBoard scalars at ``global_step``, plus charts/SPS."""
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step)
        self.writer.add_scalar("charts/SPS", self.sps(global_step), global_step)

    def log_text(self, global_step: int, tag: str, markdown: str) -> None:
        """Write a TensorBoard text entry (markdown, e.g. a table of sample completions) at ``global_step``."""
        self.writer.add_text(tag, markdown, global_step)

    def log_episodes(self, global_step: int, episodes: list[tuple[float, int]],
                     learned_returns: list[float] = ()) -> None:
        """Write charts/episodic_return (raw score) and charts/episodic_length (agent steps), and
        charts/learned_episodic_return for each of ``learned_returns`` (runs on a learned reward)."""
        for ret, length in episodes:
            self.writer.add_scalar("charts/episodic_return", ret, global_step)
            self.writer.add_scalar("charts/episodic_length", length, global_step)
            self.returns.append(ret)
        for ret in learned_returns:
            self.writer.add_scalar("charts/learned_episodic_return", ret, global_step)

    def mean_return(self) -> float:
        """Mean raw return of the last ``logging.metric_episodes`` episodes (nan if none ended)."""
        return float(np.mean(self.returns)) if self.returns else float("nan")

    def set_total(self, total: int) -> None:
        """Set the run's length in its own unit of ``global_step``, for algorithms whose steps are not
        agent steps (e.g. gradient steps of reward-model training); the progress display follows."""
        self.total = int(total)
        self._progress.set_total(self.total)

    def progress(self, global_step: int) -> None:
        """Update the progress bar or print a plain progress line when one is due."""
        self._progress.update(global_step, self.returns[-1] if self.returns else None)

    # ---- checkpoints ---------------------------------------------------------------
    def checkpoint_due(self, global_step: int) -> bool:
        """True when ``global_step`` has crossed a multiple of ``checkpoint.interval``."""
        interval = self.checkpoint_interval
        return interval > 0 and global_step // interval > self.last_checkpoint_step // interval

    def save_checkpoint(self, global_step: int) -> Path:
        """Write ``checkpoints/step_<global_step>.pt`` with the tracked state, atomically, and keep the newest K.

        The config, the format version, the global RNG states and the run's episode statistics are added
        to the tracked state. With ``checkpoint.save_replay``, a tracked directory state (the replay
        buffer) is written first to ``checkpoints/<name>_<global_step>/``; only the newest snapshot is
        kept. Every file is written under a temporary name in the same directory, flushed to disk and
        renamed into place, so a crash never leaves a partial checkpoint under a real name.

        Raises:
            CheckpointError: if writing fails (disk full, ...); earlier checkpoints are intact.
        """
        name = step_name(global_step)
        path = self.ckpt_dir / f"{name}.pt"
        payload = {"format": CHECKPOINT_FORMAT, "algo": self.cfg.algo.name, "global_step": int(global_step),
                   "config": OmegaConf.to_yaml(self.cfg, resolve=True), "rng": rng_state(),
                   "run": {"returns": list(self.returns)}}
        state = self.state()
        clash = sorted(set(state) & set(payload))
        if clash:
            raise ValueError(f"tracked state writes {', '.join(clash)}, which the Run writes itself")
        payload.update(state)
        directories = {key: obj for key, obj in self.tracked.items() if is_directory_state(obj)}
        written: list[Path] = []
        try:
            for key, obj in directories.items():
                if not self.cfg.checkpoint.save_replay:
                    continue
                target = self.ckpt_dir / f"{key}_{padded_step(global_step)}"
                tmp_dir = Path(tempfile.mkdtemp(dir=self.ckpt_dir, prefix=f".tmp_{key}_"))
                try:
                    obj.save(tmp_dir / "data")
                    shutil.rmtree(target, ignore_errors=True)
                    os.replace(tmp_dir / "data", target)
                    written.append(target)
                finally:
                    shutil.rmtree(tmp_dir, ignore_errors=True)
            fd, tmp = tempfile.mkstemp(dir=self.ckpt_dir, prefix=".tmp_", suffix=".pt")
            try:
                with os.fdopen(fd, "wb") as f:
                    torch.save(payload, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        except OSError as exc:
            if not path.exists():
                for target in written:  # no snapshot without its checkpoint
                    shutil.rmtree(target, ignore_errors=True)
            previous = checkpoint_paths(self.dir)
            raise CheckpointError(
                f"could not write checkpoint {path.name} at step {global_step}: {exc.strerror or exc}; "
                + (f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint")
            ) from None
        self.last_checkpoint_step = global_step
        for old in checkpoint_paths(self.dir)[: -self.keep_last]:
            old.unlink()
        for key in directories:
            for old in sorted(self.ckpt_dir.glob(f"{key}_*"))[:-1]:
                shutil.rmtree(old)
        return path

    # ---- evaluation ------------------------------------------------------------------
    def evaluate(self, global_step: int) -> dict[str, Any]:
        """Play ``eval.episodes`` whole episodes on a separate env with the algorithm's evaluation policy of
        the tracked state, and log eval/episodic_return and eval/mean_return; with ``eval.video`` also
        write MP4s into ``videos/step_<global_step>/``. Returns the evaluation's statistics.

        Raises:
            RuntimeError: if the Run was opened without an evaluator.
        """
        if self._evaluate is None:
            raise RuntimeError(f"algo={self.cfg.algo.name} has no evaluation policy: eval.interval must be 0")
        self.last_eval_step = global_step
        video_dir = self.dir / "videos" / step_name(global_step) if self.cfg.eval.video else None
        stats = self._evaluate(self.state(), video_dir)
        for ret in stats["returns"]:
            self.writer.add_scalar("eval/episodic_return", ret, global_step)
        self.writer.add_scalar("eval/mean_return", stats["mean"], global_step)
        return stats

    # ---- result tables ---------------------------------------------------------------
    def write_csv(self, name: str, header: list[str], rows: list[list[Any]]) -> Path:
        """Write ``<run dir>/<name>`` (CSV with ``header``) atomically, replacing an earlier version.

        Floats are written with repr precision, so the file reads back exactly.
        """
        path = self.dir / name
        tmp = path.with_name(f".tmp_{name}")
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows([[v.item() if isinstance(v, np.generic) else v for v in row] for row in rows])
        os.replace(tmp, path)
        return path

    def close(self) -> None:
        """Flush TensorBoard, close the progress display and restore the signal handlers."""
        self.writer.flush()
        self.writer.close()
        self._progress.close()
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()
