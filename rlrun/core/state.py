"""The state an algorithm names once: what its checkpoints hold and how a resumed run gets it back.

An algorithm hands its stateful objects to :meth:`rlrun.core.run.Run.track` by name, once; the Run
writes them into every checkpoint (and into the state that periodic evaluation plays), and on resume
loads each one back in place. What each kind of object becomes in the checkpoint, under its name:

==============================================  =====================================================
object                                          checkpoint entry
==============================================  =====================================================
``state_dict()`` / ``load_state_dict()``        its state dict; torch modules are loaded with a shape
(modules, optimizers, normalizers, datasets)    check that names the network (:func:`load_weights`)
``numpy.random.Generator``                      its bit generator's state
``numpy.ndarray``                               a tensor copy; restored in place (e.g. a Q-table)
:class:`Counters` and other objects with        their ``state_dict()``'s keys, at the top level of the
``flat_state = True`` (a VecEnv: envs, obs)     checkpoint; ``load_state_dict`` gets the whole checkpoint
``save(directory)`` / ``load(directory)``       not in the file: ``checkpoints/<name>_<step>/`` beside it
(a replay buffer)                               (with ``checkpoint.save_replay``); loaded if present
a function of no arguments                      its value when saved (derived, e.g. a table for rlrun-eval);
                                                never loaded
``None``                                        ``None``
==============================================  =====================================================

Everything saved is tensors and plain values, so checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from rlrun.core.config import ConfigError


class Counters(SimpleNamespace):
    """Plain values of a training loop (ints, floats, bools, None, tensors) that a checkpoint must carry.

    Each field is a top-level key of the checkpoint. A field missing from an older checkpoint keeps its
    initial value.

    >>> counters = Counters(iteration=0, next_log_step=0)
    >>> counters.iteration += 1
    """

    flat_state = True

    def state_dict(self) -> dict[str, Any]:
        """The fields as a dict."""
        return dict(vars(self))

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Set every field that ``checkpoint`` holds."""
        for name in vars(self):
            if name in checkpoint:
                setattr(self, name, checkpoint[name])


def is_directory_state(obj: Any) -> bool:
    """True for objects saved as files of their own (``save(directory)``, ``load(directory)``) rather than in
    the checkpoint file: replay buffers."""
    return callable(getattr(obj, "save", None)) and callable(getattr(obj, "load", None)) \
        and not hasattr(obj, "state_dict")


def is_derived(obj: Any) -> bool:
    """True for functions of no arguments whose value is saved but never loaded back."""
    return callable(obj) and not hasattr(obj, "state_dict") and not isinstance(obj, np.random.Generator)


def state_payload(tracked: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint entries of the ``tracked`` objects (see the module docstring), without directory state."""
    payload: dict[str, Any] = {}
    for name, obj in tracked.items():
        if obj is None:
            payload[name] = None
        elif is_directory_state(obj):
            continue
        elif getattr(obj, "flat_state", False):
            payload.update(obj.state_dict())
        elif isinstance(obj, np.random.Generator):
            payload[name] = obj.bit_generator.state
        elif isinstance(obj, np.ndarray):
            payload[name] = torch.from_numpy(obj.copy())
        elif hasattr(obj, "state_dict"):
            payload[name] = obj.state_dict()
        elif is_derived(obj):
            payload[name] = obj()
        else:
            raise TypeError(f"cannot checkpoint {name}={type(obj).__name__}: expected an object with state_dict(), "
                            "a NumPy generator or array, Counters, a directory state or a function")
    return payload


def load_payload(tracked: dict[str, Any], checkpoint: dict[str, Any], cfg: DictConfig) -> None:
    """Load ``checkpoint``'s entries back into the ``tracked`` objects, in their order (directory state and
    derived values excepted).

    Raises:
        ConfigError: if the checkpoint lacks an entry, or a network's weights do not fit the config.
    """
    for name, obj in tracked.items():
        if obj is None or is_directory_state(obj) or is_derived(obj):
            continue
        if getattr(obj, "flat_state", False):
            obj.load_state_dict(checkpoint)
            continue
        if name not in checkpoint:
            raise ConfigError(f"the checkpoint has no {name!r} (its keys: {', '.join(sorted(checkpoint))}): "
                              f"expected a checkpoint of algo={cfg.algo.name} written with this config")
        state = checkpoint[name]
        if isinstance(obj, np.random.Generator):
            obj.bit_generator.state = state
        elif isinstance(obj, np.ndarray):
            obj[...] = state.numpy()
        elif isinstance(obj, torch.nn.Module):
            load_weights(obj, state, name, cfg)
        else:
            obj.load_state_dict(state)


def load_weights(module: torch.nn.Module, state: dict, name: str, cfg: DictConfig) -> None:
    """Load a checkpoint's ``name`` weights into ``module``, refusing ones whose shapes do not fit the config.

    Raises:
        ConfigError: naming the network, the env, the hidden sizes and the first mismatch.
    """
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        hidden = cfg.algo.get("hidden_sizes", None)
        raise ConfigError(f"the checkpoint's {name} does not match the config (env {cfg.env.id}, "
                          f"algo.hidden_sizes={None if hidden is None else list(hidden)}): "
                          f"{(lines[1] if len(lines) > 1 else lines[0]).strip()}") from None

