"""Reproduce the lectures' results with rlrun and write the table in docs/lectures.md.

Every result is one or more experiment configs under ``configs/experiment/lecture/`` (what
``rlrun +experiment=lecture/<name>`` runs) plus a check that reads the run directory (its CSV
tables and TensorBoard scalars) and says what was reproduced and whether it matches the lecture.
The runs go one after the other, in this process, each into its own run directory under
``--out-dir`` (default ``outputs/lectures/<date-time>/``).

Usage::

    python scripts/reproduce_lectures.py                   # every result; writes docs/lectures.md
    python scripts/reproduce_lectures.py --quick           # small budgets for the long runs; CI's check
    python scripts/reproduce_lectures.py --only trap_greedy recycling_qtable

The exit status is 1 when a result run at its full budget does not match the lecture (a result
whose budget ``--quick`` shrank is reported but cannot fail), 0 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import io
import itertools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

# benchlib.py sits next to this script, so it is on sys.path when the script runs
from benchlib import compose_config, machine_info

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "lectures.md"
CS230 = "CS230 deep RL (seeds/000)"
SCALING = "Scaling up RL (seeds/003)"

# the lecture's Q-table of the recycling chain at gamma 0.9, rows S1..S5, columns (left, right)
RECYCLING_Q = np.array([[0.0, 0.0], [2.0, 9.0], [8.1, 10.0], [9.0, 10.0], [0.0, 0.0]])
RECYCLING_NONTERMINAL = [1, 2, 3]
SLIDE_SAMPLES = [(0.0, "R", -7), (0.3, "R", -6), (1.6, "L", -5), (0.2, "R", -4), (1.3, "R", -3), (2.4, "L", -2),
                 (2.1, "R", -1)]  # the "Calculate gradient estimate" slide: (x, action, Q)
SLIDE_GRADIENT = (2.1, -7.0)  # by hand: sum_t Q_t * 0.5 * (+-1) * (x_t, 1) at w = b = 0
RLHF = "RLHF (seeds/001)"
IMITATION = "Imitation learning (seeds/001)"
MAXENT_GRID = dict(size=(2, 2), feature_map=["ab", "ca"], feature_rewards={"a": 0.1, "b": 1.0, "c": -0.5},
                   slip_prob=0.0, start=(0, 0))  # a deterministic 2x2 grid: 5^3 = 125 trajectories of 3 steps
MAXENT_HORIZON = 3
MAXENT_PERTURBATIONS = 1000  # random feasible distributions compared with exp(R)/Z
MAXENT_SEED = 0
GRADIENT_HORIZON = 20  # the default gridworld's horizon
GRADIENT_EPISODES = 200  # demonstrations sampled from the soft-optimal expert for the gradient check
GRADIENT_EPS = 1e-6  # central finite-difference step
EXPERT_DEMOS = 1000  # episodes of the soft-optimal expert turned into demonstrations
CORRIDOR_DEMOS = 3  # expert episodes behavior cloning gets on the race track (DAgger's round 0 plays as many)
CORRIDOR_EVAL_EPISODES = 100  # episodes per evaluation of the expert and the learners (slips make returns noisy)
DAGGER_NEAR_EXPERT = 1.0  # DAgger's final return at least the expert's minus this (seeds 1-10: 0.2 to 1.1 below)
BC_DRIFT = 3.0  # behavior cloning's return at most the expert's minus this (seeds 1-10: 4.7 to 10.6 below)
PIZZA_EQUAL = 20.0  # the lecture's reward for either pizza when she does not mind which
PIZZA_DEEP_DISH, PIZZA_FLAT = 100.0, 10.0  # the lecture's rewards when she likes deep dish much more
PIZZA_GUESSES = (0.9, 0.95)  # the lecture's guess of P(deep dish preferred) for 100 vs 10
PIZZA_GUESS_GAPS = (np.log(9.0), np.log(19.0))  # by hand, ln(p / (1 - p)): the reward gaps that give the guesses
STRONG_PREFERENCE = 0.9  # what holds of the guess: P at least this
TRANSITIVITY_TRIPLES = 10_000  # random (r_i, r_j, r_k) checked
# rewards uniform in [-this, this]: probabilities in [0.0025, 0.9975]; nearer 0 or 1 the rounding of p alone
# costs about 1e-16 / min(p, 1 - p) (measured max errors: 5e-13 with rewards in [-5, 5], 5e-9 in [-10, 10])
TRANSITIVITY_REWARD_RANGE = 3.0
TRANSITIVITY_SEED = 0
EXACT = 1e-12  # "exactly, up to float64 rounding" for the preference rows
ARM_REWARDS = [1.0, 3.0, 0.0, 2.0]  # a Bradley-Terry matrix over 4 arms: arm 1 wins every way
# a preference cycle 0 > 1 > 3 > 0 that no Bradley-Terry model gives; P[i, j] = P(arm i beats arm j)
CYCLE_MATRIX = np.array([[0.5, 0.6, 0.6, 0.1],
                         [0.4, 0.5, 0.6, 0.55],
                         [0.4, 0.4, 0.5, 0.55],
                         [0.9, 0.45, 0.45, 0.5]])
# by hand from the definitions: every arm loses to someone; wins (2, 2, 1, 1); Borda (1.3, 1.55, 1.35, 1.8)
CYCLE_WINNERS = (None, [0, 1], [3])  # (Condorcet, Copeland, Borda)


# ---- reading run directories ---------------------------------------------------------------

def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """(header, (rows, columns) float64 array) of a numeric CSV written by an rlrun run (True/False read as 1/0)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    flags = {"True": 1.0, "False": 0.0}
    return rows[0], np.array([[flags[v] if v in flags else float(v) for v in row] for row in rows[1:]])


def q_table(run_dir: Path) -> np.ndarray:
    """(S, A) Q-table from ``q_table.csv`` (first column: the state)."""
    return read_csv(run_dir / "q_table.csv")[1][:, 1:]


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a TensorBoard tag of a run."""
    from rlrun.core.events import read_scalars

    return [(step, value) for step, value, _ in read_scalars(run_dir).get(tag, [])]


def fmt_table(q: np.ndarray) -> str:
    return "; ".join("(" + ", ".join(f"{v:g}" for v in np.round(row, 3)) + ")" for row in q)


# ---- the checks: run directories -> (what was reproduced, whether it matches) ----------------

def check_return_gamma1(dirs: list[Path]) -> tuple[str, bool]:
    header, table = read_csv(dirs[0] / "optimal_return.csv")
    optimal = float(table[0, header.index("optimal_return")])
    played = scalars(dirs[0], "charts/episodic_return")
    text = f"optimal return {optimal:g}; the greedy policy plays {played[-1][1]:g}" if played else \
        f"optimal return {optimal:g}"
    return text, optimal == 11.0 and (not played or played[-1][1] == 11.0)


def check_q_table(tolerance: float) -> Callable[[list[Path]], tuple[str, bool]]:
    def check(dirs: list[Path]) -> tuple[str, bool]:
        q = q_table(dirs[0])
        error = float(np.abs(q[RECYCLING_NONTERMINAL] - RECYCLING_Q[RECYCLING_NONTERMINAL]).max())
        return f"Q = {fmt_table(q)}; largest error in S2-S4 {error:.2g}", error <= tolerance
    return check


def check_trap_greedy(dirs: list[Path]) -> tuple[str, bool]:
    q = q_table(dirs[0])[0]
    returns = [v for _, v in scalars(dirs[0], "charts/episodic_return")]
    after_first = sorted(set(returns[1:]))
    text = f"Q = ({', '.join(f'{v:g}' for v in q)}); returns after the first episode: {after_first}"
    return text, np.allclose(q, [0.0, 1.0, 0.3]) and after_first == [1.0]


def check_trap_epsilon(dirs: list[Path]) -> tuple[str, bool]:
    q = q_table(dirs[0])[0]
    returns = [v for _, v in scalars(dirs[0], "charts/episodic_return")]
    found = next((i + 1 for i, r in enumerate(returns) if r == 1000.0), None)
    text = f"Q = ({', '.join(f'{v:g}' for v in q)}); 1000 first found in episode {found}; greedy action {int(np.argmax(q))}"
    return text, found is not None and int(np.argmax(q)) == 2


def check_values(bound: float) -> Callable[[list[Path]], tuple[str, bool]]:
    """The learned V (or Q: one column per action) on the grid against its Monte-Carlo reference."""
    def check(dirs: list[Path]) -> tuple[str, bool]:
        header, table = read_csv(dirs[0] / "values.csv")
        x = table[:, 0]
        learned = [c for c in header[1:] if "reference" not in c]
        refs = [c for c in header[1:] if "reference" in c]
        v, ref = table[:, [header.index(c) for c in learned]], table[:, [header.index(c) for c in refs]]
        mse = float(np.mean((v - ref) ** 2))
        zero = int(np.argmin(np.abs(x)))
        steps = scalars(dirs[0], "losses/value_mse")[-1][0]
        at_zero = ", ".join(f"{name}(0) = {a:.2f} (Monte Carlo {b:.2f})" for name, a, b in
                            zip((c.upper() for c in learned), v[zero], ref[zero]))
        return f"from {steps:,} samples: MSE against Monte Carlo {mse:.3f} on {len(x)} points of [-3, 3]; {at_zero}", \
            mse <= bound
    return check


def check_cartpole(dirs: list[Path]) -> tuple[str, bool]:
    returns = scalars(dirs[0], "charts/episodic_return")
    steps = [s for s, _ in returns]
    values = np.array([v for _, v in returns])
    means = np.convolve(values, np.ones(100) / 100, mode="valid") if len(values) >= 100 else np.array([])
    reached = next((steps[i + 99] for i, m in enumerate(means) if m >= 475), None)
    last = float(values[-100:].mean())
    text = f"mean return of the last 100 episodes {last:.1f} after {steps[-1]:,} steps" + (
        f"; first at least 475 after {reached:,} steps" if reached else "")
    return text, last >= 475


def slide_gradient() -> tuple[str, bool]:
    """The policy-gradient estimate of the slide's seven samples, by autodiff of rlrun's logistic policy."""
    import torch

    from rlrun.nn.heads import LogisticPolicy
    from rlrun.algos.reinforce import policy_gradient_estimate

    policy = LogisticPolicy(init=(0.0, 0.0))
    obs = torch.tensor([[x] for x, _, _ in SLIDE_SAMPLES])
    actions = torch.tensor([1 if a == "R" else 0 for _, a, _ in SLIDE_SAMPLES])
    weights = torch.tensor([float(q) for _, _, q in SLIDE_SAMPLES])
    g = policy_gradient_estimate(policy, obs, actions, weights).tolist()
    return f"g = (dJ/dw, dJ/db) = ({g[0]:.4g}, {g[1]:.4g})", np.allclose(g, SLIDE_GRADIENT, atol=1e-6)


def check_baseline(dirs: list[Path]) -> tuple[str, bool]:
    """Without vs with the learned baseline: the per-update variance of the per-trajectory gradient estimates
    (medians over the updates: a few early updates with long episodes dominate means), across the two runs and
    paired on the baseline run's own trajectories (it also logs the plain-G_t estimator's variance)."""
    plain, baseline = (float(np.median([v for _, v in scalars(d, "losses/grad_variance")])) for d in dirs)
    paired = float(np.median([u / v for (_, u), (_, v) in zip(scalars(dirs[1], "losses/grad_variance_no_baseline"),
                                                               scalars(dirs[1], "losses/grad_variance"))]))
    returns = [np.mean([v for _, v in scalars(d, "charts/episodic_return")][-100:]) for d in dirs]
    text = (f"median gradient variance per update {plain:.3g} without, {baseline:.3g} with the learned baseline "
            f"({plain / baseline:.1f}x lower; {paired:.1f}x on the same trajectories); mean return of the last "
            f"100 episodes {returns[0]:.2f} and {returns[1]:.2f} (uniform policy: about -11.4)")
    return text, baseline < plain and paired > 1.0


# ---- RLHF (seeds/001): preferences, computed without training -----------------------------

def bradley_terry_probabilities() -> tuple[str, bool]:
    """The lecture's pizza numbers under rlrun's Bradley-Terry probability, and the gaps its guess needs."""
    from rlrun.rlhf.preferences import bradley_terry_probability
    from rlrun.rlhf.social_choice import bradley_terry_reward_gap

    equal = float(bradley_terry_probability(PIZZA_EQUAL, PIZZA_EQUAL))
    strong = float(bradley_terry_probability(PIZZA_DEEP_DISH, PIZZA_FLAT))
    rest = float(bradley_terry_probability(PIZZA_FLAT, PIZZA_DEEP_DISH))  # 1 - strong, without the rounding
    gaps = [bradley_terry_reward_gap(p) for p in PIZZA_GUESSES]
    back = [float(bradley_terry_probability(gap, 0.0)) for gap in gaps]
    gap = PIZZA_DEEP_DISH - PIZZA_FLAT
    text = (f"P({PIZZA_EQUAL:g} vs {PIZZA_EQUAL:g}) = {equal:g}; P({PIZZA_DEEP_DISH:g} vs {PIZZA_FLAT:g}) = "
            f"1 - e^-{gap:g} = 1 - {rest:.2g} ({strong:g} in float64), so the lecture's {PIZZA_GUESSES[0]:g} or "
            f"{PIZZA_GUESSES[1]:g} is a loose guess: the model gives {PIZZA_GUESSES[0]:g} at a reward gap of "
            f"ln 9 = {gaps[0]:.3f} and {PIZZA_GUESSES[1]:g} at ln 19 = {gaps[1]:.3f}, far below {gap:g}")
    ok = (equal == 0.5 and strong >= STRONG_PREFERENCE
          and np.isclose(rest, np.exp(PIZZA_FLAT - PIZZA_DEEP_DISH), rtol=EXACT, atol=0.0)
          and np.allclose(back, PIZZA_GUESSES, rtol=0.0, atol=EXACT)
          and np.allclose(gaps, PIZZA_GUESS_GAPS, rtol=0.0, atol=EXACT))
    return text, bool(ok)


def bradley_terry_transitivity() -> tuple[str, bool]:
    """P(i > k) deduced from P(i > j) and P(j > k) (the odds multiply) against the model's own P(i > k)."""
    from rlrun.rlhf.preferences import bradley_terry_probability
    from rlrun.rlhf.social_choice import transitive_probability

    rng = np.random.default_rng(TRANSITIVITY_SEED)
    r_i, r_j, r_k = rng.uniform(-TRANSITIVITY_REWARD_RANGE, TRANSITIVITY_REWARD_RANGE, (3, TRANSITIVITY_TRIPLES))
    deduced = transitive_probability(bradley_terry_probability(r_i, r_j).numpy(),
                                     bradley_terry_probability(r_j, r_k).numpy())
    error = float(np.abs(deduced - bradley_terry_probability(r_i, r_k).numpy()).max())
    text = (f"over {TRANSITIVITY_TRIPLES:,} random reward triples (uniform in [-{TRANSITIVITY_REWARD_RANGE:g}, "
            f"{TRANSITIVITY_REWARD_RANGE:g}]), P(i>k) deduced from odds(i,k) = odds(i,j) odds(j,k), i.e. "
            f"p_ij p_jk / (p_ij p_jk + (1 - p_ij)(1 - p_jk)), differs from the model's by at most {error:.2g}")
    return text, error < EXACT


def social_choice_winners() -> tuple[str, bool]:
    """Condorcet, Copeland and Borda winners of a Bradley-Terry matrix and of a preference cycle."""
    from rlrun.rlhf.social_choice import (borda_scores, borda_winners, bradley_terry_matrix, condorcet_winner,
                                          copeland_scores, copeland_winners)

    def winners(P: np.ndarray) -> tuple[int | None, list[int], list[int]]:
        return condorcet_winner(P), copeland_winners(P), borda_winners(P)

    best = int(np.argmax(ARM_REWARDS))
    agree, cycle = winners(bradley_terry_matrix(ARM_REWARDS)), winners(CYCLE_MATRIX)
    wins = ", ".join(str(w) for w in copeland_scores(CYCLE_MATRIX))
    borda = ", ".join(f"{b:g}" for b in borda_scores(CYCLE_MATRIX))
    text = (f"Bradley-Terry with rewards ({', '.join(f'{r:g}' for r in ARM_REWARDS)}): Condorcet {agree[0]}, "
            f"Copeland {agree[1]}, Borda {agree[2]}. The cycle 0 > 1 > 3 > 0, P = {fmt_table(CYCLE_MATRIX)}: "
            f"Condorcet {'none' if cycle[0] is None else cycle[0]}, Copeland {cycle[1]} (wins {wins}), "
            f"Borda {cycle[2]} (scores {borda})")
    return text, agree == (best, [best], [best]) and cycle == CYCLE_WINNERS


# ---- the results -------------------------------------------------------------------------------

def check_linear_reward(dirs: list[Path]) -> tuple[str, bool]:
    import torch

    from rlrun.rlhf.reward_models import load_reward_model

    ensemble, payload = load_reward_model(dirs[0] / "reward_model.pt")
    cfg_weights = LINEAR_FEATURE_WEIGHTS + [LINEAR_ACTION_REWARDS[1] - LINEAR_ACTION_REWARDS[0]]
    w = ensemble.members[0].head.net[0].weight.detach().double()[0]
    d = len(LINEAR_FEATURE_WEIGHTS)
    recovered = torch.cat([w[:d] / ensemble.obs_std.double(), (w[d + 1] - w[d]).reshape(1)])
    true = torch.tensor(cfg_weights, dtype=torch.float64)
    cosine = torch.nn.functional.cosine_similarity(recovered, true, dim=0).item()
    scaled = recovered * (true @ recovered) / (recovered @ recovered)  # least-squares scale onto the true weights
    pearson = payload["metrics"]["pearson"]
    return (f"held-out Pearson {pearson:.4f}, accuracy {payload['metrics']['holdout_accuracy']:.3f}; recovered "
            f"weights (scaled) ({', '.join(f'{v:.2f}' for v in scaled.tolist())}) vs true "
            f"({', '.join(f'{v:g}' for v in cfg_weights)}), cosine {cosine:.4f}", pearson > 0.95 and cosine > 0.99)


def trajectory_table(env, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Every action sequence of a deterministic gridworld from its start: (feature counts f(tau) (K, D), and
    the states visited (K, T)), K = 5^T."""
    model, phi = env.model(), env.state_features()
    counts, visited = [], []
    for actions in itertools.product(range(model.rewards.shape[1]), repeat=horizon):
        s, states = env.start, []
        for a in actions:
            states.append(s)
            s = int(np.argmax(model.transitions[s, a]))
        visited.append(states)
        counts.append(phi[states].sum(0))
    return np.array(counts), np.array(visited)


def entropy(p: np.ndarray) -> float:
    return float(-np.sum(p * np.log(np.maximum(p, 1e-300))))


def maxent_exp_distribution() -> tuple[str, bool]:
    from scipy.linalg import null_space

    from rlrun.algos.maxent_irl import soft_value_iteration
    from rlrun.algos.value_iteration import soft_policy
    from rlrun.envs.lecture import GridWorld

    env = GridWorld(**MAXENT_GRID)
    counts, visited = trajectory_table(env, MAXENT_HORIZON)
    exp_r = np.exp(counts @ env.feature_weights)
    gibbs = exp_r / exp_r.sum()  # P(tau) = exp(R(tau)) / Z, matching its own feature counts
    # feasible directions keep sum p = 1 and E_p[f] fixed: the null space of the constraints' normals
    directions = null_space(np.vstack([np.ones(len(counts)), counts.T]))
    # stationarity of the Lagrangian: grad H = -(log p + 1) has no component along any feasible direction
    stationarity = float(np.abs(directions.T @ -(np.log(gibbs) + 1.0)).max())
    # and H is strictly concave: every other feasible distribution has lower entropy
    rng = np.random.default_rng(MAXENT_SEED)
    losses = []
    for _ in range(MAXENT_PERTURBATIONS):
        step = directions @ rng.normal(size=directions.shape[1])
        step *= rng.uniform(0.05, 1.0) * np.min(gibbs[step < 0] / -step[step < 0])  # stay inside p >= 0
        losses.append(entropy(gibbs) - entropy(gibbs + step))
    # the soft-optimal policy (soft value iteration) generates exactly that distribution
    q, _ = soft_value_iteration(env.state_rewards(), env.model(), MAXENT_HORIZON)
    policy = soft_policy(q)
    actions = np.array(list(itertools.product(range(policy.shape[2]), repeat=MAXENT_HORIZON)))
    policy_probs = np.prod([policy[t, visited[:, t], actions[:, t]] for t in range(MAXENT_HORIZON)], axis=0)
    policy_gap = float(np.abs(policy_probs - gibbs).max())
    text = (f"{len(counts)} trajectories of a deterministic 2x2 gridworld (3 steps), P = exp(R)/Z: the entropy's "
            f"gradient along the {directions.shape[1]} feasible directions (same total, same feature counts) is at most "
            f"{stationarity:.1e}; {MAXENT_PERTURBATIONS} random feasible distributions all have lower entropy (by "
            f"{min(losses):.1e} to {max(losses):.2f} nats); the soft value iteration policy generates exp(R)/Z "
            f"within {policy_gap:.1e}")
    return text, stationarity < EXACT and min(losses) > 0 and policy_gap < EXACT


def maxent_gradient_identity() -> tuple[str, bool]:
    from rlrun.algos.maxent_irl import expected_visits, expert_statistics, log_likelihood, soft_value_iteration
    from rlrun.algos.value_iteration import soft_policy
    from rlrun.envs.lecture import GridWorld

    env = GridWorld()  # 5x5, slip 0.1
    model, phi, horizon = env.model(), env.state_features(), GRADIENT_HORIZON
    rng = np.random.default_rng(0)
    q_true, _ = soft_value_iteration(env.state_rewards(), model, horizon)
    policy = soft_policy(q_true)
    episodes = []  # demonstrations sampled from the soft-optimal expert of the true reward
    for _ in range(GRADIENT_EPISODES):
        s = int(rng.choice(25, p=env.initial_distribution()))
        states, acts = [], []
        for t in range(horizon):
            a = int(rng.choice(5, p=policy[t, s]))
            states.append(s)
            acts.append(a)
            s = int(rng.choice(25, p=model.transitions[s, a]))
        episodes.append((np.array(states), np.array(acts)))
    start, expert_visits = expert_statistics(episodes, 25)
    theta = rng.normal(size=phi.shape[1])

    def likelihood(w: np.ndarray) -> float:
        r = phi @ w
        return log_likelihood(r, soft_value_iteration(r, model, horizon)[1], episodes)

    q, _ = soft_value_iteration(phi @ theta, model, horizon)
    analytic = phi.T @ expert_visits - phi.T @ expected_visits(q, model, start)
    numeric = np.array([(likelihood(theta + GRADIENT_EPS * e) - likelihood(theta - GRADIENT_EPS * e)) / (2 * GRADIENT_EPS)
                        for e in np.eye(len(theta))])
    error = float(np.abs(analytic - numeric).max())
    text = (f"5x5 gridworld (slip 0.1, horizon 20), {GRADIENT_EPISODES} expert demonstrations, random theta: "
            f"f_E - f_theta = ({', '.join(f'{v:.4f}' for v in analytic)}), central differences "
            f"({', '.join(f'{v:.4f}' for v in numeric)}), largest difference {error:.1e}")
    return text, error < 1e-6


def prepare_soft_expert(out_dir: Path) -> dict[str, list[str]]:
    """Train lecture/gridworld_soft_expert into ``out_dir`` and save EXPERT_DEMOS of its episodes; returns the
    override that gives them to maxent_irl."""
    from rlrun.cli.evaluate import evaluate_checkpoint

    expert = out_dir / "gridworld_soft_expert"
    run_experiment("gridworld_soft_expert", expert, [])
    evaluate_checkpoint(expert, episodes=EXPERT_DEMOS, save_demos_path=expert / "demos.npz")
    return {"gridworld_maxent_irl": [f"algo.demos={expert / 'demos.npz'}"]}


def prepare_corridor_expert(out_dir: Path) -> dict[str, list[str]]:
    """Train lecture/gridworld_corridor_expert, save CORRIDOR_DEMOS of its episodes for behavior cloning and
    evaluate it on EVAL_EPISODES (its eval/ JSON is the expert's return); returns bc's and dagger's overrides."""
    from rlrun.cli.evaluate import evaluate_checkpoint

    expert = out_dir / "gridworld_corridor_expert"
    run_experiment("gridworld_corridor_expert", expert, [])
    evaluate_checkpoint(expert, episodes=CORRIDOR_DEMOS, save_demos_path=expert / "demos.npz")
    evaluate_checkpoint(expert, episodes=CORRIDOR_EVAL_EPISODES)
    return {"gridworld_bc": [f"algo.demos={expert / 'demos.npz'}"], "gridworld_dagger": [f"algo.expert={expert}"]}


def check_bc_dagger(dirs: list[Path]) -> tuple[str, bool]:
    import json

    expert_json = sorted((dirs[0].parent / "gridworld_corridor_expert" / "eval").glob("step_*.json"))[-1]
    expert = json.loads(expert_json.read_text())["mean"]
    bc = scalars(dirs[0], "charts/episodic_return")
    dagger = scalars(dirs[1], "charts/episodic_return")
    bc_return = float(np.mean([v for _, v in bc]))
    last_step = dagger[-1][0]
    dagger_return = float(np.mean([v for s, v in dagger if s == last_step]))
    by_round = [float(np.mean([v for s, v in dagger if s == step])) for step in sorted({s for s, _ in dagger})]
    text = (f"mean true return over {CORRIDOR_EVAL_EPISODES} episodes: expert {expert:.2f}; behavior cloning on "
            f"{CORRIDOR_DEMOS} expert episodes {bc_return:.2f}; DAgger by round "
            f"{', '.join(f'{v:.2f}' for v in by_round)}")
    return text, dagger_return >= expert - DAGGER_NEAR_EXPERT and bc_return <= expert - BC_DRIFT


def check_maxent_irl(dirs: list[Path]) -> tuple[str, bool]:
    from rlrun.algos.maxent_irl import expected_visits
    from rlrun.envs.lecture import GridWorld
    from rlrun.core.checkpoint import latest_checkpoint

    _, ckpt = latest_checkpoint(dirs[0].parent / "gridworld_soft_expert")
    env = GridWorld()
    q_by_time = ckpt["q_by_steps_left"].numpy()[::-1]
    exact = expected_visits(q_by_time, env.model(), env.initial_distribution()) / len(q_by_time)
    header, table = read_csv(dirs[0] / "visitation.csv")
    learned = table[:, header.index("learned")]
    gap = float(np.abs(learned - exact).max())
    pearson = scalars(dirs[0], "irl/true_reward_pearson")[-1][1]
    steps = len(scalars(dirs[0], "irl/feature_count_gap"))
    return (f"after {steps} gradient steps, learned visitation frequencies per step within {gap:.1e} of the "
            f"expert's exact ones (largest state {exact.max():.3f}); learned and true rewards correlate at "
            f"{pearson:.4f}", gap < 1e-2)


# the reward of configs/env/linear_features.yaml: weights of the 4 features and the 2 actions' rewards
LINEAR_FEATURE_WEIGHTS = [1.0, -2.0, 0.5, 0.0]
LINEAR_ACTION_REWARDS = [0.0, 1.0]


@dataclass
class Result:
    """One row of docs/lectures.md.

    Attributes:
        name: the row's id (``--only``); usually its experiment's name.
        lecture, claim: where the result comes from and what it says.
        experiments: experiment configs run for it (``configs/experiment/lecture/<name>.yaml``); empty for a
            computation without training (``compute``).
        check: reads the experiments' run directories -> (what was reproduced, whether it matches).
        criterion: what "matches" means for this row, in words.
        quick: overrides that shrink the experiments' budgets under ``--quick`` (empty: run in full).
        prepare: runs what the experiments need first (an expert and its demonstrations) in the output
            directory and returns overrides for each experiment (their paths), by experiment name.
        commands: the commands the table shows when they are more than the experiments (with ``prepare``).
    """

    name: str
    lecture: str
    claim: str
    experiments: list[str] = field(default_factory=list)
    check: Callable[[list[Path]], tuple[str, bool]] | None = None
    criterion: str = ""
    compute: Callable[[], tuple[str, bool]] | None = None
    quick: list[str] = field(default_factory=list)
    prepare: Callable[[Path], dict[str, list[str]]] | None = None
    commands: list[str] = field(default_factory=list)

    def command(self) -> str:
        if self.commands:
            return "<br>".join(self.commands)
        if not self.experiments:
            return f"python scripts/reproduce_lectures.py --only {self.name}"
        return "<br>".join(f"rlrun +experiment=lecture/{e}" for e in self.experiments)


RESULTS = [
    Result("recycling_return_gamma1", CS230,
           "With gamma = 1 and 3 moves before the garbage collector comes, the best strategy is right, right, "
           "right, for a return of 11.", ["recycling_return_gamma1"], check_return_gamma1,
           criterion="optimal return and the greedy episode both exactly 11"),
    Result("recycling_qtable", CS230,
           "The Q-table at gamma = 0.9 by backtracking (value iteration): S2 (2, 9), S3 (8.1, 10), S4 (9, 10); "
           "terminal S1, S5 (0, 0).", ["recycling_qtable"], check_q_table(1e-9),
           criterion="every entry of S2-S4 within 1e-9"),
    Result("recycling_qtable_q_learning", CS230,
           "The same Q-table learned from experience by tabular Q-learning (within 0.05).",
           ["recycling_qtable_q_learning"], check_q_table(0.05),
           criterion="every entry of S2-S4 within 0.05"),
    Result("recycling_qtable_qnetwork", CS230,
           "The same Q-table learned by a Q-network on one-hot states with the Bellman target held fixed "
           "(within 0.05).", ["recycling_qtable_qnetwork"], check_q_table(0.05),
           criterion="every entry of S2-S4 within 0.05", quick=["total_timesteps=4000"]),
    Result("trap_greedy", CS230,
           "Greedy Q-learning from Q = (0.5, 0.4, 0.3) tries action 1 (learns 0), then action 2 (learns 1) and "
           "is stuck there: it never finds the 1000.", ["trap_greedy"], check_trap_greedy,
           criterion="Q = (0, 1, 0.3) and every later return 1"),
    Result("trap_epsilon_greedy", CS230,
           "With a random action 5% of the time the agent finds the 1000 and its greedy action becomes it.",
           ["trap_epsilon_greedy"], check_trap_epsilon,
           criterion="1000 found and the greedy action is its action (index 2)"),
    Result("random_walk_td1", SCALING,
           "V^pi of the noisy random walk (uniform policy, gamma 1) fitted by supervised regression, TD(1), "
           "on 1k trajectories (~12k samples) with a 2-layer ReLU net of width 64: noisy but close.",
           ["random_walk_td1"], check_values(2.0),
           criterion="MSE at most 2.0 (about twice the worst of 8 seeds)", quick=["algo.update_epochs=10"]),
    Result("random_walk_td0", SCALING,
           "The same V^pi by fixed-point iteration, TD(0) (the slide's code: 3,000 trajectories).",
           ["random_walk_td0"], check_values(1.0),
           criterion="MSE at most 1.0 (about twice the worst of 5 seeds)"),
    Result("random_walk_td_lambda", SCALING,
           "TD(lambda) interpolates between TD(0) and TD(1): the same V^pi with lambda = 0.5.",
           ["random_walk_td_lambda"], check_values(2.0),
           criterion="MSE at most 2.0"),
    Result("random_walk_sarsa", SCALING,
           "Q^pi is learned the same ways as V^pi: SARSA(0), target r + Q(s', a') with the next action taken.",
           ["random_walk_sarsa"], check_values(2.0),
           criterion="MSE at most 2.0"),
    Result("reinforce_slide_gradient", SCALING,
           "REINFORCE gradient estimate for the slide's seven (x, action, Q) samples at w = b = 0, logistic "
           "policy: g = sum_t Q_t d/dtheta ln pi(a_t \\| x_t) = (2.1, -7.0) by hand.", compute=slide_gradient,
           criterion="(2.1, -7.0) within 1e-6"),
    Result("random_walk_reinforce_baseline", SCALING,
           "A baseline B(s) leaves the gradient's expectation unchanged and can reduce its variance: REINFORCE "
           "on the random walk with the logistic policy, without and with a learned V baseline.",
           ["random_walk_reinforce", "random_walk_reinforce_baseline"], check_baseline,
           criterion="lower variance with the baseline, across runs and on the same trajectories",
           quick=["total_timesteps=4000"]),
    Result("cartpole_reinforce_baseline", SCALING,
           "The same algorithm on a real task: REINFORCE with a learned baseline brings CartPole-v1 to an "
           "average return of at least 475 within 500,000 steps (the issue's target; seed 1).",
           ["cartpole_reinforce_baseline"], check_cartpole,
           criterion="mean of the last 100 episodes at least 475", quick=["total_timesteps=20000"]),
    Result("bradley_terry_probabilities", RLHF,
           "Bradley-Terry: P(b_i preferred to b_j) = exp(r_i) / (exp(r_i) + exp(r_j)). Identical rewards (both "
           "+20, the pizza example) give 50%; deep dish at 100 against flat at 10 gives \"more like say 0.9 or "
           "0.95\".", compute=bradley_terry_probabilities,
           criterion="equal rewards exactly 0.5; 100 vs 10 a strong preference, P >= 0.9 (0.9 and 0.95 "
           "themselves need gaps ln 9 and ln 19, checked within 1e-12)"),
    Result("bradley_terry_transitivity", RLHF,
           "The model is transitive: P(i > k) can be deduced from P(i > j) and P(j > k).",
           compute=bradley_terry_transitivity, criterion="largest error below 1e-12"),
    Result("social_choice_winners", RLHF,
           "Over K arms: a Condorcet winner beats every other arm (a high bar: it may not exist), a Copeland "
           "winner has the most pairwise victories, a Borda winner the highest expected score sum_j P[i, j] (win "
           "1, tie 0.5, loss 0). Under Bradley-Terry all three agree; a preference cycle has no Condorcet winner "
           "and can separate Copeland from Borda.", compute=social_choice_winners,
           criterion="the winners the definitions give by hand: the arm of largest reward three times; none, "
           "{0, 1} and {3} for the cycle"),
    Result("linear_reward_preferences", RLHF,
           "Reward models are fit to noisy pairwise comparisons by maximizing the Bradley-Terry likelihood (a "
           "logistic regression on return differences), which recovers the latent reward: here a known reward "
           "linear in (features, one-hot action), from 700 comparisons of random 10-step segments.",
           ["linear_reward_preferences"], check_linear_reward,
           criterion="Pearson correlation of predicted and true returns of held-out segments above 0.95 and "
           "cosine similarity of recovered and true weights above 0.99", quick=["algo.epochs=50"]),
    Result("maxent_exp_distribution", IMITATION,
           "Maximum entropy: among trajectory distributions that match the expert's feature counts, the one of "
           "largest entropy is P(tau) proportional to exp(R(tau)) (the Lagrangian's stationarity condition); the "
           "soft-optimal policy generates it.", compute=maxent_exp_distribution,
           criterion="exp(R)/Z is a stationary point of the entropy on the constraint set (gradient along feasible "
           "directions below 1e-12) and beats every sampled feasible distribution; the soft policy's trajectory "
           "probabilities equal it within 1e-12"),
    Result("maxent_gradient_identity", IMITATION,
           "The gradient of the demonstrations' log-likelihood, sum_i R(tau_i) - N log Z, is the expert's feature "
           "counts minus the expected feature counts (the latter by dynamic programming with the known dynamics).",
           compute=maxent_gradient_identity, criterion="every component equal to central finite differences "
           "within 1e-6"),
    Result("gridworld_maxent_irl", IMITATION,
           "Maximum-entropy IRL (Ziebart et al. 2008): soft value iteration, forward dynamic programming for the "
           "state-visitation frequencies and the gradient, repeated until feature counts match, recovers the "
           "expert's state-visitation frequencies (here from 1,000 demonstrations of a soft-optimal expert on a "
           "5x5 gridworld with slip 0.1).", ["gridworld_maxent_irl"], check_maxent_irl,
           criterion="learned visitation frequencies per step within 1e-2 of the expert's exact ones",
           prepare=prepare_soft_expert,
           commands=["rlrun +experiment=lecture/gridworld_soft_expert hydra.run.dir=expert",
                     "rlrun-eval expert --episodes 1000 --save-demos expert/demos.npz",
                     "rlrun +experiment=lecture/gridworld_maxent_irl algo.demos=expert/demos.npz"]),
    Result("gridworld_bc_dagger", IMITATION,
           "Behavior cloning reduces imitation to supervised learning, but a learner that errs drifts into states "
           "the demonstrations never show (the race car leaving the track); DAgger keeps the expert around to say "
           "what it should have done in the states the learner visits, and its return stays near the expert's. "
           "Here a race-track gridworld with slips, 3 expert demonstrations, 10 DAgger rounds of 3 episodes.",
           ["gridworld_bc", "gridworld_dagger"], check_bc_dagger,
           criterion="DAgger's final return within 1.0 of the expert's; behavior cloning's at least 3.0 below it",
           prepare=prepare_corridor_expert,
           commands=["rlrun +experiment=lecture/gridworld_corridor_expert hydra.run.dir=expert",
                     "rlrun-eval expert --episodes 3 --save-demos expert/demos.npz",
                     "rlrun +experiment=lecture/gridworld_bc algo.demos=expert/demos.npz",
                     "rlrun +experiment=lecture/gridworld_dagger algo.expert=expert"]),
]


# ---- running -----------------------------------------------------------------------------------

def run_experiment(name: str, run_dir: Path, overrides: list[str]) -> float:
    """Train ``+experiment=lecture/<name>`` into ``run_dir`` (quietly); returns the seconds it took."""
    from rlrun.cli.train import run_training

    cfg = compose_config([f"+experiment=lecture/{name}", "logging.progress=none", *overrides])
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run_training(cfg, run_dir)
    return time.perf_counter() - start


def reproduce(result: Result, out_dir: Path, quick: bool) -> tuple[str, bool, bool, float]:
    """Run a result's experiments and check them: (reproduced, matches, shrunk by --quick, seconds)."""
    shrunk = quick and bool(result.quick)
    if result.compute is not None:
        start = time.perf_counter()
        text, ok = result.compute()
        return text, ok, False, time.perf_counter() - start
    dirs, seconds, extra = [], 0.0, {}
    if result.prepare is not None:
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            extra = result.prepare(out_dir)
        seconds += time.perf_counter() - start
    for name in result.experiments:
        run_dir = out_dir / name
        seconds += run_experiment(name, run_dir, [*extra.get(name, []), *(result.quick if shrunk else [])])
        dirs.append(run_dir)
    text, ok = result.check(dirs)
    return text, ok, shrunk, seconds


def markdown(rows: list[tuple[Result, str, bool, bool, float]], command: str) -> str:
    lines = [
        "# The lectures' results, reproduced",
        "",
        "Each row is one result of the lectures in `seeds/`, the command that reproduces it, what that "
        "command produced and whether it matches the lecture. Written by "
        "`python scripts/reproduce_lectures.py` (see its docstring); later issues add their rows.",
        "",
        f"Date: {datetime.date.today().isoformat()}  ",
        f"Machine: {machine_info()}  ",
        f"Command: `{command}`",
        "",
        "| Lecture | Claim | Command | Reproduced | Matches | Criterion | Time |",
        "|---|---|---|---|---|---|---:|",
    ]
    for result, text, ok, shrunk, seconds in rows:
        verdict = "yes" if ok else "no"
        if shrunk:
            verdict += " (quick budget)"
        lines.append(f"| {result.lecture} | {result.claim} | `{result.command()}` | {text} | {verdict} | "
                     f"{result.criterion} | {seconds:.1f} s |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shrink the long runs' budgets (CI's smoke check)")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=[r.name for r in RESULTS],
                        help="reproduce only these results")
    parser.add_argument("--out-dir", type=Path, help="where the run directories go "
                        "(default: outputs/lectures/<date-time>/)")
    parser.add_argument("--doc", type=Path, default=None,
                        help=f"write the table here (default: {DOCS.relative_to(ROOT)} for a full run of every "
                        "result, nowhere otherwise)")
    args = parser.parse_args(argv)
    out_dir = args.out_dir or ROOT / "outputs" / "lectures" / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    selected = [r for r in RESULTS if args.only is None or r.name in args.only]
    rows, failed = [], []
    for result in selected:
        text, ok, shrunk, seconds = reproduce(result, out_dir, args.quick)
        rows.append((result, text, ok, shrunk, seconds))
        mark = "ok" if ok else ("differs (quick budget)" if shrunk else "DIFFERS")
        print(f"[lectures] {result.name}: {text} -> {mark} ({seconds:.1f} s)", flush=True)
        if not ok and not shrunk:
            failed.append(result.name)
    doc = args.doc or (DOCS if not args.quick and args.only is None else None)
    if doc is not None:
        command = "python scripts/reproduce_lectures.py" + ("".join(f" {a}" for a in (argv or sys.argv[1:])))
        old = doc.read_text() if doc.exists() else ""
        kept = old[old.index("\n## "):] if "\n## " in old else ""  # sections other scripts write (lm_rlhf_results)
        doc.write_text(markdown(rows, command) + kept)
        print(f"[lectures] wrote {doc}", flush=True)
    if failed:
        print(f"[lectures] not reproduced: {', '.join(failed)}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
