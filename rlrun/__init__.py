"""rlrun: a deep-RL experiment runner (Hydra configs, DQN on real Atari, TensorBoard, checkpoints)."""

from omegaconf import OmegaConf

__version__ = "0.1.0"

# ${rlrun_or:a,b} is a unless a is null or empty, else b: hydra.run.dir uses it to point a resumed
# run (resume=<dir>) at its own directory instead of a new one.
if not OmegaConf.has_resolver("rlrun_or"):
    OmegaConf.register_new_resolver("rlrun_or", lambda value, default: value if value else default)
