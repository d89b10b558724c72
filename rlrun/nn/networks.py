"""Networks shared by the algorithms: the Nature CNN, MLPs, one-hot encoding of state indices and the
orthogonal initialization of Huang et al. 2022."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

PIXEL_SCALE = 255.0  # uint8 frames are scaled to [0, 1]


NATURE_FEATURES = 512  # width of the Nature CNN's last hidden layer


class NatureTrunk(nn.Module):
    """The convolutional trunk of Mnih et al. 2015 (Nature 518:529), Methods, up to its 512 features.

    Input: (B, C, H, W) uint8 frames (C = frame stack, 84x84 in the paper), scaled by 1/255 inside.
    Output: (B, out_features) float32, 512 (or the 3,136 flattened convolution features at 84x84 without
    the fully connected layer, ``fully_connected=False``, for heads that bring their own, e.g. dueling streams).
    Layers: conv 32x8x8 stride 4, conv 64x4x4 stride 2, conv 64x3x3 stride 1 and a
    512-unit layer, each followed by ReLU.
    """

    def __init__(self, in_channels: int, screen_size: int = 84, fully_connected: bool = True):
        super().__init__()
        convs = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = convs(torch.zeros(1, in_channels, screen_size, screen_size)).shape[1]
        fc = [nn.Linear(n_flat, NATURE_FEATURES), nn.ReLU()] if fully_connected else []
        self.layers = nn.Sequential(*convs, *fc)
        self.out_features = NATURE_FEATURES if fully_connected else n_flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Hand the convolutions their input in the weights' memory format: a channels-last
        # network given NCHW input converts it inside every convolution (about 20% slower on CPU).
        channels_last = self.layers[0].weight.is_contiguous(memory_format=torch.channels_last)
        x = x.to(dtype=torch.float32, copy=True,  # a copy even of float input, scaled in place below
                 memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        return self.layers(x.mul_(1.0 / PIXEL_SCALE))


class NatureCNN(nn.Module):
    """The Nature DQN network: :class:`NatureTrunk` and a linear output layer.

    Input: (B, C, H, W) uint8 frames. Output: (B, out_features) float32.
    """

    def __init__(self, in_channels: int, out_features: int, screen_size: int = 84):
        super().__init__()
        self.trunk = NatureTrunk(in_channels, screen_size)
        self.head = nn.Linear(NATURE_FEATURES, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}  # names usable in configs


class OneHot(nn.Module):
    """(B,) or (B, 1) int64 state indices -> (B, n) float32 one-hot vectors (networks on ``Discrete`` states)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(x.long().reshape(-1), self.n).float()


class ObsEncoder:
    """Observations as float32 feature vectors, in NumPy: ``Discrete(S)`` state indices as (S,) one-hot
    vectors, 1-D Box observations as they are.

    ``__call__``: (N,) indices or (N, D) vectors -> (N, features) float32.

    Attributes:
        one_hot: the space is ``Discrete``.
        features: the width of the vectors (S or D).
    """

    def __init__(self, observation_space: gym.Space):
        self.one_hot = isinstance(observation_space, spaces.Discrete)
        self.features = int(observation_space.n) if self.one_hot else int(observation_space.shape[0])

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if self.one_hot:
            return np.eye(self.features, dtype=np.float32)[np.asarray(obs, dtype=np.int64).reshape(-1)]
        return np.asarray(obs, dtype=np.float32).reshape(len(obs), self.features)


class MLP(nn.Module):
    """A multilayer perceptron for vector observations (ReLU or tanh hidden layers).

    Input: (B, in_features) float32. Output: (B, out_features) float32.
    """

    def __init__(self, in_features: int, out_features: int, hidden_sizes: Sequence[int], activation: str = "relu"):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float())


def orthogonal_init(module: nn.Module, gain: float = 2 ** 0.5, last_gain: float | None = None) -> nn.Module:
    """Orthogonal weights with ``gain`` and zero biases for every linear and conv layer of ``module``
    (Saxe et al. 2014; the PPO initialization of Huang et al. 2022, detail 2); the last such layer
    gets ``last_gain`` if given. Returns ``module``."""
    layers = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for i, layer in enumerate(layers):
        g = last_gain if last_gain is not None and i == len(layers) - 1 else gain
        nn.init.orthogonal_(layer.weight, g)
        nn.init.zeros_(layer.bias)
    return module


def make_network(obs_shape: Sequence[int], out_features: int, hidden_sizes: Sequence[int]) -> nn.Module:
    """Nature CNN for (C, H, W) pixel observations, MLP for flat vector observations.

    Raises:
        ValueError: for observation shapes of any other rank.
    """
    if len(obs_shape) == 3:
        return NatureCNN(obs_shape[0], out_features, screen_size=obs_shape[-1])
    if len(obs_shape) == 1:
        return MLP(obs_shape[0], out_features, hidden_sizes)
    raise ValueError(f"observation shape {tuple(obs_shape)} is not supported: expected (C, H, W) frames or (D,) vectors")
