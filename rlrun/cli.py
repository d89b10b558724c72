"""The ``rlrun`` command: compose the config with Hydra, validate it, open the Run, dispatch.

    rlrun algo=dqn env=breakout seed=3
    rlrun --cfg job                       # print the composed config
    rlrun -m algo.learning_rate=1e-4,3e-4 # a sweep, one run directory per job

Bad values end the program with one line naming the key, the value and what is
allowed, before any env, network or buffer is created.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rlrun import algos
from rlrun.config import ConfigError, validate_run
from rlrun.envs import validate_env
from rlrun.run import Run, RunDirError, seed_everything

EXIT_BAD_CONFIG = 2  # exit status for invalid configs and unusable run directories


def validate(cfg: DictConfig):
    """Validate the whole composed config; returns the algorithm module. Raises ConfigError."""
    validate_run(cfg)
    validate_env(cfg)
    algo = algos.get(cfg.algo.name)
    algo.validate(cfg)
    return algo


def run_training(cfg: DictConfig, run_dir: str | Path) -> float:
    """Validate ``cfg``, open a Run in ``run_dir``, train, and return the final metric.

    Raises:
        ConfigError: on a bad config value (nothing has been created then).
        RunDirError: if ``run_dir`` already holds a run.
    """
    algo = validate(cfg)
    if cfg.torch_threads > 0:
        torch.set_num_threads(int(cfg.torch_threads))
    torch.backends.cudnn.deterministic = bool(cfg.torch_deterministic)
    seed_everything(int(cfg.seed))
    run = Run(cfg, run_dir)
    print(f"rlrun: {cfg.algo.name} on {cfg.env.id}, run directory {run.dir}\n"
          f"rlrun: watch it with: tensorboard --logdir {run.dir}", flush=True)
    try:
        metric = algo.train(cfg, run)
    finally:
        run.close()
    print(f"rlrun: done, mean return of the last {len(run.returns)} episodes: {metric:.2f}; "
          f"checkpoints in {run.ckpt_dir}", flush=True)
    return metric


@hydra.main(version_base="1.3", config_path="pkg://rlrun.configs", config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        return run_training(cfg, run_dir)
    except (ConfigError, RunDirError) as exc:
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # Hydra created it for us; leave nothing behind
        print(f"rlrun: invalid config: {exc}" if isinstance(exc, ConfigError) else f"rlrun: {exc}",
              file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_CONFIG)


def main() -> None:
    """Console-script entry point."""
    _hydra_main()


if __name__ == "__main__":
    main()
