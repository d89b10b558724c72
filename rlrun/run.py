"""The Run: everything a training run writes, in one directory.

An algorithm gets a Run and only computes; the Run owns the run directory
(``config.yaml``, TensorBoard event files, ``checkpoints/``), the progress
display and the final metric. Layout::

    <run dir>/
      config.yaml                 the composed config, resolved
      events.out.tfevents.*       TensorBoard scalars and the hyperparameter table
      checkpoints/step_<N>.pt     the newest ``checkpoint.keep_last`` checkpoints
"""

from __future__ import annotations

import collections
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

CHECKPOINT_FORMAT = 1       # bumped when the checkpoint layout changes incompatibly
CHECKPOINT_DIGITS = 12      # zero-padded step number in checkpoint file names
BAR_REFRESH_SECONDS = 0.2  # the progress display is redrawn at most this often
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # checkpoint and stop cleanly on these
RUN_MARKERS = ("config.yaml", "checkpoints")  # files whose presence means a directory already holds a run


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


def rng_state() -> dict[str, Any]:
    """States of the global Python, NumPy and torch generators, as plain values and tensors
    (so that checkpoints load with ``weights_only=True``)."""
    kind, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {"python": random.getstate(),
             "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the global generators from :func:`rng_state`'s output."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (disk full, permissions); the previous one is intact."""


class Run:
    """An open training run: directory, TensorBoard writer, checkpoints, progress and signals.

    Args:
        cfg: the composed, validated config.
        run_dir: directory to write into; created if needed. A new run refuses a
            directory that already holds a run (``config.yaml`` or ``checkpoints/``).
        resume: the payload of the checkpoint to continue from (see
            :func:`latest_checkpoint`), or None for a new run. A resumed run keeps its
            directory, continues its TensorBoard curves after the checkpoint's step
            (events written after it by the interrupted process are purged) and its
            episode statistics. The algorithm restores its own state from
            ``run.restored``.

    While the run is open, SIGINT and SIGTERM set :attr:`stop_signal`; the algorithm
    checks :attr:`should_stop` once per iteration, writes a checkpoint and returns.
    A second signal exits at once.

    Raises:
        RunDirError: if a new run's ``run_dir`` already holds a run.
    """

    def __init__(self, cfg: DictConfig, run_dir: str | Path, resume: dict[str, Any] | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.cfg = cfg
        self.dir = Path(run_dir).resolve()
        self.ckpt_dir = self.dir / "checkpoints"
        self.restored = resume
        self.total = int(cfg.total_timesteps)
        self.checkpoint_interval = int(cfg.checkpoint.interval)
        self.keep_last = int(cfg.checkpoint.keep_last)
        self.returns: collections.deque[float] = collections.deque(maxlen=int(cfg.logging.metric_episodes))
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
        self.last_checkpoint_step = self.last_eval_step = self.start_step
        self.eval_interval = int(cfg.eval.interval)
        self.start_time = time.time()
        self.stop_signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._install_signal_handlers()
        self._progress = Progress(cfg.logging.progress, float(cfg.logging.progress_interval), self.total)

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
        """True once SIGINT or SIGTERM was received: checkpoint and return."""
        return self.stop_signal is not None

    # ---- scalars -------------------------------------------------------------------
    def sps(self, global_step: int) -> int:
        """Agent steps per second since the run (or its resumption) started."""
        return int((global_step - self.start_step) / max(time.time() - self.start_time, 1e-9))

    def log(self, global_step: int, scalars: dict[str, float]) -> None:
        """Write TensorBoard scalars at ``global_step``, plus charts/SPS."""
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step)
        self.writer.add_scalar("charts/SPS", self.sps(global_step), global_step)

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
        self.total = self._progress.total = int(total)
        if self._progress._bar is not None:
            self._progress._bar.total = self.total

    def progress(self, global_step: int) -> None:
        """Update the progress bar or print a plain progress line when one is due."""
        self._progress.update(global_step, self.sps(global_step), self.returns[-1] if self.returns else None)

    # ---- checkpoints ---------------------------------------------------------------
    def checkpoint_due(self, global_step: int) -> bool:
        """True when ``global_step`` has crossed a multiple of ``checkpoint.interval``."""
        interval = self.checkpoint_interval
        return interval > 0 and global_step // interval > self.last_checkpoint_step // interval

    def save_checkpoint(self, global_step: int, state: dict[str, Any], replay: Any = None) -> Path:
        """Write ``checkpoints/step_<global_step>.pt`` atomically and keep the newest K.

        ``state`` holds the algorithm's tensors and plain values (state_dicts,
        counters); the config, the format version, the global RNG states and the
        run's episode statistics are added here. With ``replay`` (an object with
        ``save(directory)``) and ``checkpoint.save_replay``, the buffer is written
        first to ``checkpoints/replay_<global_step>/``; only the newest snapshot is
        kept. Every file is written under a temporary name in the same directory,
        flushed to disk and renamed into place, so a crash never leaves a partial
        checkpoint under a real name.

        Raises:
            CheckpointError: if writing fails (disk full, ...); earlier checkpoints are intact.
        """
        name = f"step_{global_step:0{CHECKPOINT_DIGITS}d}"
        path = self.ckpt_dir / f"{name}.pt"
        payload = {"format": CHECKPOINT_FORMAT, "algo": self.cfg.algo.name, "global_step": int(global_step),
                   "config": OmegaConf.to_yaml(self.cfg, resolve=True), "rng": rng_state(),
                   "run": {"returns": list(self.returns)}, **state}
        replay_dir = self.ckpt_dir / f"replay_{global_step:0{CHECKPOINT_DIGITS}d}"
        try:
            if replay is not None and self.cfg.checkpoint.save_replay:
                tmp_dir = Path(tempfile.mkdtemp(dir=self.ckpt_dir, prefix=".tmp_replay_"))
                try:
                    replay.save(tmp_dir / "data")
                    shutil.rmtree(replay_dir, ignore_errors=True)
                    os.replace(tmp_dir / "data", replay_dir)
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
                shutil.rmtree(replay_dir, ignore_errors=True)  # no snapshot without its checkpoint
            previous = checkpoint_paths(self.dir)
            raise CheckpointError(
                f"could not write checkpoint {path.name} at step {global_step}: {exc.strerror or exc}; "
                + (f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint")
            ) from None
        self.last_checkpoint_step = global_step
        for old in checkpoint_paths(self.dir)[: -self.keep_last]:
            old.unlink()
        for old in sorted(self.ckpt_dir.glob("replay_*"))[:-1]:
            shutil.rmtree(old)
        return path

    def maybe_checkpoint(self, global_step: int, state_fn: Callable[[], dict[str, Any]], replay: Any = None) -> None:
        """Save ``state_fn()`` (and ``replay``) if a checkpoint is due at ``global_step``."""
        if self.checkpoint_due(global_step):
            self.save_checkpoint(global_step, state_fn(), replay)

    def maybe_evaluate(self, global_step: int, state_fn: Callable[[], dict[str, Any]]) -> None:
        """Every ``eval.interval`` agent steps (0 = never), play ``eval.episodes`` whole episodes on a
        separate env with the algorithm's evaluation policy of ``state_fn()`` (a checkpoint-like payload),
        and log eval/episodic_return and eval/mean_return; with ``eval.video`` also write MP4s into
        ``videos/step_<global_step>/``."""
        interval = self.eval_interval
        if interval <= 0 or global_step // interval <= self.last_eval_step // interval:
            return
        from rlrun.evaluate import evaluate, make_act  # evaluate imports this module

        self.last_eval_step = global_step
        cfg, state = self.cfg, state_fn()
        seed = int(cfg.seed) + int(cfg.eval.seed_offset)
        video_dir = self.dir / "videos" / f"step_{global_step:0{CHECKPOINT_DIGITS}d}" if cfg.eval.video else None
        stats = evaluate(cfg, lambda env: make_act(cfg, state, env, resolve_device(cfg.device), float(cfg.eval.epsilon),
                                                   seed), int(cfg.eval.episodes), seed, video_dir)
        for ret in stats["returns"]:
            self.writer.add_scalar("eval/episodic_return", ret, global_step)
        self.writer.add_scalar("eval/mean_return", stats["mean"], global_step)

    def final_checkpoint(self, global_step: int, state_fn: Callable[[], dict[str, Any]], replay: Any = None) -> None:
        """Save the checkpoint at the end of training or on a stop signal, unless one exists at this step."""
        if self.last_checkpoint_step != global_step or not checkpoint_paths(self.dir):
            self.save_checkpoint(global_step, state_fn(), replay)

    # ---- result tables ---------------------------------------------------------------
    def write_csv(self, name: str, header: list[str], rows: list[list[Any]]) -> Path:
        """Write ``<run dir>/<name>`` (CSV with ``header``) atomically, replacing an earlier version.

        Floats are written with repr precision, so the file reads back exactly.
        """
        import csv

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


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without executing code from it (``torch.load(weights_only=True)``).

    Raises:
        ValueError: if the file cannot be read as an rlrun checkpoint of this format.
    """
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise ValueError(f"cannot load checkpoint {path}: {exc.__class__.__name__}: {first_line}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not an rlrun checkpoint of format {CHECKPOINT_FORMAT} (found {found!r})")
    return payload


def checkpoint_paths(run_dir: str | Path) -> list[Path]:
    """The checkpoint files of a run directory, oldest first (names sort by step)."""
    return sorted((Path(run_dir) / "checkpoints").glob("step_*.pt"))


def latest_checkpoint(run_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint of ``run_dir`` that loads, with its payload.

    A checkpoint that fails to load (truncated, corrupt, another format) is
    reported on stderr and the previous one is tried.

    Raises:
        FileNotFoundError: if ``run_dir`` is not a run directory or holds no loadable checkpoint.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "checkpoints").is_dir():
        raise FileNotFoundError(f"{run_dir} is not an rlrun run directory (no config.yaml and checkpoints/)")
    for path in reversed(checkpoint_paths(run_dir)):
        try:
            return path, load_checkpoint(path, map_location)
        except ValueError as exc:
            print(f"rlrun: skipping unusable checkpoint: {exc}", file=sys.stderr, flush=True)
    raise FileNotFoundError(f"{run_dir} holds no valid checkpoint in checkpoints/")


def hyperparameter_table(cfg: DictConfig) -> str:
    """The flattened config as a Markdown table (TensorBoard's TEXT tab renders it)."""
    rows = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            rows.append(f"|{prefix}|{node}|")

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return "|param|value|\n|-|-|\n" + "\n".join(rows)


class Progress:
    """Steps done of the total, SPS, ETA and the latest return.

    ``mode``: ``bar`` (tqdm), ``lines`` (a plain line every ``interval`` seconds, for
    CI and SLURM logs), ``none``, or ``auto`` (a bar when stderr is a terminal).
    """

    def __init__(self, mode: str, interval: float, total: int):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode, self.interval, self.total = mode, interval, total
        self._bar = None
        self._last_line = self._last_draw = time.time()
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="step", dynamic_ncols=True, smoothing=0.1)

    def update(self, step: int, sps: int, last_return: float | None) -> None:
        now = time.time()
        if self.mode == "none" or now - self._last_draw < BAR_REFRESH_SECONDS:
            return
        self._last_draw = now
        ret = "-" if last_return is None else f"{last_return:.1f}"
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix_str(f"SPS={sps} return={ret}", refresh=False)
            self._bar.refresh()
        elif self.mode == "lines" and time.time() - self._last_line >= self.interval:
            self._last_line = time.time()
            eta = (self.total - step) / sps if sps > 0 else float("inf")
            print(f"[rlrun] step {step}/{self.total} ({100 * step / self.total:.1f}%) SPS={sps} "
                  f"ETA={format_seconds(eta)} last_return={ret}", flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def format_seconds(seconds: float) -> str:
    """'1h02m03s' style duration; '?' for infinity."""
    if not np.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float, float]]]:
    """All TensorBoard scalars of a run directory: tag -> [(step, value, wall_time), ...] in step order.

    Raises:
        FileNotFoundError: if ``run_dir`` holds no event file.
    """
    import logging

    from tensorboard.backend.event_processing import event_accumulator

    if not list(Path(run_dir).glob("events.out.tfevents.*")):
        raise FileNotFoundError(f"no TensorBoard event files in {run_dir}")
    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0 = keep every event
    logger = logging.getLogger("tensorboard")  # parent of the event accumulator's and directory watcher's loggers
    level = logger.level
    logger.setLevel(logging.ERROR)  # a resumed run's purge of events past its checkpoint is expected, not news
    try:
        acc.Reload()
    finally:
        logger.setLevel(level)
    return {tag: sorted(((e.step, e.value, e.wall_time) for e in acc.Scalars(tag)), key=lambda x: x[0])
            for tag in acc.Tags()["scalars"]}
