"""Proximal Policy Optimization: Schulman et al. 2017, "Proximal Policy Optimization Algorithms",
arXiv:1707.06347, with the implementation details of Huang et al. 2022, "The 37 Implementation
Details of Proximal Policy Optimization" (ICLR blog track), as in CleanRL's ppo.py, ppo_atari.py
and ppo_continuous_action.py.

One flat loop per iteration: collect ``num_steps`` steps from ``num_envs`` envs -> generalized
advantage estimation (Schulman et al. 2016) -> ``update_epochs`` passes over ``num_minibatches``
minibatches of the clipped surrogate objective, value loss and entropy bonus.

``global_step`` counts agent steps summed over envs; on Atari one agent step is 4 frames.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from rlrun.core.config import check_bool, check_choice, check_int, check_int_list, check_number, fail, get
from rlrun.core.registry import AlgoSpec, register
from rlrun.core.run import Run, resolve_device
from rlrun.core.state import Counters, load_weights
from rlrun.data.rollout import RolloutStorage
from rlrun.envs.factory import action_kind, check_array_observations, make_vec_env
from rlrun.envs.vector import VecEnv
from rlrun.nn.compile import COMPILE_MODES, compile_update
from rlrun.nn.heads import ActorCritic
from rlrun.nn.normalize import ObsNormalizer, RewardNormalizer
from rlrun.nn.optim import make_adam
from rlrun.rlhf.learned_reward import with_learned_reward

ADV_EPSILON = 1e-8  # added to the advantage standard deviation when normalizing per minibatch


def validate(cfg: DictConfig) -> None:
    """Check the PPO keys and how they combine; raises ConfigError."""
    a = "algo."
    num_envs = check_int(cfg, a + "num_envs", low=1)
    num_steps = check_int(cfg, a + "num_steps", low=1)
    num_minibatches = check_int(cfg, a + "num_minibatches", low=1)
    check_int(cfg, a + "update_epochs", low=1)
    check_number(cfg, a + "learning_rate", low=0, low_open=True)
    check_number(cfg, a + "adam_eps", low=0, low_open=True)
    check_bool(cfg, a + "anneal_lr")
    check_number(cfg, a + "gamma", low=0, high=1)
    check_number(cfg, a + "gae_lambda", low=0, high=1)
    check_bool(cfg, a + "norm_adv")
    check_number(cfg, a + "clip_coef", low=0, low_open=True)
    check_bool(cfg, a + "clip_vloss")
    check_number(cfg, a + "ent_coef", low=0)
    check_number(cfg, a + "vf_coef", low=0)
    check_number(cfg, a + "max_grad_norm", low=0, low_open=True, optional=True)
    check_number(cfg, a + "target_kl", low=0, low_open=True, optional=True)
    check_int_list(cfg, a + "hidden_sizes")
    check_choice(cfg, a + "activation", ["tanh", "relu"])
    check_number(cfg, a + "init_log_std", low=-20, high=2)
    check_bool(cfg, a + "normalize_obs")
    check_bool(cfg, a + "normalize_reward")
    check_number(cfg, a + "obs_clip", low=0, low_open=True)
    check_number(cfg, a + "reward_clip", low=0, low_open=True)
    check_bool(cfg, a + "channels_last")
    if get(cfg, a + "compile") not in (True, False, "auto"):
        fail(a + "compile", get(cfg, a + "compile"), "true, false or auto (true for pixel observations)")
    check_choice(cfg, a + "compile_mode", COMPILE_MODES)
    policy = check_choice(cfg, a + "policy", ["auto", "categorical", "gaussian"])
    check_array_observations(cfg)
    batch = num_envs * num_steps
    if batch % num_minibatches:
        fail("algo.num_minibatches", num_minibatches,
             f"a divisor of algo.num_envs x algo.num_steps = {num_envs} x {num_steps} = {batch}")
    if int(get(cfg, "total_timesteps")) < batch:
        fail("total_timesteps", cfg.total_timesteps, f"at least one rollout of num_envs x num_steps = {batch} steps")
    if policy != "auto":
        kind = action_kind(cfg)
        if kind != policy:
            fail("algo.policy", policy, f"{kind} (or auto): {cfg.env.id} has "
                 f"{'discrete' if kind == 'categorical' else 'continuous'} actions")


def clipped_surrogate_loss(advantages: torch.Tensor, ratio: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """The PPO-Clip policy loss: mean of max(-A r, -A clip(r, 1 - eps, 1 + eps)) (Schulman et al. 2017, eq. 7)."""
    return torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)).mean()


def value_loss(new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               clip_coef: float | None) -> torch.Tensor:
    """0.5 * mean squared error to the returns; with ``clip_coef`` the elementwise max with the error of
    the value clipped to within clip_coef of ``old_values`` (Huang et al. 2022, detail 9)."""
    unclipped = (new_values - returns) ** 2
    if clip_coef is None:
        return 0.5 * unclipped.mean()
    clipped = (old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef) - returns) ** 2
    return 0.5 * torch.max(unclipped, clipped).mean()


def make_minibatch_loss(agent: ActorCritic, args: SimpleNamespace, use_compile: bool):
    """The PPO objective of one minibatch, ``torch.compile``d in ``args.compile_mode`` when ``use_compile``
    (:func:`rlrun.nn.compile.compile_update`: if compiling fails, it says so once and runs eagerly).

    ``minibatch_loss(obs, actions, old_logprobs, advantages, returns, old_values)`` takes the
    minibatch's (B, *obs_shape) observations, (B,) or (B, A) actions and (B,) float32 rollout
    log-probabilities, advantages, value targets and values, and returns the loss to minimize,
    clipped surrogate - ent_coef * entropy + vf_coef * value loss (advantages normalized per
    minibatch when ``args.norm_adv``), and a dict of 0-d tensors without gradient: policy_loss,
    value_loss, entropy, old_approx_kl and approx_kl (the KL estimators of Schulman 2020,
    http://joschu.net/blog/kl-approx.html) and clipfrac (share of ratios outside the clip range).
    """
    clip_coef, value_clip = args.clip_coef, (args.clip_coef if args.clip_vloss else None)

    def minibatch_loss(obs, actions, old_logprobs, advantages, returns, old_values):
        dist, new_value = agent.dist_and_value(obs)
        new_logprob, entropy = agent.log_prob_and_entropy(dist, actions)
        logratio = new_logprob - old_logprobs
        ratio = logratio.exp()
        if args.norm_adv:
            advantages = (advantages - advantages.mean()) / (advantages.std() + ADV_EPSILON)
        pg_loss = clipped_surrogate_loss(advantages, ratio, clip_coef)
        v_loss = value_loss(new_value, old_values, returns, value_clip)
        entropy_loss = entropy.mean()
        loss = pg_loss - args.ent_coef * entropy_loss + args.vf_coef * v_loss
        with torch.no_grad():
            stats = {"policy_loss": pg_loss.detach(), "value_loss": v_loss.detach(), "entropy": entropy_loss.detach(),
                     "old_approx_kl": (-logratio).mean(), "approx_kl": ((ratio - 1) - logratio).mean(),
                     "clipfrac": ((ratio - 1.0).abs() > clip_coef).float().mean()}
        return loss, stats

    return compile_update(minibatch_loss, args.compile_mode, "the PPO update") if use_compile else minibatch_loss


def make_agent(cfg: DictConfig, envs: VecEnv, device: torch.device) -> ActorCritic:
    """The actor-critic for ``envs``' spaces and ``cfg.algo``'s network keys, on ``device``."""
    obs_shape = envs.single_observation_space.shape
    agent = ActorCritic(obs_shape, envs.single_action_space, list(cfg.algo.hidden_sizes), cfg.algo.activation,
                        cfg.algo.get("init_log_std", 0.0)).to(device)  # runs saved before the key existed: 0
    if len(obs_shape) == 3 and cfg.algo.channels_last:
        agent = agent.to(memory_format=torch.channels_last)
    return agent


def make_policy(cfg: DictConfig, state: dict, envs: VecEnv, device: torch.device, epsilon: float, seed: int):
    """The evaluation policy of a PPO checkpoint: the distribution's mode (argmax or Gaussian mean) on
    observations normalized with the checkpoint's statistics. ``epsilon`` and ``seed`` are unused.

    Returns:
        ``act(obs)``: (N, *obs_shape) observations to (N,) int64 or (N, A) float32 actions (clipped to the space).
    """
    agent = make_agent(cfg, envs, device)
    load_weights(agent, state["agent"], "agent", cfg)
    agent.eval()
    obs_norm = ObsNormalizer(envs.single_observation_space.shape, bool(cfg.algo.normalize_obs), float(cfg.algo.obs_clip))
    if state.get("obs_norm") is not None:
        obs_norm.rms.load_state_dict(state["obs_norm"])
    space = envs.single_action_space

    def act(obs: np.ndarray) -> np.ndarray:
        action = agent.mode(torch.as_tensor(obs_norm(obs), device=device)).cpu().numpy()
        return np.clip(action, space.low, space.high) if agent.continuous else action

    return act


def update(agent: ActorCritic, optimizer: torch.optim.Optimizer, minibatch_loss, rollout: RolloutStorage,
           advantages: torch.Tensor, returns: torch.Tensor, args: SimpleNamespace,
           rng: np.random.Generator) -> dict[str, float]:
    """``update_epochs`` passes of minibatch gradient steps on the clipped objective over the rollout (stopping
    early once approx_kl exceeds ``target_kl``); returns the scalars to log (the last minibatch's losses,
    the mean clipfrac and the explained variance of the values)."""
    obs_shape, action_shape = rollout.obs.shape[2:], rollout.actions.shape[2:]
    b_obs, b_actions = rollout.obs.reshape(-1, *obs_shape), rollout.actions.reshape(-1, *action_shape)
    b_logprobs, b_advantages, b_returns, b_values = (x.reshape(-1) for x in (rollout.logprobs, advantages, returns,
                                                                              rollout.values))
    batch_size = len(b_logprobs)
    minibatch_size = batch_size // args.num_minibatches
    clipfracs = []
    for epoch in range(args.update_epochs):
        order = torch.as_tensor(rng.permutation(batch_size), device=b_logprobs.device)
        for start in range(0, batch_size, minibatch_size):
            mb = order[start:start + minibatch_size]
            loss, stats = minibatch_loss(b_obs[mb], b_actions[mb], b_logprobs[mb], b_advantages[mb], b_returns[mb],
                                         b_values[mb])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if args.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            optimizer.step()
            clipfracs.append(stats["clipfrac"].item())
        if args.target_kl is not None and stats["approx_kl"] > args.target_kl:
            break
    y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
    var_y = np.var(y_true)
    explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
    return {**{f"losses/{name}": value.item() for name, value in stats.items() if name != "clipfrac"},
            "losses/clipfrac": float(np.mean(clipfracs)), "losses/explained_variance": float(explained_var)}


def train(cfg: DictConfig, run: Run, feedback=None) -> float:
    """Train PPO on ``cfg.env``; returns the mean raw return of the last episodes.

    Args:
        feedback: None (the env's rewards), or an object that replaces each rollout's rewards before the
            advantages are computed (``algo=pbrl``'s preference learner): ``feedback.relabel(global_step,
            obs, actions, rewards, episode_end, next_obs)`` gets the rollout's raw (T, N, *obs_shape)
            observations, (T, N, ...) actions as applied to the env, (T, N) float32 env rewards, (T, N) bool
            episode ends and the raw (T, N, *obs_shape) observations each step led to (the episode's last
            one where it ended), and returns (T, N) float32 rewards; its ``state_dict()`` and
            ``load_state_dict(state)`` go into and come from the checkpoints.
    """
    args = SimpleNamespace(**OmegaConf.to_container(cfg.algo, resolve=True))
    device = resolve_device(cfg.device)
    envs = with_learned_reward(cfg, make_vec_env(cfg, args.num_envs))
    agent = make_agent(cfg, envs, device)
    optimizer = make_adam(agent, args.learning_rate, args.adam_eps)
    pixels = len(envs.single_observation_space.shape) == 3
    minibatch_loss = make_minibatch_loss(agent, args, use_compile=pixels if args.compile == "auto" else args.compile)
    space = envs.single_action_space
    obs_norm = ObsNormalizer(envs.single_observation_space.shape, args.normalize_obs, args.obs_clip)
    reward_norm = RewardNormalizer(args.num_envs, args.gamma, args.normalize_reward, args.reward_clip)
    clip_rewards = bool(cfg.preprocessing.clip_rewards)
    T, N = args.num_steps, args.num_envs
    num_iterations = run.total // (T * N)
    rng = np.random.default_rng(cfg.seed)  # minibatch shuffling
    rollout = RolloutStorage(T, N, envs.single_observation_space, space, device, keep_raw=feedback is not None)

    # STATE: what a checkpoint holds; a resumed run loads it back here, at an iteration boundary
    obs = obs_norm(envs.reset(seed=cfg.seed), update=True)
    counters = Counters(iteration=0)
    run.track(agent=agent, optimizer=optimizer, counters=counters, minibatch_rng=rng, envs=envs,
              obs_norm=obs_norm.rms if args.normalize_obs else None, reward_norm=reward_norm, feedback=feedback)
    global_step = run.start_step
    if run.resumed and envs.episodes_restored:
        obs = obs_norm(envs.obs)  # already merged into the restored statistics

    while counters.iteration < num_iterations:
        counters.iteration += 1
        if args.anneal_lr:  # linear decay to 0 over the run (Huang et al. 2022, detail 4)
            optimizer.param_groups[0]["lr"] = (1.0 - (counters.iteration - 1.0) / num_iterations) * args.learning_rate

        # ROLLOUT: num_steps steps of every env with the current policy
        rollout.final_values.zero_()
        for step in range(T):
            global_step += N
            # the network reads the stored copy, not the env's array: float results can depend on the input's
            # memory alignment, and a resumed run's first observations come from the checkpoint, not the env
            rollout.obs[step] = torch.as_tensor(obs, device=device)
            rollout.actions[step], rollout.logprobs[step], rollout.values[step] = agent.sample_action(rollout.obs[step])
            env_action = rollout.actions[step].cpu().numpy()
            if agent.continuous:  # applied clipped, stored unclipped (Huang et al. 2022, continuous detail 4)
                env_action = np.clip(env_action, space.low, space.high)
            raw_obs = envs.obs
            result = envs.step(env_action)
            if feedback is not None:
                rollout.raw_obs[step], rollout.env_actions[step], rollout.raw_next_obs[step] = (raw_obs, env_action,
                                                                                                result.final_obs)
            run.log_episodes(global_step, result.episodes, result.learned_returns)
            rollout.rewards[step] = np.sign(result.reward) if clip_rewards else result.reward
            rollout.terminated[step], rollout.episode_end[step] = result.terminated, result.episode_end
            truncated = np.flatnonzero(result.truncated & result.episode_end)
            if len(truncated):  # bootstrap a time-limit end from the value of its final observation
                with torch.no_grad():
                    final = torch.as_tensor(obs_norm(result.final_obs[truncated]), device=device)
                    rollout.final_values[step, torch.as_tensor(truncated, device=device)] = agent.value(final)
            obs = obs_norm(result.obs, update=True)

        # REWARDS: the env's or the feedback's, scaled by the running std of the return, step by step
        if feedback is not None:
            rollout.rewards[:] = feedback.relabel(global_step, rollout.raw_obs, rollout.env_actions, rollout.rewards,
                                                  rollout.episode_end > 0, rollout.raw_next_obs)
        for step in range(T):
            rollout.rewards[step] = reward_norm(rollout.rewards[step], rollout.episode_end[step] > 0)

        # ALGO LOGIC: advantages and value targets, then the clipped-objective updates
        with torch.no_grad():
            next_value = agent.value(torch.as_tensor(obs, device=device))
        advantages, returns = rollout.advantages(next_value, args.gamma, args.gae_lambda)
        scalars = update(agent, optimizer, minibatch_loss, rollout, advantages, returns, args, rng)
        run.log(global_step, {"charts/learning_rate": optimizer.param_groups[0]["lr"], **scalars})
        if run.end_iteration(global_step):
            break

    run.finish(global_step)
    envs.close()
    return run.mean_return()


register(AlgoSpec("ppo", validate, train, make_policy, learned_reward=True))
