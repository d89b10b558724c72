"""Checkpoint files: where they are, how they load, and the global random state they carry.

A run's checkpoints are ``<run dir>/checkpoints/step_<N>.pt`` (N zero-padded, so names sort by step),
each a dict saved with ``torch.save``::

    {"format": CHECKPOINT_FORMAT, "algo": <algo.name>, "global_step": N, "config": <resolved YAML>,
     "rng": <global Python, NumPy and torch generator states>, "run": {"returns": [...]},
     <the algorithm's tracked state, see rlrun.core.state>}

They hold only tensors and plain values, so they load with ``torch.load(weights_only=True)``: a
checkpoint from elsewhere cannot run code. :class:`rlrun.core.run.Run` writes them atomically.
"""

from __future__ import annotations

import pickle
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FORMAT = 1       # bumped when the checkpoint layout changes incompatibly
CHECKPOINT_DIGITS = 12      # zero-padded step number in checkpoint file names


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (disk full, permissions); the previous one is intact."""


def padded_step(global_step: int) -> str:
    """``global_step`` zero-padded to CHECKPOINT_DIGITS digits, so that names sort by step."""
    return f"{global_step:0{CHECKPOINT_DIGITS}d}"


def step_name(global_step: int) -> str:
    """``step_<global_step>`` (padded): the stem of checkpoint, evaluation and video names."""
    return f"step_{padded_step(global_step)}"


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


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without executing code from it (``torch.load(weights_only=True)``).

    Raises:
        ValueError: if the file is missing or unreadable, or is not an rlrun checkpoint of this format:
            a file of pickled Python objects (e.g. a whole ``torch.save(model)``), a bare state dict,
            a truncated file or no PyTorch file at all, each named as such.
    """
    path = Path(path)
    expected = "an rlrun checkpoint (<run dir>/checkpoints/step_N.pt, written by rlrun)"
    if not path.is_file():
        raise ValueError(f"cannot load checkpoint {path}: no such file; expected {expected}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's message advises weights_only=False, i.e. running the file's code: not what a checkpoint needs
        raise ValueError(f"cannot load checkpoint {path}: not an rlrun checkpoint, it holds Python objects (e.g. a whole pickled "
                         f"model) that rlrun does not unpickle, since that could run code; expected {expected}, "
                         "which holds only tensors and plain values") from None
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise ValueError(f"cannot load checkpoint {path}: PyTorch cannot read it ({exc.__class__.__name__}: "
                         f"{first_line}; a truncated or corrupt file, or not a PyTorch file); expected "
                         f"{expected}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        if isinstance(payload, dict) and "format" not in payload:
            found = "a dict without rlrun's entries (a bare state dict?)"
        else:
            found = f"format {payload.get('format')!r}" if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not an rlrun checkpoint of format {CHECKPOINT_FORMAT}: it holds {found}; "
                         f"expected {expected}")
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


def find_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any], Path]:
    """(checkpoint path, payload, run dir) for a run directory (its newest valid checkpoint) or for a
    checkpoint file in ``<run dir>/checkpoints/``.

    Raises:
        FileNotFoundError: if ``path`` is neither, or the run holds no valid checkpoint.
        ValueError: if the checkpoint file cannot be loaded (see :func:`load_checkpoint`).
    """
    path = Path(path)
    if path.is_dir():
        ckpt_path, payload = latest_checkpoint(path)
        return ckpt_path, payload, path
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: expected a run directory or a checkpoint file")
    run_dir = path.parent.parent
    if path.parent.name != "checkpoints" or not (run_dir / "config.yaml").is_file():
        load_checkpoint(path)  # a file that is no rlrun checkpoint at all is named as such first
        raise FileNotFoundError(f"{path} is not in the checkpoints/ directory of a run "
                                "(<run dir>/checkpoints/step_N.pt)")
    return path, load_checkpoint(path), run_dir
