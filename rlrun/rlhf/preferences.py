"""Preferences: the Bradley-Terry model, its loss, synthetic labelers and agreement statistics.

The Bradley-Terry model (Bradley and Terry 1952) says that an item with latent reward R_a is
preferred to one with R_b with probability exp(R_a) / (exp(R_a) + exp(R_b)) = sigmoid(R_a - R_b).
Christiano et al. 2017 ("Deep reinforcement learning from human preferences", NeurIPS) apply it to
segments of trajectories, with R the sum of a learned per-step reward r(s, a) over the segment, and
fit r by the cross-entropy between this probability and the labels.

A label mu is the probability that the FIRST item of a pair is preferred: 1 (first), 0 (second)
or 0.5 (a tie, "equally good"). The files that hold segments, labels and text pairs are
rlrun.rlhf.preference_data's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

def bradley_terry_probability(reward_a: torch.Tensor | float, reward_b: torch.Tensor | float,
                              random_answer_prob: float = 0.0) -> torch.Tensor:
    """P(a preferred to b) = (1 - eps) * exp(R_a) / (exp(R_a) + exp(R_b)) + eps / 2.

    ``eps = random_answer_prob`` is the chance that the labeler answers uniformly at random
    (Christiano et al. 2017, section 2.2.3, use 0.1). Works elementwise on tensors of any shape.
    """
    reward_a, reward_b = torch.as_tensor(reward_a, dtype=torch.float64), torch.as_tensor(reward_b, dtype=torch.float64)
    return (1.0 - random_answer_prob) * torch.sigmoid(reward_a - reward_b) + random_answer_prob / 2.0


def preference_loss(returns_a: torch.Tensor, returns_b: torch.Tensor, labels: torch.Tensor,
                    random_answer_prob: float = 0.0, margin: torch.Tensor | float = 0.0,
                    center_coef: float = 0.0) -> torch.Tensor:
    """Mean Bradley-Terry cross-entropy of a batch of labelled pairs.

    loss = -mean(mu log P(a > b) + (1 - mu) log P(b > a)) + center_coef * mean((R_a + R_b)^2)

    where P(a > b) = (1 - eps) sigmoid(R_a - R_b - m) + eps / 2 for mu = 1, and symmetrically for
    mu = 0 (the preferred return must exceed the other by the margin m, as in TRL's RewardTrainer);
    ties (mu = 0.5) use no margin. With eps = 0 and m = 0 this is logistic regression on
    R_a - R_b. The centering term (TRL's ``center_rewards_coefficient``, Eisenstein et al. 2023)
    keeps the rewards near zero.

    Args:
        returns_a, returns_b: (B,) float predicted returns of the two segments (sums of r over steps).
        labels: (B,) float in {0, 0.5, 1}, the probability that segment a is preferred.
        random_answer_prob: eps in [0, 1).
        margin: a float or (B,) tensor m >= 0.
        center_coef: weight of the centering term (>= 0).

    Returns:
        A 0-d tensor.
    """
    labels = labels.to(returns_a.dtype)
    diff = returns_a - returns_b
    margin = torch.as_tensor(margin, dtype=diff.dtype, device=diff.device)
    strict = (labels != 0.5).to(diff.dtype)
    sign = 2.0 * labels - 1.0  # +1 when a is preferred, -1 when b is, 0 for a tie
    diff = diff - sign * strict * margin
    if random_answer_prob > 0:
        p_a = (1.0 - random_answer_prob) * torch.sigmoid(diff) + random_answer_prob / 2.0
        nll = -(labels * torch.log(p_a) + (1.0 - labels) * torch.log1p(-p_a))
    else:  # log-sigmoid form: exact for large |diff|
        nll = -(labels * F.logsigmoid(diff) + (1.0 - labels) * F.logsigmoid(-diff))
    loss = nll.mean()
    if center_coef > 0:
        loss = loss + center_coef * ((returns_a + returns_b) ** 2).mean()
    return loss


class SyntheticLabeler:
    """Labels pairs by their true returns, as the synthetic oracle of Christiano et al. 2017.

    Args:
        mode: ``deterministic`` (the higher true return is preferred, equal returns tie) or
            ``bradley_terry`` (mu ~ Bernoulli(sigmoid((R_a - R_b) / temperature)); equal returns tie).
        temperature: > 0, the return difference that makes the Bradley-Terry odds e:1.
        random_answer_prob: in [0, 1], the chance of answering 0 or 1 uniformly at random instead.
        seed: seed of the labeler's own generator.
    """

    def __init__(self, mode: str = "deterministic", temperature: float = 1.0, random_answer_prob: float = 0.0,
                 seed: int = 0):
        if mode not in ("deterministic", "bradley_terry"):
            raise ValueError(f"labeler mode {mode!r}: expected deterministic or bradley_terry")
        self.mode, self.temperature, self.random_answer_prob = mode, float(temperature), float(random_answer_prob)
        self.rng = np.random.default_rng(seed)

    def __call__(self, returns_a: np.ndarray, returns_b: np.ndarray) -> np.ndarray:
        """(P,) true returns of the first and second segments -> (P,) float32 labels in {0, 0.5, 1}."""
        returns_a, returns_b = np.asarray(returns_a, np.float64), np.asarray(returns_b, np.float64)
        diff = returns_a - returns_b
        if self.mode == "deterministic":
            labels = (diff > 0).astype(np.float64)
        else:
            p = 1.0 / (1.0 + np.exp(-np.clip(diff / self.temperature, -700, 700)))
            labels = (self.rng.random(diff.shape) < p).astype(np.float64)
        labels[diff == 0] = 0.5
        random = self.rng.random(diff.shape) < self.random_answer_prob
        labels[random] = self.rng.integers(0, 2, size=int(random.sum()))
        return labels.astype(np.float32)


# ---- statistics ------------------------------------------------------------------------------------

def correlations(predicted: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """(Pearson, Spearman) correlation of two (M,) arrays (scipy.stats); nan when one is constant."""
    from scipy import stats

    predicted, true = np.asarray(predicted, np.float64), np.asarray(true, np.float64)
    if len(predicted) < 2 or np.ptp(predicted) == 0 or np.ptp(true) == 0:
        return float("nan"), float("nan")
    return float(stats.pearsonr(predicted, true)[0]), float(stats.spearmanr(predicted, true)[0])
