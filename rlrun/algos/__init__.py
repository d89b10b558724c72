"""The algorithm registry: ``algo.name`` -> the module ``rlrun.algos.<name>``.

An algorithm is a module in this package with two functions:

* ``validate(cfg) -> None`` raises ``rlrun.config.ConfigError`` on a bad value of
  its keys, before anything is allocated;
* ``train(cfg, run) -> float`` trains, logging through the ``rlrun.run.Run``, and
  returns the metric a sweep optimizes (the mean return of the last episodes).

Optional: ``make_policy(cfg, state, envs, device, epsilon, seed)`` makes its checkpoints
playable by ``rlrun-eval``; module constants ``METRIC`` (what ``train`` returns, when it is not
the mean return), ``EVAL_USES_EPSILON`` (rlrun-eval's ``--epsilon`` applies) and ``EVAL_POLICY``
(how rlrun-eval describes a policy without epsilon; default "the policy's mode").

Adding ``rlrun/algos/ppo.py`` with these two functions makes ``algo=ppo`` work;
the CLI does not change.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from rlrun.config import ConfigError


def available() -> list[str]:
    """Names of the algorithms in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get(name: str) -> ModuleType:
    """Return the algorithm module for ``name``.

    Raises:
        ConfigError: if no module of that name exists, listing the available ones.
    """
    if name not in available():
        raise ConfigError(f"algo.name={name!r} is not allowed: expected one of {', '.join(available())}")
    module = importlib.import_module(f"{__name__}.{name}")
    for fn in ("validate", "train"):
        if not callable(getattr(module, fn, None)):
            raise ConfigError(f"algorithm module {module.__name__} has no {fn}(cfg, ...) function")
    return module
