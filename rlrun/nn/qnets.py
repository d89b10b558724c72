"""Q-networks of the DQN family beyond the Nature DQN: dueling heads (Wang et al. 2016), factorized
Gaussian noisy layers (Fortunato et al. 2018) and distributional C51 outputs (Bellemare et al. 2017),
each an independent switch, all three together in Rainbow (Hessel et al. 2018).

With every switch off, :func:`make_q_network` returns the plain network of
:func:`rlrun.nn.networks.make_network` (same layers, same initialization), so a plain DQN run is
unchanged by this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from rlrun.nn.networks import NATURE_FEATURES, NatureTrunk, make_network


class NoisyLinear(nn.Module):
    """A linear layer with factorized Gaussian noise on its weights and biases (Fortunato et al. 2018,
    "Noisy Networks for Exploration", ICLR, section 3 and 3.2).

    y = (mu_w + sigma_w * eps_w) x + mu_b + sigma_b * eps_b, with eps_w = f(eps_out) f(eps_in)^T and
    eps_b = f(eps_out), f(x) = sign(x) sqrt(|x|), eps_in (in,) and eps_out (out,) standard normal.
    Initialization (factorized case): mu ~ U[-1/sqrt(in), 1/sqrt(in)], sigma = std_init / sqrt(in).

    The noise is drawn from torch's global generator by :meth:`reset_noise` and kept as the two factor
    vectors f(eps_in), f(eps_out) in buffers (part of the state dict and so of a checkpoint). The noisy
    weights are never built: W x = mu_w x + f(eps_out) * (sigma_w (f(eps_in) * x)), which is cheaper than
    forming the (out, in) matrix at every call (measured in scripts/bench_dqn.py). In eval mode the layer
    uses its mean weights only.

    Input: (B, in_features) float32. Output: (B, out_features) float32.
    """

    def __init__(self, in_features: int, out_features: int, std_init: float = 0.5):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.weight_sigma = nn.Parameter(torch.full((out_features, in_features), std_init * bound))
        self.bias_mu = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.bias_sigma = nn.Parameter(torch.full((out_features,), std_init * bound))
        self.register_buffer("epsilon_in", torch.zeros(in_features))    # f(eps_in)
        self.register_buffer("epsilon_out", torch.zeros(out_features))  # f(eps_out), also the bias noise
        self.reset_noise()

    @staticmethod
    def _scaled_noise(size: int, device: torch.device) -> torch.Tensor:
        x = torch.randn(size, device=device)
        return x.sign() * x.abs().sqrt()

    def reset_noise(self) -> None:
        """Draw new factorized noise: in + out standard normal numbers."""
        self.epsilon_in.copy_(self._scaled_noise(self.in_features, self.weight_mu.device))
        self.epsilon_out.copy_(self._scaled_noise(self.out_features, self.weight_mu.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = F.linear(x, self.weight_mu, self.bias_mu)
        if not self.training:
            return mean
        return mean + (F.linear(x * self.epsilon_in, self.weight_sigma) + self.bias_sigma) * self.epsilon_out


def reset_noise(module: nn.Module) -> None:
    """Resample the noise of every :class:`NoisyLinear` in ``module`` (nothing happens without one)."""
    for layer in module.modules():
        if isinstance(layer, NoisyLinear):
            layer.reset_noise()


def dueling_aggregate(value: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """Q = V + (A - mean_a A), Wang et al. 2016, "Dueling Network Architectures for Deep Reinforcement
    Learning", ICML, equation (9).

    Args:
        value: (B, 1, Z) float32 state values (Z = 1, or the atoms of a distributional head).
        advantage: (B, A, Z) float32 advantages.

    Returns:
        (B, A, Z) float32.
    """
    return value + advantage - advantage.mean(dim=1, keepdim=True)


class QNetwork(nn.Module):
    """A Q-network with any of the Rainbow switches.

    Pixels (C, H, W) uint8: the Nature CNN's convolutions, then a 512-unit hidden layer and the output
    (in each of the two streams when dueling, as Wang et al. 2016 do). Vectors (D,): an MLP of
    ``hidden_sizes``; when dueling, its last hidden layer is split into a value and an advantage stream.
    ``noisy`` makes every linear layer a :class:`NoisyLinear` (Hessel et al. 2018). ``num_atoms`` > 1
    outputs a categorical return distribution per action over ``support`` (Bellemare et al. 2017).

    Args:
        obs_shape: one observation's shape.
        n_actions: A.
        hidden_sizes: MLP widths for vector observations (ignored for pixels: 512, as the Nature DQN).
        dueling, noisy: the switches.
        num_atoms: Z; 1 = an expected-value network.
        v_min, v_max: the support's ends, for Z > 1.
        noisy_std: sigma_0 of the noisy layers (0.5 in Fortunato et al. 2018's factorized case).

    ``forward``: (B, *obs_shape) -> (B, A) float32 Q-values (the expectation over the support when Z > 1).
    """

    def __init__(self, obs_shape: Sequence[int], n_actions: int, hidden_sizes: Sequence[int], dueling: bool = False,
                 noisy: bool = False, num_atoms: int = 1, v_min: float = -10.0, v_max: float = 10.0,
                 noisy_std: float = 0.5):
        super().__init__()
        self.n_actions, self.num_atoms, self.dueling = n_actions, num_atoms, dueling
        linear = partial(NoisyLinear, std_init=noisy_std) if noisy else nn.Linear
        if len(obs_shape) == 3:
            self.encoder: nn.Module = NatureTrunk(obs_shape[0], obs_shape[-1], fully_connected=False)
            width, hidden = self.encoder.out_features, [NATURE_FEATURES]
        elif len(obs_shape) == 1:
            width, hidden = int(obs_shape[0]), list(hidden_sizes)
            shared = []
            for h in hidden[:-1] if dueling else []:
                shared += [linear(width, h), nn.ReLU()]
                width = h
            self.encoder = nn.Sequential(*shared)
            hidden = hidden[-1:] if dueling else hidden
        else:
            raise ValueError(f"observation shape {tuple(obs_shape)} is not supported: expected (C, H, W) frames "
                             "or (D,) vectors")

        def stream(out: int) -> nn.Sequential:
            layers, w = [], width
            for h in hidden:
                layers += [linear(w, h), nn.ReLU()]
                w = h
            return nn.Sequential(*layers, linear(w, out))

        if dueling:
            self.value, self.advantage = stream(num_atoms), stream(n_actions * num_atoms)
        else:
            self.q = stream(n_actions * num_atoms)
        self.register_buffer("support", torch.linspace(v_min, v_max, num_atoms) if num_atoms > 1 else torch.zeros(1))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *obs_shape) -> (B, A, Z) float32: per-action values (Z = 1) or atom logits (Z > 1)."""
        h = self.encoder(x.float() if x.dim() == 2 else x)
        if self.dueling:
            return dueling_aggregate(self.value(h).view(-1, 1, self.num_atoms),
                                     self.advantage(h).view(-1, self.n_actions, self.num_atoms))
        return self.q(h).view(-1, self.n_actions, self.num_atoms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.logits(x)
        if self.num_atoms == 1:
            return out.squeeze(2)
        return (out.softmax(dim=2) * self.support).sum(dim=2)


def make_q_network(obs_shape: Sequence[int], n_actions: int, hidden_sizes: Sequence[int], dueling: bool = False,
                   noisy: bool = False, num_atoms: int = 1, v_min: float = -10.0, v_max: float = 10.0,
                   noisy_std: float = 0.5) -> nn.Module:
    """The Q-network for these switches: :func:`make_network`'s plain Nature CNN or MLP when all are off,
    else a :class:`QNetwork` (arguments as there).

    Raises:
        ValueError: for observation shapes other than (C, H, W) and (D,).
    """
    if not (dueling or noisy or num_atoms > 1):
        return make_network(obs_shape, n_actions, hidden_sizes)
    return QNetwork(obs_shape, n_actions, hidden_sizes, dueling, noisy, num_atoms, v_min, v_max, noisy_std)
