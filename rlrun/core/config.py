"""Validation of a composed config: one clear error before anything is allocated.

Hydra already rejects unknown group options and misspelled keys (configs are in
struct mode). What it cannot know is which values make sense; the checks here
name the key, the value and what is allowed, e.g.::

    rlrun: invalid config: algo.learning_rate=-0.001 is not allowed: expected a number > 0

Algorithm modules call these helpers from their own ``validate(cfg)``. This module also names the
keys a resumed run may change (:data:`RESUMABLE_KEYS`) and flattens configs to dotted keys.
"""

from __future__ import annotations

import numbers
import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf


# Keys a resumed run may change: they extend or observe the experiment without changing it.
RESUMABLE_KEYS = ("total_timesteps", "device", "torch_threads", "logging", "checkpoint", "eval")


class ConfigError(ValueError):
    """A config value is missing, of the wrong type or impossible.

    The message names the dotted key, the offending value and what is allowed.
    """


def get(cfg: DictConfig, key: str) -> Any:
    """Return ``cfg[key]`` for a dotted key, raising ConfigError if it is missing."""
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True, throw_on_resolution_failure=True)
    except Exception as exc:  # MissingMandatoryValue, InterpolationResolutionError
        raise ConfigError(f"{key} must be set ({exc.__class__.__name__}: {exc})") from None
    if value is None and OmegaConf.select(cfg, key, default="__absent__") == "__absent__":
        raise ConfigError(f"{key} is missing from the config")
    return value


def fail(key: str, value: Any, allowed: str) -> None:
    """Raise the standard ConfigError for ``key=value``."""
    raise ConfigError(f"{key}={value!r} is not allowed: expected {allowed}")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_int(cfg: DictConfig, key: str, low: int | None = None, high: int | None = None,
              optional: bool = False) -> int | None:
    """Check that ``cfg[key]`` is an int in [low, high] (None allowed if ``optional``)."""
    value = get(cfg, key)
    if value is None and optional:
        return None
    bounds = _bounds_text(low, high, ">=", "<=")
    if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        fail(key, value, f"an integer{bounds}" + (" or null" if optional else ""))
    return int(value)


def check_number(cfg: DictConfig, key: str, low: float | None = None, high: float | None = None,
                 low_open: bool = False, optional: bool = False, high_open: bool = False) -> float | None:
    """Check that ``cfg[key]`` is a real number in [low, high] (the ends excluded with ``low_open`` and
    ``high_open``)."""
    value = get(cfg, key)
    if value is None and optional:
        return None
    bounds = _bounds_text(low, high, ">" if low_open else ">=", "<" if high_open else "<=")
    bad = not _is_number(value)
    if not bad and low is not None:
        bad = value <= low if low_open else value < low
    if not bad and high is not None:
        bad = value >= high if high_open else value > high
    if bad:
        fail(key, value, f"a number{bounds}" + (" or null" if optional else ""))
    return float(value)


def check_bool(cfg: DictConfig, key: str) -> bool:
    """Check that ``cfg[key]`` is true or false."""
    value = get(cfg, key)
    if not isinstance(value, bool):
        fail(key, value, "true or false")
    return value


def check_choice(cfg: DictConfig, key: str, choices: list[str]) -> str:
    """Check that ``cfg[key]`` is one of ``choices``."""
    value = get(cfg, key)
    if value not in choices:
        fail(key, value, "one of " + ", ".join(choices))
    return value


def check_int_list(cfg: DictConfig, key: str, low: int = 1, allow_empty: bool = False) -> list[int]:
    """Check that ``cfg[key]`` is a list of integers >= low, non-empty unless ``allow_empty``."""
    value = get(cfg, key)
    items = list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else None
    if items is None or (not items and not allow_empty) or not all(_is_int(v) and v >= low for v in items):
        fail(key, value, f"a {'' if allow_empty else 'non-empty '}list of integers >= {low}, e.g. [120, 84]")
    return [int(v) for v in items]


def check_that(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless ``ok``: for checks that involve several keys."""
    if not ok:
        raise ConfigError(message)


MEMORY_WARN_FRACTION = 0.8  # warn when one allocation needs more than this fraction of the available memory


def check_memory(key: str, value: Any, needed_bytes: int, what: str) -> None:
    """Refuse ``key=value`` when ``what`` needs more bytes than the machine has available now (psutil's
    ``virtual_memory().available``), before anything is allocated or written; warn on stderr when it needs
    more than ``MEMORY_WARN_FRACTION`` of it (NumPy reserves the pages lazily, so such a buffer fails only
    when it fills, possibly hours later, or when something else takes the memory).

    Raises:
        ConfigError: "needs X GB, Y GB available".
    """
    import psutil  # a dependency of rlrun; imported here so that importing core stays light

    available = int(psutil.virtual_memory().available)
    if needed_bytes > available:
        fail(key, value, f"a size that fits in memory: {what} needs {needed_bytes / 1e9:.1f} GB, "
             f"{available / 1e9:.1f} GB available on this machine")
    if needed_bytes > MEMORY_WARN_FRACTION * available:
        print(f"rlrun: warning: {key}={value}: {what} needs {needed_bytes / 1e9:.1f} GB of the "
              f"{available / 1e9:.1f} GB available on this machine; the run fails if other programs take the "
              "rest before the buffer fills", file=sys.stderr, flush=True)


def _bounds_text(low: Any, high: Any, low_op: str, high_op: str) -> str:
    parts = []
    if low is not None:
        parts.append(f"{low_op} {low}")
    if high is not None:
        parts.append(f"{high_op} {high}")
    return (" " + " and ".join(parts)) if parts else ""


def device_unavailable(device: str) -> str | None:
    """Why this machine's torch cannot use ``device`` (no CUDA build or GPU, a CUDA index past the last
    GPU, no MPS), as the text after "expected", naming the devices it has; None if it can. ``auto`` and
    ``cpu`` always can.

    >>> device_unavailable("cpu") is None
    True
    """
    if device in ("auto", "cpu"):
        return None
    import torch  # imported here: rlrun-plot validates no device and starts without torch

    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    usable = ", ".join(["auto", "cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(cuda)]) * (cuda > 0)
                       + ["mps"] * mps)
    if device.startswith("cuda"):
        index = device.partition(":")[2]
        if cuda == 0:
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else f"torch (CUDA {torch.version.cuda}) finds no CUDA GPU")
            return f"a device this machine has ({why}: torch {torch.__version__}): {usable}"
        if index and (not index.isdigit() or int(index) >= cuda):
            return f"a device this machine has ({cuda} CUDA GPU{'s' * (cuda != 1)}): {usable}"
    elif device == "mps" and not mps:
        return f"a device this machine has (torch finds no Apple MPS device): {usable}"
    return None


def validate_run(cfg: DictConfig) -> None:
    """Check the run-level keys shared by every algorithm (seed, total_timesteps, device, ...).

    Raises:
        ConfigError: naming the first bad key.
    """
    check_int(cfg, "seed", low=0)
    check_int(cfg, "total_timesteps", low=1)
    device = get(cfg, "device")
    if not isinstance(device, str) or not (
        device in ("auto", "cpu", "cuda", "mps") or device.startswith("cuda:")
    ):
        fail("device", device, "auto, cpu, cuda, cuda:N or mps")
    unavailable = device_unavailable(device)
    if unavailable:
        fail("device", device, unavailable)
    check_int(cfg, "torch_threads", low=0)
    check_bool(cfg, "torch_deterministic")
    check_int(cfg, "logging.log_interval", low=1)
    check_choice(cfg, "logging.progress", ["auto", "bar", "lines", "none"])
    check_number(cfg, "logging.progress_interval", low=0, low_open=True)
    check_int(cfg, "logging.metric_episodes", low=1)
    check_int(cfg, "checkpoint.interval", low=0)
    check_int(cfg, "checkpoint.keep_last", low=1)
    check_int(cfg, "eval.episodes", low=1)
    check_number(cfg, "eval.epsilon", low=0, high=1)
    check_int(cfg, "eval.interval", low=0)
    check_bool(cfg, "eval.video")
    check_int(cfg, "eval.seed_offset", low=0)



def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict (or DictConfig, resolved) as dotted keys -> leaf values; lists are leaves.

    >>> flatten({"algo": {"name": "dqn", "hidden_sizes": [64]}, "seed": 1})
    {'algo.name': 'dqn', 'algo.hidden_sizes': [64], 'seed': 1}
    """
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def experiment_keys(cfg: DictConfig) -> set[str]:
    """Dotted keys of ``cfg`` that define the experiment: every leaf outside RESUMABLE_KEYS, ``resume`` and
    ``family_preset`` (informational: the preset's own keys are compared)."""
    return {key for key in flatten(cfg) if key.split(".")[0] not in (*RESUMABLE_KEYS, "resume", "family_preset")}
