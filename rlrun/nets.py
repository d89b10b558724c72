"""Networks shared by the algorithms: the Nature CNN and MLPs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

PIXEL_SCALE = 255.0  # uint8 frames are scaled to [0, 1]


class NatureCNN(nn.Module):
    """The convolutional network of Mnih et al. 2015 (Nature 518:529), Methods.

    Input: (B, C, 84, 84) uint8 frames (C = frame stack), scaled by 1/255 inside.
    Output: (B, out_features) float32.
    Layers: conv 32x8x8 stride 4, conv 64x4x4 stride 2, conv 64x3x3 stride 1,
    each followed by ReLU, then a 512-unit ReLU layer and a linear output layer.
    """

    def __init__(self, in_channels: int, out_features: int, screen_size: int = 84):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = self.trunk(torch.zeros(1, in_channels, screen_size, screen_size)).shape[1]
        self.head = nn.Sequential(nn.Linear(n_flat, 512), nn.ReLU(), nn.Linear(512, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x.float() / PIXEL_SCALE))


class MLP(nn.Module):
    """A ReLU multilayer perceptron for vector observations.

    Input: (B, in_features) float32. Output: (B, out_features) float32.
    """

    def __init__(self, in_features: int, out_features: int, hidden_sizes: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float())


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
