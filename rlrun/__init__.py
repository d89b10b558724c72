"""rlrun: a deep-RL experiment runner (Hydra configs, DQN on real Atari, TensorBoard, checkpoints)."""

__version__ = "0.1.0"
