"""Rollout storage of on-policy algorithms (PPO): T steps of N envs, and generalized advantage estimation."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces


class RolloutStorage:
    """One rollout of ``num_steps`` (T) steps of ``num_envs`` (N) envs.

    On ``device`` (what the networks read and the update samples): ``obs`` (T, N, *obs_shape) as the agent
    saw them (uint8 frames or float32 vectors), ``actions`` (T, N) int64 or (T, N, A) float32 as sampled,
    ``logprobs``, ``values`` and ``final_values`` (T, N) float32 (the value of the final observation where a
    time limit ended an episode at step t, else 0). In NumPy, filled step by step and copied to the device
    once per rollout: ``rewards``, ``terminated`` and ``episode_end`` (T, N) float32 (flags in {0, 1}).

    With ``keep_raw`` (a learned-reward feedback reads them) also ``raw_obs`` and ``raw_next_obs``
    (T, N, *obs_shape) before normalization (the next one is the episode's last where it ended) and
    ``env_actions`` (T, N, ...) as applied to the env (clipped to a Box).
    """

    def __init__(self, num_steps: int, num_envs: int, observation_space: gym.Space, action_space: gym.Space,
                 device: torch.device, keep_raw: bool = False):
        t, n = num_steps, num_envs
        obs_shape = observation_space.shape
        continuous = isinstance(action_space, spaces.Box)
        obs_dtype = torch.uint8 if len(obs_shape) == 3 else torch.float32
        self.obs = torch.zeros((t, n, *obs_shape), dtype=obs_dtype, device=device)
        self.actions = torch.zeros((t, n, *action_space.shape), dtype=torch.float32 if continuous else torch.int64,
                                   device=device)
        self.logprobs, self.values, self.final_values = (torch.zeros((t, n), device=device) for _ in range(3))
        self.rewards, self.terminated, self.episode_end = (np.zeros((t, n), dtype=np.float32) for _ in range(3))
        if keep_raw:
            self.raw_obs = np.zeros((t, n, *obs_shape), dtype=observation_space.dtype)
            self.raw_next_obs = np.zeros_like(self.raw_obs)
            self.env_actions = np.zeros((t, n, *action_space.shape), dtype=np.float32 if continuous else np.int64)

    def advantages(self, next_value: torch.Tensor, gamma: float, gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(advantages, value targets), both (T, N) on the device: :func:`gae` of the stored rollout whose last
        observation is worth (N,) ``next_value``; the targets are advantages + values."""
        device = self.values.device
        rewards, terminated, episode_end = (torch.as_tensor(x, device=device)
                                            for x in (self.rewards, self.terminated, self.episode_end))
        advantages = gae(rewards, self.values, next_value, terminated, episode_end, self.final_values, gamma,
                         gae_lambda)
        return advantages, advantages + self.values


def gae(rewards: torch.Tensor, values: torch.Tensor, next_value: torch.Tensor, terminated: torch.Tensor,
        episode_end: torch.Tensor, final_values: torch.Tensor, gamma: float, gae_lambda: float) -> torch.Tensor:
    """Generalized advantage estimation (Schulman et al. 2016) over a (T, N) rollout.

    The successor of step t is step t+1's state, except where the episode ended at t
    (the env reset): then it is the episode's final observation, whose value is
    ``final_values[t]``. Terminated steps do not bootstrap (the successor's value counts 0);
    truncated ones bootstrap from ``final_values``. Advantages never flow across a
    termination (including an Atari life loss) or an episode end.

    Args:
        rewards, values, terminated, episode_end, final_values: (T, N) float32 (flags in {0, 1}).
        next_value: (N,) value of the observation after the last step.
        gamma, gae_lambda: discount and GAE parameter in [0, 1].

    Returns:
        (T, N) advantages; the value targets are advantages + values.
    """
    # the recursion runs over T small rows: NumPy on the host is several times faster than torch here
    r, v, term, end, final = (x.detach().cpu().numpy() for x in (rewards, values, terminated, episode_end, final_values))
    successors = np.concatenate([v[1:], next_value.detach().cpu().numpy()[None]])
    successors = np.where(end > 0, final, successors)
    deltas = r + gamma * successors * (1.0 - term) - v
    carries = gamma * gae_lambda * (1.0 - np.maximum(term, end))
    advantages = np.zeros_like(r)
    last = np.zeros_like(r[0])
    for t in reversed(range(r.shape[0])):
        last = deltas[t] + carries[t] * last
        advantages[t] = last
    return torch.as_tensor(advantages, device=rewards.device)
