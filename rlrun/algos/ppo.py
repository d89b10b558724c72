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

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.distributions import Categorical, Normal

from rlrun.config import (check_bool, check_choice, check_int, check_int_list, check_number, fail,
                          get)
from rlrun.envs import VecEnv, action_kind, check_array_observations, make_vec_env, restore_episodes
from rlrun.nets import MLP, NATURE_FEATURES, NatureTrunk, load_weights, make_adam, orthogonal_init
from rlrun.normalize import ObsNormalizer, RewardNormalizer
from rlrun.run import Run, resolve_device, set_rng_state

ADV_EPSILON = 1e-8  # added to the advantage standard deviation when normalizing per minibatch
POLICY_HEAD_GAIN = 0.01  # orthogonal gain of the policy's output layer (Huang et al. 2022, detail 2)
VALUE_HEAD_GAIN = 1.0  # orthogonal gain of the value output layer


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


class Agent(nn.Module):
    """Actor and critic.

    Pixels (C, H, W): a Nature CNN trunk shared by a categorical policy head and a value head.
    Vectors (D,): separate MLPs for the policy and the value. A Box action space gets a
    diagonal Gaussian policy with a state-independent log standard deviation.

    Args:
        obs_shape: one observation's shape.
        action_space: Discrete(n) or a 1-D Box.
        hidden_sizes, activation: MLP layers for vector observations.
        init_log_std: initial log standard deviation of the Gaussian policy (0 as in CleanRL; RL Zoo's
            MuJoCo settings start at -2, a standard deviation of 0.14 in actions bounded by [-1, 1]).
    """

    def __init__(self, obs_shape: tuple[int, ...], action_space: gym.Space, hidden_sizes: list[int],
                 activation: str, init_log_std: float = 0.0):
        super().__init__()
        self.continuous = isinstance(action_space, spaces.Box)
        out = int(np.prod(action_space.shape)) if self.continuous else int(action_space.n)
        if len(obs_shape) == 3:
            self.trunk: nn.Module = orthogonal_init(NatureTrunk(obs_shape[0], obs_shape[-1]))
            self.actor = orthogonal_init(nn.Linear(NATURE_FEATURES, out), POLICY_HEAD_GAIN)
            self.critic = orthogonal_init(nn.Linear(NATURE_FEATURES, 1), VALUE_HEAD_GAIN)
        else:
            self.trunk = nn.Identity()
            self.actor = orthogonal_init(MLP(obs_shape[0], out, hidden_sizes, activation), last_gain=POLICY_HEAD_GAIN)
            self.critic = orthogonal_init(MLP(obs_shape[0], 1, hidden_sizes, activation), last_gain=VALUE_HEAD_GAIN)
        if self.continuous:
            self.actor_logstd = nn.Parameter(torch.full((1, out), float(init_log_std)))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, *obs_shape) -> (B,) state values."""
        return self.critic(self.trunk(obs)).squeeze(-1)

    def dist_and_value(self, obs: torch.Tensor):
        """The action distribution (independent over action dimensions) and (B,) values."""
        features = self.trunk(obs)
        head = self.actor(features)
        value = self.critic(features).squeeze(-1)
        if self.continuous:  # arguments are valid by construction: skip torch's per-call checks
            return Normal(head, self.actor_logstd.expand_as(head).exp(), validate_args=False), value
        return Categorical(logits=head, validate_args=False), value

    def sample_action(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rollout step: (B,) int64 or (B, A) float32 sampled actions, their (B,) log-probabilities (summed
        over dimensions for a Gaussian) and (B,) values; no graph is recorded. For discrete actions it
        samples from the softmax directly, without building a distribution object (the rollout's hot path)."""
        with torch.inference_mode():
            if self.continuous:
                dist, value = self.dist_and_value(obs)
                action = dist.sample()
                return action, dist.log_prob(action).sum(-1), value
            features = self.trunk(obs)
            logits = self.actor(features)
            log_probs = logits - logits.logsumexp(dim=-1, keepdim=True)  # the same numbers as Categorical's
            action = torch.multinomial(torch.softmax(log_probs, dim=-1), 1, replacement=True)  # and its draw
            return action.squeeze(-1), log_probs.gather(-1, action).squeeze(-1), self.critic(features).squeeze(-1)


def log_prob_and_entropy(dist, actions: torch.Tensor, continuous: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) log-probabilities of ``actions`` and (B,) entropies; summed over dimensions for a Gaussian."""
    if continuous:
        return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)
    return dist.log_prob(actions), dist.entropy()


def gae(rewards: torch.Tensor, values: torch.Tensor, next_value: torch.Tensor, terminated: torch.Tensor,
        episode_end: torch.Tensor, final_values: torch.Tensor, gamma: float, gae_lambda: float) -> torch.Tensor:
    """Generalized advantage estimation (Schulman et al. 2016) over a (T, N) rollout.

    The successor of step t is step t+1's state, except where the episode ended at t
    (the env reset): then it is the episode's final observation, whose value is
    ``final_values[t]``. Terminated steps do not bootstrap (the successor's value counts 0);
    truncated ones bootstrap from ``final_values``. Advantages never flow across a
    termination (including an Atari life loss) or an episode end.

    Args:
        rewards, values, terminated, episode_end, final_values: (T, N) float32 (flags in {0, 1}).
        next_value: (N,) value of the observation after the last step.
        gamma, gae_lambda: discount and GAE parameter in [0, 1].

    Returns:
        (T, N) advantages; the value targets are advantages + values.
    """
    # the recursion runs over T small rows: NumPy on the host is several times faster than torch here
    r, v, term, end, final = (x.detach().cpu().numpy() for x in (rewards, values, terminated, episode_end, final_values))
    successors = np.concatenate([v[1:], next_value.detach().cpu().numpy()[None]])
    successors = np.where(end > 0, final, successors)
    deltas = r + gamma * successors * (1.0 - term) - v
    carries = gamma * gae_lambda * (1.0 - np.maximum(term, end))
    advantages = np.zeros_like(r)
    last = np.zeros_like(r[0])
    for t in reversed(range(r.shape[0])):
        last = deltas[t] + carries[t] * last
        advantages[t] = last
    return torch.as_tensor(advantages, device=rewards.device)


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


def make_minibatch_loss(agent: Agent, args: SimpleNamespace, use_compile: bool):
    """The PPO objective of one minibatch, ``torch.compile``d when ``use_compile`` (if compiling fails, e.g.
    without a C++ compiler, it says so once and runs eagerly).

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
        new_logprob, entropy = log_prob_and_entropy(dist, actions, agent.continuous)
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

    if not use_compile:
        return minibatch_loss
    compiled, chosen = torch.compile(minibatch_loss), []

    def compiled_or_eager(*batch):
        if not chosen:  # the first call compiles
            try:
                result = compiled(*batch)
                chosen.append(compiled)
                return result
            except (RuntimeError, OSError) as err:  # torch's compiler errors (no C++ compiler, ...) are RuntimeErrors
                print(f"rlrun: torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                      "running the PPO update eagerly", flush=True)
                chosen.append(minibatch_loss)
        return chosen[0](*batch)

    return compiled_or_eager


def make_agent(cfg: DictConfig, envs: VecEnv, device: torch.device) -> Agent:
    """The Agent for ``envs``' spaces and ``cfg.algo``'s network keys, on ``device``."""
    obs_shape = envs.single_observation_space.shape
    agent = Agent(obs_shape, envs.single_action_space, list(cfg.algo.hidden_sizes), cfg.algo.activation,
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
        with torch.inference_mode():
            dist, _ = agent.dist_and_value(torch.as_tensor(obs_norm(obs), device=device))
            if agent.continuous:
                return np.clip(dist.mean.cpu().numpy(), space.low, space.high)
            return dist.probs.argmax(dim=1).cpu().numpy()

    return act


def train(cfg: DictConfig, run: Run, feedback=None) -> float:
    """Train PPO on ``cfg.env``; returns the mean raw return of the last episodes.

    Args:
        feedback: None (the env's rewards), or an object that replaces each rollout's rewards before the
            advantages are computed (``algo=pbrl``'s preference learner): ``feedback.relabel(global_step,
            obs, actions, rewards, episode_end, next_obs)`` gets the rollout's raw (T, N, *obs_shape)
            observations, (T, N, ...) actions as applied to the env, (T, N) float32 env rewards, (T, N) bool
            episode ends and the raw (T, N, *obs_shape) observations each step led to (the episode's last
            one where it ended), and returns (T, N) float32 rewards; ``feedback.state_dict()`` and
            ``feedback.load_state_dict(state)`` go into and come from the checkpoints.
    """
    args = SimpleNamespace(**OmegaConf.to_container(cfg.algo, resolve=True))
    device = resolve_device(cfg.device)
    envs = make_vec_env(cfg, args.num_envs)
    agent = make_agent(cfg, envs, device)
    optimizer = make_adam(agent, args.learning_rate, args.adam_eps)
    pixels = len(envs.single_observation_space.shape) == 3
    minibatch_loss = make_minibatch_loss(agent, args, use_compile=pixels if args.compile == "auto" else args.compile)
    obs_shape, space = envs.single_observation_space.shape, envs.single_action_space
    obs_norm = ObsNormalizer(obs_shape, args.normalize_obs, args.obs_clip)
    reward_norm = RewardNormalizer(args.num_envs, args.gamma, args.normalize_reward, args.reward_clip)
    clip_rewards = bool(cfg.preprocessing.clip_rewards)
    batch_size = args.num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = run.total // batch_size
    rng = np.random.default_rng(cfg.seed)  # minibatch shuffling

    # rollout storage, (num_steps, num_envs, ...)
    T, N = args.num_steps, args.num_envs
    obs_dtype = torch.uint8 if len(obs_shape) == 3 else torch.float32
    obs_buf = torch.zeros((T, N, *obs_shape), dtype=obs_dtype, device=device)
    actions = torch.zeros((T, N, *space.shape), dtype=torch.float32 if agent.continuous else torch.int64, device=device)
    logprobs, values, final_values = (torch.zeros((T, N), device=device) for _ in range(3))
    # the env's per-step signals stay in NumPy until the rollout ends (one copy to the device per rollout)
    rewards_np, terminated_np, episode_end_np = (np.zeros((T, N), dtype=np.float32) for _ in range(3))
    if feedback is not None:  # what the feedback sees: raw observations, the actions the envs got, next observations
        raw_obs_np = np.zeros((T, N, *obs_shape), dtype=envs.single_observation_space.dtype)
        raw_next_obs_np = np.zeros_like(raw_obs_np)
        env_actions_np = np.zeros((T, N, *space.shape), dtype=np.float32 if agent.continuous else np.int64)

    def checkpoint_state() -> dict:
        return {"agent": agent.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration,
                "minibatch_rng": rng.bit_generator.state, "obs": torch.from_numpy(raw_obs),
                "obs_norm": obs_norm.rms.state_dict() if args.normalize_obs else None,
                "reward_norm": reward_norm.state_dict(), "envs": envs.get_state(),
                "feedback": None if feedback is None else feedback.state_dict()}

    raw_obs = envs.reset(seed=cfg.seed)
    obs = obs_norm(raw_obs, update=True)
    global_step, iteration = 0, 0
    if run.restored is not None:  # resume at the iteration boundary of the checkpoint
        ckpt = run.restored
        global_step, iteration = ckpt["global_step"], ckpt["iteration"]
        load_weights(agent, ckpt["agent"], "agent", cfg)
        optimizer.load_state_dict(ckpt["optimizer"])
        rng.bit_generator.state = ckpt["minibatch_rng"]
        if ckpt["obs_norm"] is not None:
            obs_norm.rms.load_state_dict(ckpt["obs_norm"])
        reward_norm.load_state_dict(ckpt["reward_norm"])
        if feedback is not None:
            feedback.load_state_dict(ckpt["feedback"])
        restored = restore_episodes(envs, ckpt, cfg.env.id)
        if restored is not None:
            raw_obs = restored
            obs = obs_norm(raw_obs)  # already merged into the restored statistics
        set_rng_state(ckpt["rng"])

    while iteration < num_iterations:
        iteration += 1
        if args.anneal_lr:  # linear decay to 0 over the run (Huang et al. 2022, detail 4)
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * args.learning_rate

        # ROLLOUT: num_steps steps of every env with the current policy
        final_values.zero_()
        for step in range(T):
            global_step += N
            obs_buf[step] = torch.as_tensor(obs, device=device)
            # the network reads the buffer, not the env's array: float results can depend on the input's memory
            # alignment, and a resumed run's first observations come from the checkpoint, not the env
            actions[step], logprobs[step], values[step] = agent.sample_action(obs_buf[step])
            env_action = actions[step].cpu().numpy()
            if agent.continuous:  # applied clipped, stored unclipped (Huang et al. 2022, continuous detail 4)
                env_action = np.clip(env_action, space.low, space.high)
            result = envs.step(env_action)
            if feedback is not None:
                raw_obs_np[step], env_actions_np[step], raw_next_obs_np[step] = raw_obs, env_action, result.final_obs
            run.log_episodes(global_step, result.episodes, result.learned_returns)
            rewards_np[step] = np.sign(result.reward) if clip_rewards else result.reward
            terminated_np[step], episode_end_np[step] = result.terminated, result.episode_end
            truncated = np.flatnonzero(result.truncated & result.episode_end)
            if len(truncated):  # bootstrap a time-limit end from the value of its final observation
                with torch.no_grad():
                    final = torch.as_tensor(obs_norm(result.final_obs[truncated]), device=device)
                    final_values[step, torch.as_tensor(truncated, device=device)] = agent.value(final)
            raw_obs = result.obs
            obs = obs_norm(raw_obs, update=True)

        # REWARDS: the env's or the feedback's, scaled by the running std of the return, step by step
        if feedback is not None:
            rewards_np[:] = feedback.relabel(global_step, raw_obs_np, env_actions_np, rewards_np, episode_end_np > 0,
                                             raw_next_obs_np)
        for step in range(T):
            rewards_np[step] = reward_norm(rewards_np[step], episode_end_np[step] > 0)

        # ALGO LOGIC: advantages and value targets
        rewards, terminated, episode_end = (torch.as_tensor(x, device=device)
                                            for x in (rewards_np, terminated_np, episode_end_np))
        with torch.no_grad():
            next_value = agent.value(torch.as_tensor(obs, device=device))
        advantages = gae(rewards, values, next_value, terminated, episode_end, final_values, args.gamma,
                         args.gae_lambda)
        returns = advantages + values

        b_obs = obs_buf.reshape(-1, *obs_shape)
        b_actions = actions.reshape(-1, *space.shape)
        b_logprobs, b_advantages, b_returns, b_values = (x.reshape(-1) for x in (logprobs, advantages, returns, values))

        # ALGO LOGIC: update_epochs passes of minibatch gradient steps on the clipped objective
        clipfracs = []
        for epoch in range(args.update_epochs):
            order = torch.as_tensor(rng.permutation(batch_size), device=device)
            for start in range(0, batch_size, minibatch_size):
                mb = order[start:start + minibatch_size]
                loss, stats = minibatch_loss(b_obs[mb], b_actions[mb], b_logprobs[mb], b_advantages[mb],
                                             b_returns[mb], b_values[mb])
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
        run.log(global_step, {
            "charts/learning_rate": optimizer.param_groups[0]["lr"],
            **{f"losses/{name}": value.item() for name, value in stats.items() if name != "clipfrac"},
            "losses/clipfrac": float(np.mean(clipfracs)), "losses/explained_variance": float(explained_var)})
        run.progress(global_step)
        run.maybe_checkpoint(global_step, checkpoint_state)
        run.maybe_evaluate(global_step, lambda: {"agent": agent.state_dict(),
                                                 "obs_norm": obs_norm.rms.state_dict() if args.normalize_obs else None})
        if run.should_stop:
            break

    run.final_checkpoint(global_step, checkpoint_state)
    envs.close()
    return run.mean_return()
