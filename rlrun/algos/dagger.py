"""DAgger (Dataset Aggregation): Ross, Gordon & Bagnell 2011, "A reduction of imitation learning and
structured prediction to no-regret online learning" (AISTATS), section 3.

Behavior cloning learns from the expert's states only; a learner that errs drifts into states the
demonstrations never show and does not know how to recover (the lecture's race car leaving the track,
seeds/001). DAgger keeps the expert around and asks it what should have been done in the states the
learner itself visits:

    D <- algo.demos (or nothing); learner_0 <- behavior cloning on D (an untrained network if D is empty)
    for round i = 0, 1, ..., algo.num_rounds - 1:
        beta_i = algo.beta0 * algo.beta_decay ** i
        play algo.episodes_per_round whole episodes with the mixture policy: each step executes the
            expert's action with probability beta_i, the learner_i's otherwise
        label every visited observation with the expert's action and add the pairs to D
        learner_{i+1} <- a freshly initialized network trained on all of D (Ross et al.'s
            Follow-the-Leader: each learner is behavior cloning on the aggregate, so training from
            scratch, not warm, keeps it exactly that)

With the defaults (beta0 = 1) round 0 plays the expert alone. The expert (``algo.expert``) is a run
directory (its newest valid checkpoint) or a checkpoint file of any rlrun algorithm trained on the same
env id; it plays its evaluation policy (``rlrun-eval``'s, with epsilon 0) on the rollout env, so a
finite-horizon value-iteration expert sees the steps left.

The network, the loss, the held-out split (``algo.holdout_fraction`` of each round's steps), the fitting
(``algo.epochs`` passes over D per round) and the evaluation are behavior cloning's
(:mod:`rlrun.algos.bc`); checkpoints play with ``rlrun-eval`` like bc's.

``global_step`` counts env steps of the rollouts (the demonstrations' steps are not counted);
``total_timesteps`` is not used. Logs per round, at the round's last step: ``losses/imitation_loss``
(training loss of the last epoch), ``charts/holdout_loss`` (and ``charts/holdout_accuracy``),
``charts/dataset_size`` (steps in D), ``charts/beta`` and ``charts/rollout_return`` (mean true return
of the mixture's episodes); every ``algo.eval_interval`` rounds and after the last one the learner
alone plays ``algo.eval_episodes`` episodes, logged as ``charts/episodic_return``. With demonstrations,
the initial learner (behavior cloning) is logged and evaluated at step 0. Returns the mean true return
of the final learner.

Resume continues after the last completed round: the checkpoint holds D, the learner and the random
generators, and each round's rollout is seeded by (seed, round), so a resumed run equals an
uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlrun.algos.bc import (ADAM_EPS, EVAL_POLICY, METRIC, Learner, evaluate_learner, holdout_metrics, learner_policy,
                            log_evaluation, make_learner, make_policy, train_epoch, validate_learner)
from rlrun.core import registry
from rlrun.core.checkpoint import find_checkpoint
from rlrun.core.config import ConfigError, check_int, check_number, get
from rlrun.core.registry import AlgoSpec, Policy, register
from rlrun.core.run import Run, resolve_device
from rlrun.core.state import Counters
from rlrun.data.demos import ExpertDataset, check_demos, load_demos
from rlrun.envs.factory import make_vec_env
from rlrun.envs.vector import VecEnv
from rlrun.nn.optim import make_adam


def load_expert(cfg: DictConfig) -> tuple[DictConfig, dict[str, Any]]:
    """(expert's config, expert's checkpoint payload) of ``algo.expert``.

    Raises:
        ConfigError: naming ``algo.expert``: null, not a run directory or checkpoint, or an expert trained
            on another env id (both ids named).
    """
    path = get(cfg, "algo.expert")
    if path is None:
        raise ConfigError("algo.expert is null: a DAgger run needs an expert: expected the path of an rlrun run "
                          f"directory or checkpoint (of any algorithm) trained on {cfg.env.id}, e.g. "
                          "algo.expert=outputs/<date>/<time>_ppo_cartpole_s1")
    try:
        _, payload, _ = find_checkpoint(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"algo.expert={str(path)!r}: {exc}") from None
    expert_cfg = OmegaConf.create(payload["config"])
    if str(expert_cfg.env.id) != str(cfg.env.id):
        raise ConfigError(f"algo.expert={str(path)!r} was trained on {expert_cfg.env.id} but this run's env is "
                          f"{cfg.env.id}: expected an expert of the same env")
    return expert_cfg, payload


def make_expert(cfg: DictConfig, expert_cfg: DictConfig, payload: dict[str, Any], envs: VecEnv,
                device: torch.device) -> Policy:
    """The evaluation policy (epsilon 0, seeded with ``seed``) of the expert :func:`load_expert` loaded,
    acting on ``envs``.

    Raises:
        ConfigError: naming ``algo.expert`` if its policy cannot act on this run's env.
    """
    try:
        return registry.make_policy(expert_cfg, payload, envs, device, 0.0, int(cfg.seed))
    except ValueError as exc:  # ConfigError included: a network or table that does not fit the env
        raise ConfigError(f"algo.expert={str(cfg.algo.expert)!r} cannot act on this run's env {cfg.env.id}: "
                          f"{exc}") from None


def validate(cfg: DictConfig) -> None:
    """Check the dagger keys, the env's spaces, the expert (loaded, its env id, acting once on this run's
    env) and the optional demonstrations; raises ConfigError."""
    a = "algo."
    obs_space, action_space = validate_learner(cfg)
    check_int(cfg, a + "num_rounds", low=1)
    check_int(cfg, a + "episodes_per_round", low=1)
    check_number(cfg, a + "beta0", low=0, high=1)
    check_number(cfg, a + "beta_decay", low=0, high=1)
    expert_cfg, payload = load_expert(cfg)
    envs = make_vec_env(cfg, 1)
    try:
        expert = make_expert(cfg, expert_cfg, payload, envs, torch.device("cpu"))
        try:
            expert(envs.reset(seed=int(cfg.seed)))
        except Exception as exc:  # shapes that do not fit surface only when it acts
            raise ConfigError(f"algo.expert={str(cfg.algo.expert)!r} cannot act on this run's env {cfg.env.id}: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    finally:
        envs.close()
    if get(cfg, a + "demos") is not None:
        demos = load_demos(cfg.algo.demos, "algo.demos")
        check_demos(demos, obs_space, action_space, str(cfg.env.id), "algo.demos")


def mixing_beta(cfg: DictConfig, round_index: int) -> float:
    """beta_i = algo.beta0 * algo.beta_decay ** i: the probability that round i's rollouts execute the
    expert's action at a step."""
    return float(cfg.algo.beta0) * float(cfg.algo.beta_decay) ** round_index


def rollout(envs: VecEnv, expert: Policy, learner: Policy, beta: float, episodes: int, seed: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[tuple[float, int]]]:
    """Play ``episodes`` whole episodes on ``envs`` (num_envs = 1, reset with ``seed``) with the mixture
    policy: at each step the expert's action with probability ``beta`` (drawn from ``rng``), the learner's
    otherwise. The expert is asked at every step.

    Returns:
        (n, *obs_shape) visited observations, (n,) int64 or (n, A) float32 the expert's actions in them,
        and the (true return, length) of each episode.
    """
    obs = envs.reset(seed=seed)
    visited, labels, finished = [], [], []
    while len(finished) < episodes:
        expert_actions = expert(obs)
        actions = expert_actions if rng.random() < beta else learner(obs)
        visited.append(obs[0])
        labels.append(np.asarray(expert_actions)[0])
        step = envs.step(actions)
        finished += step.episodes
        obs = step.obs
    return np.stack(visited), np.stack(labels), finished


def fit_learner(cfg: DictConfig, data: ExpertDataset, learner: Learner, device: torch.device,
                fresh: bool = True) -> dict:
    """Train ``learner`` on all of ``data`` for ``algo.epochs`` epochs, first re-initialized in place as a
    freshly made one (unless ``fresh`` is False: it was just made); returns its scalars: the last epoch's
    losses/imitation_loss and the held-out metrics."""
    if fresh:  # Follow-the-Leader: every round's learner is behavior cloning from scratch on the aggregate
        learner.load_state_dict(make_learner(cfg, learner.obs_space, learner.action_space, device).state_dict())
    optimizer = make_adam(learner, float(cfg.algo.learning_rate), ADAM_EPS)
    train_obs, train_actions, held_obs, held_actions = data.split(device)
    for _ in range(int(cfg.algo.epochs)):
        loss = train_epoch(learner, optimizer, train_obs, train_actions, int(cfg.algo.batch_size))
    return {"losses/imitation_loss": loss, **holdout_metrics(learner, held_obs, held_actions)}


def train(cfg: DictConfig, run: Run) -> float:
    """Run DAgger with the expert ``algo.expert``; returns the mean true return of the final learner."""
    args = cfg.algo
    device = resolve_device(cfg.device)
    num_rounds, eval_interval = int(args.num_rounds), int(args.eval_interval)
    envs = make_vec_env(cfg, 1)  # the rollouts' env; the learner is evaluated on another
    expert = make_expert(cfg, *load_expert(cfg), envs, device)
    data = ExpertDataset(float(args.holdout_fraction), int(cfg.seed))
    learner = make_learner(cfg, envs.single_observation_space, envs.single_action_space, device)

    # STATE: what a checkpoint holds; a resumed run continues after its last completed round
    counters = Counters(round=0, last_return=float("nan"))  # rounds completed, the last evaluation's mean return
    run.track(learner=learner, dataset=data, counters=counters)
    global_step = run.start_step  # env steps of the rollouts
    if not run.resumed and args.demos is not None:  # the initial learner is behavior cloning on the demonstrations
        demos = load_demos(args.demos, "algo.demos")
        data.add(demos.obs, demos.actions)
        scalars = fit_learner(cfg, data, learner, device, fresh=False)
        stats = evaluate_learner(cfg, learner, int(args.eval_episodes), device)
        counters.last_return = stats["mean"]
        run.log(0, {**scalars, "charts/dataset_size": len(data)})
        log_evaluation(run, 0, stats)
        print(f"rlrun: dagger: behavior cloning on {len(data)} demonstration steps: learner return "
              f"{counters.last_return:.2f}", flush=True)

    while counters.round < num_rounds:
        # ALGO LOGIC: roll out the mixture, ask the expert about every visited state, aggregate, retrain
        beta = mixing_beta(cfg, counters.round)
        obs, labels, episodes = rollout(envs, expert, learner_policy(learner, envs.single_action_space, device),
                                        beta, int(args.episodes_per_round), int(cfg.seed) + counters.round,
                                        np.random.default_rng((int(cfg.seed), counters.round)))
        data.add(obs, labels)
        scalars = fit_learner(cfg, data, learner, device)
        counters.round += 1
        global_step += len(obs)
        run.log(global_step, {**scalars, "charts/dataset_size": len(data), "charts/beta": beta,
                              "charts/rollout_return": float(np.mean([r for r, _ in episodes]))})
        if counters.round == num_rounds or (eval_interval > 0 and counters.round % eval_interval == 0):
            stats = evaluate_learner(cfg, learner, int(args.eval_episodes), device)
            counters.last_return = stats["mean"]
            log_evaluation(run, global_step, stats)
            print(f"rlrun: dagger round {counters.round}/{num_rounds}: beta {beta:.3g}, {len(data)} steps in the "
                  f"dataset, learner return {counters.last_return:.2f}", flush=True)
        run.set_total(max(global_step, round(global_step * num_rounds / counters.round)))  # estimated so far
        if run.end_iteration(global_step):
            break
    envs.close()
    run.finish(global_step)
    return float(counters.last_return)


register(AlgoSpec("dagger", validate, train, make_policy, eval_policy=EVAL_POLICY, metric=METRIC))
