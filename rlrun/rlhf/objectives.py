"""Objectives of reinforcement learning from human feedback on language models, apart from the training loops:
direct preference optimization and its variants, the per-token KL-penalized reward of PPO-RLHF with its adaptive
coefficient, and generalized advantage estimation over the tokens of a response.

Shapes: B sequences (prompt + response), T response tokens; ``mask`` (B, T) is 1 on a response's tokens up to and
including its EOS and 0 after it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DPO_LOSS_TYPES = ("sigmoid", "ipo")  # sigmoid: DPO and cDPO (Rafailov et al. 2023); ipo: Azar et al. 2023


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses of direct preference optimization and the implicit rewards.

    With h = (log pi(y_w|x) - log pi(y_l|x)) - (log pi_ref(y_w|x) - log pi_ref(y_l|x)):

    * ``sigmoid`` (Rafailov et al. 2023, eq. 7): -log sigmoid(beta h); with ``label_smoothing`` eps (conservative
      DPO, cDPO: the label is flipped with probability eps) -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h);
    * ``ipo`` (Azar et al. 2023, eq. 17): (h - 1 / (2 beta))^2.

    Args:
        policy_chosen, policy_rejected, reference_chosen, reference_rejected: (B,) summed log-probabilities of the
            chosen and rejected responses under the policy and the frozen reference.
        beta: > 0, the strength of the KL regularization toward the reference.
        loss_type: one of DPO_LOSS_TYPES.
        label_smoothing: eps in [0, 0.5), sigmoid loss only.

    Returns:
        (losses (B,), chosen rewards (B,), rejected rewards (B,)); the implicit reward of a response is
        beta (log pi(y|x) - log pi_ref(y|x)), without gradient.

    Raises:
        ValueError: for beta <= 0, an unknown loss_type, or label_smoothing outside [0, 0.5).
    """
    if beta <= 0:
        raise ValueError(f"beta={beta}: expected a number > 0")
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}: expected one of {', '.join(DPO_LOSS_TYPES)}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing={label_smoothing}: expected a number in [0, 0.5)")
    h = (policy_chosen - policy_rejected) - (reference_chosen - reference_rejected)
    if loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        losses = -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    chosen_rewards = (beta * (policy_chosen - reference_chosen)).detach()
    rejected_rewards = (beta * (policy_rejected - reference_rejected)).detach()
    return losses, chosen_rewards, rejected_rewards


def kl_penalized_rewards(scores: torch.Tensor, logprobs: torch.Tensor, reference_logprobs: torch.Tensor,
                         mask: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards of PPO-RLHF (Ziegler et al. 2019; Ouyang et al. 2022, eq. 2): -kl_coef times the sampled
    token's log-ratio log pi(a_t|s_t) - log pi_ref(a_t|s_t) at every response token, plus the sequence's score at
    its last token.

    Args:
        scores: (B,) the reward model's (or scorer's) score of each whole response.
        logprobs, reference_logprobs: (B, T) log-probabilities of the sampled tokens.
        mask: (B, T) 1 on the response's tokens up to its EOS, 0 after; every row has at least one token.
        kl_coef: >= 0.

    Returns:
        (rewards (B, T), 0 after the last token; the per-token KL estimates (B, T), masked).

    Raises:
        ValueError: for kl_coef < 0 or a row of the mask without a token.
    """
    if kl_coef < 0:
        raise ValueError(f"kl_coef={kl_coef}: expected a number >= 0")
    mask = mask.to(logprobs.dtype)
    lengths = mask.sum(dim=1).long()
    if (lengths < 1).any():
        raise ValueError("every response needs at least one token (a mask row is all 0)")
    kl = (logprobs - reference_logprobs) * mask
    rewards = -kl_coef * kl
    rewards[torch.arange(len(lengths)), lengths - 1] += scores.to(rewards.dtype)
    return rewards, kl


def token_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
              gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016) over the tokens of each response: the episode
    ends at the response's last token (EOS), whose successor is worth 0.

    Args:
        rewards, values, mask: (B, T), the mask 1 on the response's tokens and 0 after its end.
        gamma, gae_lambda: in [0, 1].

    Returns:
        (advantages (B, T), returns = advantages + values (B, T)), both 0 after the end.
    """
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    last = torch.zeros(values.shape[0], dtype=values.dtype, device=values.device)
    for t in reversed(range(values.shape[1])):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(last)
        next_live = mask[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * gae_lambda * next_live * last) * mask[:, t]
        advantages[:, t] = last
    return advantages, (advantages + values) * mask


class AdaptiveKLController:
    """The adaptive KL coefficient of Ziegler et al. 2019 (section 2.2): after a batch of ``steps`` samples with
    mean KL ``kl``, kl_coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * steps / horizon, so that the KL to the
    reference drifts toward ``target``.

    Args:
        kl_coef: the starting coefficient (>= 0).
        target: the target KL in nats per sequence (> 0), or None for a fixed coefficient.
        horizon: samples over which the coefficient may change by a factor of about e^0.2 (> 0).
    """

    ERROR_CLIP = 0.2  # the bound on the proportional error (Ziegler et al. 2019)

    def __init__(self, kl_coef: float, target: float | None, horizon: float):
        self.value, self.target, self.horizon = float(kl_coef), target, float(horizon)

    def update(self, kl: float, steps: int) -> float:
        """Adjust the coefficient after ``steps`` samples of mean KL ``kl``; returns the new coefficient."""
        if self.target is not None and math.isfinite(kl):
            error = min(max(kl / self.target - 1.0, -self.ERROR_CLIP), self.ERROR_CLIP)
            self.value *= 1.0 + error * steps / self.horizon
        return self.value

    def state_dict(self) -> dict:
        """The current coefficient, for a checkpoint."""
        return {"kl_coef": self.value}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.value = float(state["kl_coef"])


def best_of_n_kl(n: int) -> float:
    """The KL of best-of-n sampling to the sampling policy, log n - (n - 1) / n (Stiennon et al. 2020, appendix G),
    for comparing best-of-n with RL at matching KL.

    Raises:
        ValueError: for n < 1.
    """
    if n < 1:
        raise ValueError(f"n={n}: expected an integer >= 1")
    return math.log(n) - (n - 1) / n
