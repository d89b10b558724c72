"""Maximum-entropy inverse RL: the reward that explains an expert's demonstrations, on an MDP with known dynamics.

Ziebart, Maas, Bagnell and Dey 2008, "Maximum Entropy Inverse Reinforcement Learning" (AAAI), as derived
in the imitation-learning lecture (seeds/001): among trajectory distributions that match the expert's
feature counts, the one of maximum entropy is P(tau) proportional to exp(R(tau)), R(tau) = sum_t r(s_t).
Fitting r by maximum likelihood of the demonstrations,

    L(theta) = 1/N sum_i [ R_theta(tau_i) - log Z_theta(s_0^i) ],    log Z_theta(s_0) = V_0(s_0),

has the gradient "expert feature counts minus expected feature counts":

    dL/dtheta = f_E - f_theta,    f_E = 1/N sum_i sum_t phi(s_t^i),    f_theta = sum_s d_theta(s) phi(s),

for a linear reward r(s) = theta . phi(s); for an MLP reward r_theta(s) = MLP(phi(s)) (Wulfmeier et al.
2015, "Maximum Entropy Deep Inverse Reinforcement Learning") it is sum_s (d_E(s) - d_theta(s)) dr(s)/dtheta.
With known dynamics every iteration is exact dynamic programming over the horizon T = env.max_episode_steps:

1. soft value iteration backwards (the soft backup of ``algo=value_iteration algo.soft=true``): Q_t(s, a) = r(s) +
   sum_s' P(s'|s, a) V_{t+1}(s'), V_t(s) = log sum_a exp Q_t(s, a), V_T = 0; the maximum-entropy policy
   pi_t(a|s) = exp(Q_t(s, a) - V_t(s));
2. forward dynamic programming for the expected state-visitation frequencies: D_0 = the demonstrations'
   start distribution, D_{t+1}(s') = sum_{s,a} D_t(s) pi_t(a|s) P(s'|s, a), d_theta = sum_{t<T} D_t
   (terminal states end an episode: they earn nothing and are not counted);
3. a gradient step on L (Adam), until the feature counts match: max_k |f_E,k - f_theta,k| / T below
   ``algo.tolerance`` (or ``algo.max_iterations`` steps).

With deterministic dynamics L is exactly the log-probability of the demonstrations' trajectories; with
stochastic dynamics it is the causal-entropy dual (Ziebart et al. 2010), whose gradient is the same.

``global_step`` counts gradient steps; ``total_timesteps`` is not used. Logs per step
``irl/log_likelihood`` (L), ``irl/action_log_likelihood`` (1/N sum_i sum_t log pi_t(a_t^i | s_t^i)),
``irl/feature_count_gap`` (max_k |f_E - f_theta| / T), ``irl/visitation_gap`` (max_s |d_E - d_theta| / T,
the visitation frequencies per step) and, where the env's reward is a state reward,
``irl/true_reward_pearson``. At the end it plays the learned soft-optimal policy in the env
(``charts/episodic_return``, true returns) and writes into the run directory:

  reward_model.pt   the learned r(s) as a reward-model checkpoint (rlrun.rlhf.reward_models) over one-hot
                    observations: ``reward=learned reward.path=...`` on the env with ``env.kwargs.one_hot=true``
  reward.csv        state, learned_reward, true_reward (the env's, where it has one)
  visitation.csv    state, expert, learned: visitation frequencies per step (each column sums to <= 1)
  weights.csv       with a linear reward: feature, learned weight (and the env's true weight, where known)
"""

from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from rlrun.algos.value_iteration import eval_config, make_policy, soft_policy, soft_value, state_indices
from rlrun.core.config import ConfigError, check_choice, check_int, check_int_list, check_number, fail, get
from rlrun.core.registry import AlgoSpec, register
from rlrun.core.run import Run
from rlrun.core.state import Counters
from rlrun.data.demos import Demos, check_demos, load_demos
from rlrun.envs.factory import env_spaces, probe_env
from rlrun.envs.lecture import TabularModel
from rlrun.envs.reference import tabular_model
from rlrun.envs.rollout import evaluate
from rlrun.nn.networks import MLP
from rlrun.rlhf.reward_models import RewardEnsemble, save_reward_model



def validate(cfg: DictConfig) -> None:
    """Check the maxent_irl keys, the env's model and horizon, and the demonstrations; raises ConfigError."""
    a = "algo."
    demos_path = get(cfg, a + "demos")
    if not isinstance(demos_path, str) or not demos_path:
        fail(a + "demos", demos_path, "the path of a demonstrations .npz (rlrun-eval <expert run> --save-demos PATH)")
    check_choice(cfg, a + "features", ["env", "one_hot"])
    if check_choice(cfg, a + "reward", ["linear", "mlp"]) == "mlp":
        check_int_list(cfg, a + "hidden_sizes")
    check_number(cfg, a + "learning_rate", low=0, low_open=True)
    check_int(cfg, a + "max_iterations", low=1)
    check_number(cfg, a + "tolerance", low=0, low_open=True)
    model = tabular_model(cfg)  # discrete states and an exact model (names the env otherwise)
    horizon = check_int(cfg, "env.max_episode_steps", low=1, optional=True)
    if horizon is None:
        fail("env.max_episode_steps", None, "the horizon T of the demonstrations (int >= 1): maximum-entropy "
             "inverse RL here solves the finite-horizon problem")
    state_features(cfg, model)  # the features cover every state
    demos = load_demos(demos_path, a + "demos")
    check_demos(demos, *env_spaces(cfg), cfg.env.id, a + "demos")
    longest = int(demos.episode_lengths.max())
    if longest > horizon:
        fail("env.max_episode_steps", horizon, f"at least the longest demonstration ({longest} steps)")


def state_features(cfg: DictConfig, model: TabularModel) -> np.ndarray:
    """(S, D) float64 features phi(s): the env's own (``algo.features=env``, the gridworld's feature map) or
    one-hot states (``one_hot``, D = S).

    Raises:
        ConfigError: the env has no features of its own, or they do not cover every state of its model.
    """
    num_states = model.rewards.shape[0]
    if cfg.algo.features == "one_hot":
        return np.eye(num_states)
    unwrapped = probe_env(cfg)[2]
    if not hasattr(unwrapped, "state_features"):
        fail("algo.features", "env", f"one_hot for {cfg.env.id}, which has no state features of its own "
             "(the gridworld has: env=gridworld)")
    phi = np.asarray(unwrapped.state_features(), dtype=np.float64)
    if phi.ndim != 2 or phi.shape[0] != num_states or not np.abs(phi).sum(axis=1).all():
        raise ConfigError(f"algo.features=env: the features of {cfg.env.id} (shape {phi.shape}) do not cover its "
                          f"{num_states} states: expected a nonzero feature vector for every state")
    return phi


def demo_states(demos: Demos, obs_space: gym.Space) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(states (T_i,) int64, actions (T_i,) int64)] of each demonstration, whose observations are state
    indices or one-hot vectors of ``obs_space``."""
    return [(state_indices(obs, obs_space), actions.astype(np.int64)) for obs, actions in demos.episodes()]


def expert_statistics(episodes: list[tuple[np.ndarray, np.ndarray]], num_states: int) -> tuple[np.ndarray, np.ndarray]:
    """(start distribution (S,), visitation counts per episode d_E (S,)) of the demonstrations, float64."""
    start = np.bincount([s[0] for s, _ in episodes], minlength=num_states) / len(episodes)
    visits = np.bincount(np.concatenate([s for s, _ in episodes]), minlength=num_states) / len(episodes)
    return start.astype(np.float64), visits.astype(np.float64)


def soft_value_iteration(rewards: np.ndarray, model: TabularModel, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """The maximum-entropy policy of a state reward over a finite horizon.

    Args:
        rewards: (S,) float64 r(s), earned in every state acted in.
        model: transitions (S, A, S) and terminal states (worth 0) of the MDP.
        horizon: T >= 1.

    Returns:
        q: (T, S, A) float64 soft Q_t for t = 0..T-1 (index t = time, T - t steps left);
        v0: (S,) float64 V_0(s) = log Z(s), the log-partition function of trajectories from s.
    """
    q_by_time = np.zeros((horizon, *model.rewards.shape))
    v = np.zeros(len(rewards))  # V_T = 0: nothing is earned after the last step
    for t in reversed(range(horizon)):
        q_by_time[t] = rewards[:, None] + model.transitions @ v
        v = soft_value(q_by_time[t])
        v[model.terminal] = 0.0  # an episode that entered a terminal state earns nothing more
    return q_by_time, v


def visitation_frequencies(policy: np.ndarray, model: TabularModel, start: np.ndarray) -> np.ndarray:
    """Expected state visits at each time step by forward dynamic programming (Ziebart et al. 2008, Alg. 1).

    Args:
        policy: (T, S, A) float64 pi_t(a | s).
        model: transitions (S, A, S); mass entering a terminal state leaves (the episode ends).
        start: (S,) float64 distribution of s_0.

    Returns:
        (T, S) float64 D_t(s) = P(s_t = s, episode still running); d(s) = D.sum(0) is the expected number of
        visits per episode.
    """
    horizon = policy.shape[0]
    visits = np.zeros((horizon, len(start)))
    d = np.where(model.terminal, 0.0, start)
    for t in range(horizon):
        visits[t] = d
        d = np.einsum("s,sa,sap->p", d, policy[t], model.transitions)
        d[model.terminal] = 0.0
    return visits


def expected_visits(q: np.ndarray, model: TabularModel, start: np.ndarray) -> np.ndarray:
    """(S,) float64 d(s): expected visits per episode of the soft policy of (T, S, A) ``q`` from the (S,)
    ``start`` distribution (:func:`visitation_frequencies` summed over time)."""
    return visitation_frequencies(soft_policy(q), model, start).sum(axis=0)


def log_likelihood(rewards: np.ndarray, v0: np.ndarray, episodes: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """L = 1/N sum_i [R(tau_i) - log Z(s_0^i)]: the lecture's log-likelihood of the demonstrations under
    P(tau) = exp(R(tau)) / Z(s_0), with (S,) rewards and (S,) log Z = V_0 of :func:`soft_value_iteration`."""
    return float(np.mean([rewards[s].sum() - v0[s[0]] for s, _ in episodes]))


def action_log_likelihood(q: np.ndarray, episodes: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """1/N sum_i sum_t log pi_t(a_t^i | s_t^i) under the soft policy of (T, S, A) ``q``."""
    log_pi = np.log(np.maximum(soft_policy(q), np.finfo(np.float64).tiny))
    return float(np.mean([log_pi[np.arange(len(s)), s, a].sum() for s, a in episodes]))


class StateReward(nn.Module):
    """r(s) from (S, D) features: linear theta . phi(s) (no bias: over a finite horizon a constant changes no
    trajectory's probability) or an MLP on phi(s)."""

    def __init__(self, num_features: int, kind: str, hidden_sizes: list[int]):
        super().__init__()
        self.net = nn.Linear(num_features, 1, bias=False) if kind == "linear" else MLP(num_features, 1, hidden_sizes).net
        if kind == "linear":
            nn.init.zeros_(self.net.weight)  # start from the uniform (maximum-entropy) policy

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(S, D) float64 -> (S,) float64 rewards."""
        return self.net(features).squeeze(-1)


class SoftPolicyTables:
    """The soft-optimal policy of the current reward, under the keys of a soft value-iteration checkpoint
    (q_table, q_by_steps_left, horizon, soft), so that ``value_iteration.make_policy`` plays it (rlrun-eval,
    eval.interval). Derived from the reward when saved; nothing to load back."""

    flat_state = True

    def __init__(self, rewards: Callable[[], np.ndarray], model: TabularModel, horizon: int):
        self.rewards, self.model, self.horizon = rewards, model, horizon

    def state_dict(self) -> dict:
        """The tables of the soft policy of ``rewards()`` over the horizon."""
        q, _ = soft_value_iteration(self.rewards(), self.model, self.horizon)
        return {"q_table": torch.from_numpy(q[0].copy()), "q_by_steps_left": torch.from_numpy(q[::-1].copy()),
                "horizon": self.horizon, "soft": True}

    def load_state_dict(self, checkpoint: dict) -> None:
        """Nothing: the tables follow from the restored reward."""


def train(cfg: DictConfig, run: Run) -> float:
    """Fit a state reward to ``algo.demos`` by maximum-entropy IRL, write it as a reward model, play its soft
    policy; returns the mean true return of that policy's ``eval.episodes`` episodes."""
    model = tabular_model(cfg)
    num_states = model.rewards.shape[0]
    horizon = int(cfg.env.max_episode_steps)
    phi = state_features(cfg, model)
    obs_space, action_space = env_spaces(cfg)
    episodes = demo_states(load_demos(cfg.algo.demos, "algo.demos"), obs_space)
    start, expert_visits = expert_statistics(episodes, num_states)
    expert_counts = phi.T @ expert_visits  # (D,) f_E
    true_rewards = model.rewards[:, 0] if np.allclose(model.rewards, model.rewards[:, :1]) else None

    torch.manual_seed(int(cfg.seed))
    reward_net = StateReward(phi.shape[1], cfg.algo.reward, list(cfg.algo.get("hidden_sizes", []))).double()
    optimizer = torch.optim.Adam(reward_net.parameters(), lr=float(cfg.algo.learning_rate))
    features = torch.from_numpy(phi)

    def rewards_now() -> np.ndarray:
        with torch.no_grad():
            return reward_net(features).numpy().copy()

    # STATE: what a checkpoint holds (and the soft policy that rlrun-eval plays); a resumed run loads it back here
    counters = Counters(converged=False)
    run.track(reward_net=reward_net, optimizer=optimizer, counters=counters,
              policy=SoftPolicyTables(rewards_now, model, horizon))
    step = run.start_step
    run.set_total(int(cfg.algo.max_iterations))
    gap = float("inf")
    while not counters.converged and step < int(cfg.algo.max_iterations):
        # ALGO LOGIC: soft value iteration, forward visitation frequencies, then the likelihood gradient
        r = reward_net(features)
        q, v0 = soft_value_iteration(r.detach().numpy(), model, horizon)
        visits = expected_visits(q, model, start)  # (S,) d_theta
        gap = float(np.abs(expert_counts - phi.T @ visits).max()) / horizon
        scalars = {"irl/log_likelihood": log_likelihood(r.detach().numpy(), v0, episodes),
                   "irl/action_log_likelihood": action_log_likelihood(q, episodes),
                   "irl/feature_count_gap": gap,
                   "irl/visitation_gap": float(np.abs(expert_visits - visits).max()) / horizon}
        if true_rewards is not None and np.std(true_rewards) > 0 and np.std(r.detach().numpy()) > 0:
            scalars["irl/true_reward_pearson"] = float(np.corrcoef(r.detach().numpy(), true_rewards)[0, 1])
        counters.converged = gap < float(cfg.algo.tolerance)
        if not counters.converged:
            # dL/dr(s) = d_E(s) - d_theta(s): minimize its negative inner product with r
            optimizer.zero_grad()
            (-(torch.from_numpy(expert_visits - visits) * r).sum()).backward()
            optimizer.step()
        step += 1
        run.log(step, scalars)
        if run.end_iteration(step):
            run.finish(step)
            return run.mean_return()
    if not counters.converged:
        print(f"rlrun: maxent_irl stopped after algo.max_iterations={cfg.algo.max_iterations} steps with a "
              f"feature-count gap of {gap:.3g} per step (algo.tolerance={cfg.algo.tolerance:g})", flush=True)

    learned = rewards_now()
    q, v0 = soft_value_iteration(learned, model, horizon)
    visits = expected_visits(q, model, start)
    visitation_gap = float(np.abs(expert_visits - visits).max()) / horizon
    write_outputs(cfg, run, learned, true_rewards, expert_visits / horizon, visits / horizon, reward_net)
    ensemble = RewardEnsemble((num_states,), action_space, [], "relu", 1, use_actions=False).double()
    with torch.no_grad():  # a table over one-hot states: the linear layer's weights are r(s)
        ensemble.members[0].head.net[0].weight[0] = torch.from_numpy(learned)
        ensemble.members[0].head.net[0].bias.zero_()
    save_reward_model(ensemble.float(), run.dir / "reward_model.pt", str(cfg.env.id),
                      {"algo": "maxent_irl", "state_rewards": learned.tolist(),
                       "metrics": {"feature_count_gap": gap, "visitation_gap": visitation_gap,
                                   "log_likelihood": log_likelihood(learned, v0, episodes),
                                   "converged": counters.converged, "iterations": step}})
    print(f"rlrun: maxent_irl: feature-count gap {gap:.2g} per step after {step} steps; reward model written to "
          f"{run.dir / 'reward_model.pt'}", flush=True)

    state, seed = run.state(), int(cfg.seed) + int(cfg.eval.seed_offset)
    stats = evaluate(eval_config(cfg, horizon), lambda env: make_policy(cfg, state, env, torch.device("cpu"), 0.0, seed),
                     int(cfg.eval.episodes), seed)
    run.log_episodes(step, list(zip(stats["returns"], stats["lengths"])))
    run.finish(step)
    return run.mean_return()


def write_outputs(cfg: DictConfig, run: Run, learned: np.ndarray, true_rewards: np.ndarray | None,
                  expert: np.ndarray, visits: np.ndarray, reward_net: StateReward) -> None:
    """reward.csv, visitation.csv and (linear reward) weights.csv; see the module docstring."""
    run.write_csv("reward.csv", ["state", "learned_reward", "true_reward"],
                  [[s, float(r), "" if true_rewards is None else float(true_rewards[s])] for s, r in enumerate(learned)])
    run.write_csv("visitation.csv", ["state", "expert", "learned"],
                  [[s, float(e), float(v)] for s, (e, v) in enumerate(zip(expert, visits))])
    if cfg.algo.reward == "linear":
        unwrapped = probe_env(cfg)[2]
        names = list(getattr(unwrapped, "feature_names", [])) if cfg.algo.features == "env" else []
        true_w = list(getattr(unwrapped, "feature_weights", [])) if cfg.algo.features == "env" else []
        weights = reward_net.net.weight.detach().numpy()[0]
        run.write_csv("weights.csv", ["feature", "learned_weight", "true_weight"],
                      [[names[k] if k < len(names) else k, float(w), float(true_w[k]) if k < len(true_w) else ""]
                       for k, w in enumerate(weights)])


register(AlgoSpec("maxent_irl", validate, train, make_policy,
                  eval_policy="samples of the learned reward's soft-optimal policy",
                  metric="the mean true return of the learned reward's soft-optimal policy (eval.episodes episodes)"))
