"""Running normalization of observations and rewards (Huang et al. 2022, "The 37 Implementation
Details of PPO", continuous-action details 5-8; gymnasium's NormalizeObservation/NormalizeReward).

The statistics live here, not in env wrappers, so that they are saved in checkpoints with the
networks and applied unchanged at evaluation.
"""

from __future__ import annotations

import numpy as np
import torch

EPSILON = 1e-8  # added to variances before dividing


class RunningMeanStd:
    """Mean and variance of a stream of arrays, merged batch by batch (Chan et al. 1979).

    Args:
        shape: shape of one sample, e.g. (17,) for HalfCheetah observations or () for returns.
    """

    def __init__(self, shape: tuple[int, ...] = ()):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = EPSILON

    def update(self, batch: np.ndarray) -> None:
        """Merge a (B, *shape) batch into the statistics."""
        batch_mean, batch_var, n = batch.mean(axis=0), batch.var(axis=0), batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean = np.asarray(self.mean + delta * n / total)  # stays an array for shape ()
        self.var = np.asarray((self.var * self.count + batch_var * n + delta ** 2 * self.count * n / total) / total)
        self.count = total

    def state_dict(self) -> dict:
        """Tensors and floats for a weights-only checkpoint."""
        return {"mean": torch.from_numpy(self.mean.copy()), "var": torch.from_numpy(self.var.copy()),
                "count": float(self.count)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output. Raises ValueError on a shape mismatch."""
        if tuple(state["mean"].shape) != self.mean.shape:
            raise ValueError(f"normalization statistics of shape {tuple(state['mean'].shape)} do not fit "
                             f"observations of shape {self.mean.shape}")
        self.mean, self.var, self.count = state["mean"].numpy().copy(), state["var"].numpy().copy(), state["count"]


class ObsNormalizer:
    """``clip((obs - mean) / sqrt(var + eps), -clip, clip)`` with running statistics; identity when disabled.

    Args:
        shape: observation shape.
        enabled: normalize (True) or pass observations through unchanged (False).
        clip: bound on normalized values (10 in CleanRL's ppo_continuous_action).
    """

    def __init__(self, shape: tuple[int, ...], enabled: bool, clip: float):
        self.enabled, self.clip = enabled, clip
        self.rms = RunningMeanStd(shape)

    def __call__(self, obs: np.ndarray, update: bool = False) -> np.ndarray:
        """Normalize (N, *shape) observations (float32); with ``update`` first merge them into the statistics."""
        if not self.enabled:
            return obs
        if update:
            self.rms.update(obs)
        return np.clip((obs - self.rms.mean) / np.sqrt(self.rms.var + EPSILON), -self.clip, self.clip).astype(np.float32)


class RewardNormalizer:
    """Scale rewards by the running standard deviation of the discounted return (not centred), then clip.

    Args:
        num_envs: number of envs whose rewards arrive together.
        gamma: the discount of the return whose scale is tracked.
        enabled: scale (True) or pass rewards through (False).
        clip: bound on scaled rewards.
    """

    def __init__(self, num_envs: int, gamma: float, enabled: bool, clip: float):
        self.enabled, self.gamma, self.clip = enabled, gamma, clip
        self.rms = RunningMeanStd(())
        self.returns = np.zeros(num_envs, np.float64)

    def __call__(self, rewards: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Scale (N,) rewards; ``done`` (N,) ends each env's running return after this step."""
        if not self.enabled:
            return rewards
        self.returns = self.returns * self.gamma + rewards
        self.rms.update(self.returns)
        self.returns[done] = 0.0
        return np.clip(rewards / np.sqrt(self.rms.var + EPSILON), -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict:
        """Statistics and running returns for a weights-only checkpoint."""
        return {"rms": self.rms.state_dict(), "returns": torch.from_numpy(self.returns.copy())}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.rms.load_state_dict(state["rms"])
        self.returns = state["returns"].numpy().copy()
