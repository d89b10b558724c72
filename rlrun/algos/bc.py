"""Behavior cloning: imitation learning as supervised learning of the expert's actions.

Pomerleau 1991, "Efficient training of artificial neural networks for autonomous navigation" (ALVINN);
the imitation-learning lecture (seeds/001) recaps it: reduce reinforcement learning to supervised
learning by fitting a map from states to actions on the expert's demonstrations. No reward and no
dynamics model are used; the price is distribution shift (Ross et al. 2011): a learner that errs
reaches states the demonstrations never show and acts badly there, which ``algo=dagger`` repairs.

The demonstrations (``algo.demos``, a .npz written by ``rlrun-eval <run dir> --save-demos demos.npz``,
see :mod:`rlrun.data.demos`) must come from the run's env with the same observation and action spaces.
A fraction ``algo.holdout_fraction`` of their steps, drawn uniformly, is held out for a validation
loss; the network is trained on the rest for ``algo.epochs`` passes of minibatches of
``algo.batch_size`` steps with Adam:

* Discrete actions: cross-entropy of the network's logits with the expert's action; the learner
  plays the argmax.
* 1-D Box actions: mean squared error of the network's output (the mean action) with the expert's
  action; the learner plays it clipped to the action bounds.

The network is an MLP (``algo.hidden_sizes``, ``algo.activation``) on vector observations or on
one-hot vectors of ``Discrete`` state indices, and the Nature CNN (Mnih et al. 2015) on pixel
observations. Observations are not normalized.

``global_step`` counts gradient steps; ``total_timesteps`` is not used. Logs per epoch
``losses/imitation_loss`` (mean training loss of the epoch) and, when steps are held out,
``charts/holdout_loss`` (and ``charts/holdout_accuracy`` for discrete actions). Every
``algo.eval_interval`` epochs and after the last one, the learner plays ``algo.eval_episodes``
episodes (env seed ``seed + eval.seed_offset``): their true returns are ``charts/episodic_return``.
Returns the mean true return of the final learner's episodes.

The functions below (:class:`Learner`, :func:`train_epoch`, :func:`evaluate_learner`,
:func:`make_policy`) are ``algo=dagger``'s as well.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from omegaconf import DictConfig
from torch import nn

from rlrun.core.config import check_choice, check_int, check_int_list, check_number, fail, get
from rlrun.core.registry import AlgoSpec, register
from rlrun.core.run import Run, resolve_device
from rlrun.core.state import Counters, load_weights
from rlrun.data.demos import ExpertDataset, check_demos, load_demos
from rlrun.envs.factory import env_spaces
from rlrun.envs.rollout import evaluate
from rlrun.nn.networks import MLP, NatureCNN, OneHot
from rlrun.nn.optim import make_adam

METRIC = "mean true return of the final learner's evaluation episodes"  # what train returns
EVAL_POLICY = "the learner's mode (argmax of the logits, or the mean action clipped to the bounds)"  # rlrun-eval
ADAM_EPS = 1e-8  # Adam's epsilon (torch's default)
PIXEL_RANK = 3  # (C, H, W) observations are pixels, played through the Nature CNN


def validate_learner(cfg: DictConfig) -> tuple[gym.Space, gym.Space]:
    """Check the keys shared with ``algo=dagger`` (network, fitting, evaluation) and that the env's spaces
    are supported; returns (observation space, action space).

    Raises:
        ConfigError: naming the first bad key, or ``env`` with its spaces and what is supported.
    """
    a = "algo."
    check_int_list(cfg, a + "hidden_sizes", allow_empty=True)
    check_choice(cfg, a + "activation", ["relu", "tanh"])
    check_number(cfg, a + "learning_rate", low=0, low_open=True)
    check_int(cfg, a + "batch_size", low=1)
    check_int(cfg, a + "epochs", low=1)
    check_number(cfg, a + "holdout_fraction", low=0, high=1, high_open=True)
    check_int(cfg, a + "eval_interval", low=0)
    check_int(cfg, a + "eval_episodes", low=1)
    obs_space, action_space = env_spaces(cfg)
    vector = isinstance(obs_space, spaces.Box) and len(obs_space.shape) in (1, PIXEL_RANK)
    if not (vector or isinstance(obs_space, spaces.Discrete)):
        fail("env", cfg.env.name, f"an env with vector, pixel or Discrete observations for algo={cfg.algo.name}; "
             f"{cfg.env.id} observes {obs_space}")
    if not (isinstance(action_space, spaces.Discrete)
            or (isinstance(action_space, spaces.Box) and len(action_space.shape) == 1)):
        fail("env", cfg.env.name, f"an env with Discrete or 1-D Box actions for algo={cfg.algo.name}; "
             f"{cfg.env.id} acts in {action_space}")
    return obs_space, action_space


def validate(cfg: DictConfig) -> None:
    """Check the bc keys, the env's spaces and the demonstrations file; raises ConfigError."""
    obs_space, action_space = validate_learner(cfg)
    path = get(cfg, "algo.demos")
    if path is None:
        fail("algo.demos", None, "the path of a demonstrations .npz of this env, written by "
             "rlrun-eval <expert run dir> --episodes N --save-demos demos.npz")
    demos = load_demos(path, "algo.demos")
    check_demos(demos, obs_space, action_space, str(cfg.env.id), "algo.demos")


class Learner(nn.Module):
    """The cloned policy's network.

    Input: (B, D) vector observations (any float or int dtype), (B, C, H, W) uint8 frames, or (B,) int64
    indices of a ``Discrete(n)`` observation space (one-hot encoded inside). Output: (B, n) float32
    logits for ``Discrete(n)`` actions, or (B, A) float32 mean actions for a ``Box((A,))``.

    Args:
        obs_space, action_space: one env's spaces (see :func:`validate_learner` for the supported ones).
        hidden_sizes: MLP hidden widths ([] = linear); unused for pixels (the Nature CNN's 512 features).
        activation: relu or tanh (MLP).
    """

    def __init__(self, obs_space: gym.Space, action_space: gym.Space, hidden_sizes: list[int], activation: str):
        super().__init__()
        self.obs_space, self.action_space = obs_space, action_space
        self.continuous = isinstance(action_space, spaces.Box)
        out = int(action_space.shape[0]) if self.continuous else int(action_space.n)
        if isinstance(obs_space, spaces.Discrete):
            self.net = nn.Sequential(OneHot(int(obs_space.n)), MLP(int(obs_space.n), out, hidden_sizes, activation))
        elif len(obs_space.shape) == PIXEL_RANK:
            self.net = NatureCNN(obs_space.shape[0], out, screen_size=obs_space.shape[-1])
        else:
            self.net = MLP(int(obs_space.shape[0]), out, hidden_sizes, activation)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


def make_learner(cfg: DictConfig, obs_space: gym.Space, action_space: gym.Space, device: torch.device) -> Learner:
    """A freshly initialized :class:`Learner` from ``cfg.algo`` (torch's default initialization, from the
    global torch generator), on ``device``."""
    return Learner(obs_space, action_space, list(cfg.algo.hidden_sizes), str(cfg.algo.activation)).to(device)


def imitation_loss(learner: Learner, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """The behavior-cloning loss of a batch: cross-entropy of the logits with (B,) int64 expert actions,
    or the mean squared error (averaged over the batch and the A action dimensions) of the mean action
    with (B, A) float32 expert actions. Returns a scalar tensor."""
    out = learner(obs)
    if learner.continuous:
        return F.mse_loss(out, actions.float())
    return F.cross_entropy(out, actions.long())


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    """Gradient steps of one pass over ``num_train`` steps in minibatches of ``batch_size`` (the last one smaller)."""
    return -(-num_train // batch_size)


def train_epoch(learner: Learner, optimizer: torch.optim.Optimizer, obs: torch.Tensor, actions: torch.Tensor,
                batch_size: int) -> float:
    """One pass over the training steps in a random order (the global torch generator), one Adam step per
    minibatch of ``batch_size``; returns the mean of the minibatch losses."""
    order = torch.randperm(len(obs), device=obs.device)
    losses = []
    for start in range(0, len(obs), batch_size):
        batch = order[start:start + batch_size]
        loss = imitation_loss(learner, obs[batch], actions[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def holdout_metrics(learner: Learner, obs: torch.Tensor, actions: torch.Tensor) -> dict[str, float]:
    """{"charts/holdout_loss": the imitation loss of the held-out steps, "charts/holdout_accuracy": the
    share of them where the argmax is the expert's action (discrete actions only)}; {} without held-out steps."""
    if len(obs) == 0:
        return {}
    with torch.no_grad():
        out = learner(obs)
        if learner.continuous:
            return {"charts/holdout_loss": F.mse_loss(out, actions.float()).item()}
        return {"charts/holdout_loss": F.cross_entropy(out, actions.long()).item(),
                "charts/holdout_accuracy": (out.argmax(dim=1) == actions).float().mean().item()}


def learner_policy(learner: Learner, action_space: gym.Space, device: torch.device):
    """``act(obs)``: (N, *obs_shape) observations -> (N,) int64 argmax actions, or (N, A) float32 mean
    actions clipped to the bounds of ``action_space``."""

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = learner(torch.as_tensor(np.asarray(obs), device=device))
        if learner.continuous:
            return np.clip(out.cpu().numpy(), action_space.low, action_space.high).astype(np.float32)
        return out.argmax(dim=1).cpu().numpy()

    return act


def evaluate_learner(cfg: DictConfig, learner: Learner, episodes: int, device: torch.device) -> dict[str, Any]:
    """Play ``episodes`` whole episodes of the learner's mode on one env of ``cfg`` seeded with
    ``seed + eval.seed_offset``; returns :func:`rlrun.envs.rollout.play`'s statistics (true returns)."""
    seed = int(cfg.seed) + int(cfg.eval.seed_offset)
    return evaluate(cfg, lambda env: learner_policy(learner, env.single_action_space, device), episodes, seed)


def log_evaluation(run: Run, global_step: int, stats: dict[str, Any]) -> None:
    """Log the learner's episodes: charts/episodic_return and charts/episodic_length at ``global_step``."""
    run.log_episodes(global_step, list(zip(stats["returns"], stats["lengths"])))


def make_policy(cfg: DictConfig, state: dict, envs, device: torch.device, epsilon: float, seed: int):
    """The evaluation policy of a bc or dagger checkpoint: the learner's mode (``epsilon`` and ``seed`` are
    unused).

    Returns:
        ``act(obs)``: (N, *obs_shape) observations to (N,) int64 or (N, A) float32 actions.

    Raises:
        ConfigError: if the checkpoint's network does not fit the env and config.
    """
    learner = make_learner(cfg, envs.single_observation_space, envs.single_action_space, device)
    load_weights(learner, state["learner"], "learner", cfg)
    learner.eval()
    return learner_policy(learner, envs.single_action_space, device)


def train(cfg: DictConfig, run: Run) -> float:
    """Clone the demonstrations ``algo.demos``; returns the mean true return of the final learner."""
    args = cfg.algo
    device = resolve_device(cfg.device)
    obs_space, action_space = env_spaces(cfg)
    demos = load_demos(args.demos, "algo.demos")
    data = ExpertDataset(float(args.holdout_fraction), int(cfg.seed))  # the split is a function of the seed
    data.add(demos.obs, demos.actions)
    train_obs, train_actions, held_obs, held_actions = data.split(device)
    learner = make_learner(cfg, obs_space, action_space, device)
    optimizer = make_adam(learner, float(args.learning_rate), ADAM_EPS)
    batch_size, epochs, eval_interval = int(args.batch_size), int(args.epochs), int(args.eval_interval)
    per_epoch = steps_per_epoch(len(train_obs), batch_size)
    run.set_total(epochs * per_epoch)
    print(f"rlrun: behavior cloning on {len(train_obs)} steps of {demos.num_episodes} demonstrations "
          f"(expert return {demos.returns().mean():.2f}), {len(held_obs)} held out", flush=True)

    # STATE: what a checkpoint holds; a resumed run loads it back here
    counters = Counters(epoch=0, final_return=float("nan"))  # final_return: of the last evaluation
    run.track(learner=learner, optimizer=optimizer, counters=counters)

    while counters.epoch < epochs:
        # ALGO LOGIC: one pass of supervised learning over the expert's (observation, action) pairs
        loss = train_epoch(learner, optimizer, train_obs, train_actions, batch_size)
        counters.epoch += 1
        global_step = counters.epoch * per_epoch
        run.log(global_step, {"losses/imitation_loss": loss, **holdout_metrics(learner, held_obs, held_actions)})
        if counters.epoch == epochs or (eval_interval > 0 and counters.epoch % eval_interval == 0):
            stats = evaluate_learner(cfg, learner, int(args.eval_episodes), device)
            counters.final_return = stats["mean"]
            log_evaluation(run, global_step, stats)
        if run.end_iteration(global_step):
            break
    run.finish(counters.epoch * per_epoch)
    if not run.should_stop:
        print(f"rlrun: behavior cloning: the learner's mean true return is {counters.final_return:.2f} over "
              f"{int(args.eval_episodes)} episodes", flush=True)
    return float(counters.final_return)


register(AlgoSpec("bc", validate, train, make_policy, eval_policy=EVAL_POLICY, metric=METRIC))
