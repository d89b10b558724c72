"""TensorBoard event files of a run: the hyperparameter table written into them and the scalars read back.

Reading needs neither torch nor gymnasium, so ``rlrun-plot`` starts fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rlrun.core.config import flatten

EVENT_GLOB = "events.out.tfevents.*"  # TensorBoard event file names


def hyperparameter_table(cfg: DictConfig) -> str:
    """The flattened config as a Markdown table (TensorBoard's TEXT tab renders it)."""
    rows = [f"|{key}|{value}|" for key, value in flatten(cfg).items()]
    return "|param|value|\n|-|-|\n" + "\n".join(rows)


def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float, float]]]:
    """All TensorBoard scalars of a run directory: tag -> [(step, value, wall_time), ...] in step order.

    Raises:
        FileNotFoundError: if ``run_dir`` holds no event file.
    """
    from tensorboard.backend.event_processing import event_accumulator

    if not list(Path(run_dir).glob(EVENT_GLOB)):
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


def scalar_values(run_dir: str | Path, exclude: tuple[str, ...] = ("charts/SPS",)) -> dict[str, Any]:
    """tag -> [(step, value), ...] of a run, without wall times and the tags in ``exclude`` (wall-clock
    dependent): what two runs that should be identical must agree on."""
    return {tag: [(s, v) for s, v, _ in events] for tag, events in read_scalars(run_dir).items() if tag not in exclude}
