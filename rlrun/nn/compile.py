"""``torch.compile`` of an algorithm's update, as the algorithms' ``compile`` and ``compile_mode`` keys ask."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# torch.compile's modes: "reduce-overhead" also replays the compiled kernels as CUDA graphs (on a GPU), which
# removes the launch overhead of small networks (LeanRL, https://github.com/pytorch-labs/LeanRL)
COMPILE_MODES = ["default", "reduce-overhead", "max-autotune"]


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_clone(v) for v in value)
    return value


def compile_update(fn: Callable[..., Any], mode: str = "default", what: str = "the update") -> Callable[..., Any]:
    """``torch.compile(fn, mode=mode)``, compiled on the first call; if compiling fails there (e.g. no C++
    compiler) it says so once and ``fn`` runs eagerly from then on.

    Under ``reduce-overhead`` (CUDA graphs) each call starts a new graph step and its tensors are cloned: a
    CUDA graph's outputs live in memory the next replay overwrites, and the algorithms keep statistics of
    several minibatches. Raises ValueError for a mode not in COMPILE_MODES.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode {mode!r}: expected one of {', '.join(COMPILE_MODES)}")
    compiled, chosen = torch.compile(fn, mode=mode), []
    graphs = mode == "reduce-overhead"

    def call(*args: Any) -> Any:
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        if not chosen:  # the first call compiles
            try:
                result = compiled(*args)
                chosen.append(compiled)
                return _clone(result) if graphs else result
            except (RuntimeError, OSError) as err:  # torch's compiler errors (no C++ compiler, ...) are RuntimeErrors
                print(f"rlrun: torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                      f"running {what} eagerly", flush=True)
                chosen.append(fn)
        result = chosen[0](*args)
        return _clone(result) if graphs and chosen[0] is compiled else result

    return call
