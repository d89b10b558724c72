"""Optional experiment trackers that mirror a run's TensorBoard scalars, its config and its name: Weights & Biases
(as CleanRL's ``--track``) and trackio (Hugging Face's local-first tracker, which keeps runs in a SQLite file under
``TRACKIO_DIR``). TensorBoard stays the default and the record: the trackers receive a copy of every scalar
written through :class:`MirroredWriter`, and a run's curves, checkpoints and resume never depend on them.

    rlrun ... logging.wandb=true                      # or logging.trackers=[wandb,trackio]
    rlrun ... logging.trackio=true logging.project=breakout-sweep
    WANDB_MODE=offline rlrun ... logging.wandb=true   # or logging.wandb_mode=offline: files in <run dir>/wandb/
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlrun.core.config import check_bool, check_choice, fail, get

TRACKERS = ("wandb", "trackio")
WANDB_MODES = ("online", "offline", "disabled")


def chosen_trackers(cfg: DictConfig) -> list[str]:
    """The trackers a config asks for: ``logging.trackers`` plus ``logging.wandb`` / ``logging.trackio`` when true
    (a run saved before these keys existed asks for none)."""
    names = list(OmegaConf.select(cfg, "logging.trackers", default=None) or [])
    names += [name for name in TRACKERS if OmegaConf.select(cfg, f"logging.{name}", default=False) is True]
    return list(dict.fromkeys(names))


def validate_trackers(cfg: DictConfig) -> None:
    """Check the tracker keys and that each chosen tracker's package is installed.

    Raises:
        ConfigError: an unknown tracker, a non-boolean switch, a bad ``wandb_mode``, or a tracker whose
            package is missing (naming the extra to install).
    """
    if OmegaConf.select(cfg, "logging.trackers", default=None) is None and \
            OmegaConf.select(cfg, "logging.wandb", default=None) is None:
        return  # a config from before the trackers
    trackers = get(cfg, "logging.trackers")
    if not OmegaConf.is_list(trackers) and not isinstance(trackers, list):
        fail("logging.trackers", trackers, f"a list of trackers from {', '.join(TRACKERS)}, e.g. [wandb]")
    for name in trackers:
        if name not in TRACKERS:
            fail("logging.trackers", list(trackers), f"a list of trackers from {', '.join(TRACKERS)}")
    for name in TRACKERS:
        check_bool(cfg, f"logging.{name}")
    if not isinstance(get(cfg, "logging.project"), str) or not get(cfg, "logging.project"):
        fail("logging.project", get(cfg, "logging.project"), "a non-empty project name")
    if get(cfg, "logging.wandb_mode") is not None:
        check_choice(cfg, "logging.wandb_mode", list(WANDB_MODES))
    for name in chosen_trackers(cfg):
        if importlib.util.find_spec(name) is None:
            key = "logging.trackers" if name in trackers else f"logging.{name}"
            fail(key, get(cfg, key), f'a tracker that is installed: {name} is not; pip install "rlrun[{name}]"')


def run_id(run_dir: Path) -> str:
    """A stable id of the run directory (the same after a resume), for W&B's resume="allow"."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def open_trackers(cfg: DictConfig, run_dir: Path) -> list[Any]:
    """Start the trackers ``cfg`` asks for (none by default): their run objects, each with
    ``log(scalars, step=...)`` and ``finish()``. Each run is named after the run directory and holds the composed
    config; a resumed rlrun run continues the same tracker runs (a stable W&B id, trackio's resume="allow").
    W&B keeps its files in ``<run dir>/wandb/``."""
    run_dir = Path(run_dir)
    config, runs = OmegaConf.to_container(cfg, resolve=True), []
    for name in chosen_trackers(cfg):
        if name == "wandb":
            import wandb

            runs.append(wandb.init(project=str(cfg.logging.project), name=run_dir.name, config=config,
                                   entity=OmegaConf.select(cfg, "logging.wandb_entity"), dir=str(run_dir),
                                   id=run_id(run_dir), resume="allow", mode=OmegaConf.select(cfg, "logging.wandb_mode")))
        else:
            import trackio

            runs.append(trackio.init(project=str(cfg.logging.project), name=run_dir.name, config=config,
                                     resume="allow", embed=False, auto_log_cpu=False, auto_log_gpu=False))
    return runs


class MirroredWriter:
    """A TensorBoard ``SummaryWriter`` whose scalars are also sent to trackers.

    Scalars of one step are gathered and sent together when a later step arrives, on :meth:`flush` and on
    :meth:`close` (trackers expect one record per step). Everything else is TensorBoard's alone.

    Args:
        writer: the run's ``torch.utils.tensorboard.SummaryWriter``.
        trackers: objects with ``log(scalars: dict[str, float], step=int)`` and ``finish()``.
    """

    def __init__(self, writer: Any, trackers: list[Any]):
        self.writer, self.trackers = writer, trackers
        self._step: int | None = None
        self._pending: dict[str, float] = {}

    def add_scalar(self, tag: str, value: float, global_step: int | None = None, *args: Any, **kwargs: Any) -> None:
        self.writer.add_scalar(tag, value, global_step, *args, **kwargs)
        if not self.trackers:
            return
        step = int(global_step or 0)
        if self._step is not None and step != self._step:
            self._send()
        self._step = step
        self._pending[tag] = float(value)

    def _send(self) -> None:
        if self._pending and self._step is not None:
            for tracker in self.trackers:
                tracker.log(dict(self._pending), step=self._step)
        self._pending.clear()

    def flush(self) -> None:
        self._send()
        self.writer.flush()

    def close(self) -> None:
        self._send()
        self.writer.close()
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []

    def __getattr__(self, name: str) -> Any:  # add_text, add_hparams, log_dir, ...: TensorBoard's
        return getattr(self.writer, name)
