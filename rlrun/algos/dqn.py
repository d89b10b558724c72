"""Deep Q-Network: Mnih et al. 2015, "Human-level control through deep
reinforcement learning", Nature 518:529; Double DQN: van Hasselt et al. 2016, AAAI.

Reads top to bottom like CleanRL's ``dqn_atari.py``: hyperparameters come from
``cfg.algo`` (see configs/algo/dqn.yaml), then one flat loop:

    act epsilon-greedily -> step the envs -> store in replay -> every
    ``train_frequency`` steps a gradient step on a sampled batch -> every
    ``target_network_frequency`` steps update the target network.

``global_step`` counts agent steps summed over envs; on Atari one agent step is
4 emulator frames.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from omegaconf import DictConfig, OmegaConf

from rlrun.core.config import check_bool, check_choice, check_int, check_int_list, check_number, check_that, fail
from rlrun.core.registry import AlgoSpec, register
from rlrun.core.run import Run, resolve_device
from rlrun.core.state import Counters, load_weights
from rlrun.data.replay import ReplayBuffer
from rlrun.envs.factory import action_kind, check_array_observations, make_vec_env
from rlrun.nn.networks import make_network
from rlrun.nn.optim import make_adam
from rlrun.rlhf.learned_reward import with_learned_reward


def validate(cfg: DictConfig) -> None:
    """Check the DQN keys and how they combine with the run; raises ConfigError."""
    a = "algo."
    num_envs = check_int(cfg, a + "num_envs", low=1)
    check_number(cfg, a + "learning_rate", low=0, low_open=True)
    check_number(cfg, a + "adam_eps", low=0, low_open=True)
    check_number(cfg, a + "gamma", low=0, high=1)
    check_number(cfg, a + "tau", low=0, high=1, low_open=True)
    check_int(cfg, a + "target_network_frequency", low=1)
    batch_size = check_int(cfg, a + "batch_size", low=1)
    start_e = check_number(cfg, a + "start_e", low=0, high=1)
    end_e = check_number(cfg, a + "end_e", low=0, high=1)
    check_number(cfg, a + "exploration_fraction", low=0, high=1)
    learning_starts = check_int(cfg, a + "learning_starts", low=0)
    check_int(cfg, a + "train_frequency", low=1)
    check_choice(cfg, a + "loss", ["mse", "huber"])
    check_number(cfg, a + "max_grad_norm", low=0, low_open=True, optional=True)
    check_bool(cfg, a + "double_dqn")
    check_int_list(cfg, a + "hidden_sizes")
    check_bool(cfg, a + "compile")
    check_bool(cfg, a + "channels_last")
    check_choice(cfg, "replay.name", ["uniform"])
    buffer_size = check_int(cfg, "replay.buffer_size", low=1)
    total = int(cfg.total_timesteps)
    if learning_starts >= total:
        fail("algo.learning_starts", learning_starts,
             f"fewer steps than total_timesteps={total} (otherwise DQN never learns)")
    if batch_size > buffer_size:
        fail("algo.batch_size", batch_size, f"at most replay.buffer_size={buffer_size}")
    if end_e > start_e:
        fail("algo.end_e", end_e, f"at most algo.start_e={start_e} (epsilon decays)")
    check_array_observations(cfg)
    if action_kind(cfg) != "categorical":
        fail("algo", "dqn", f"an algorithm for continuous actions (e.g. algo=ppo): {cfg.env.id} has continuous "
             "actions and DQN needs discrete ones")
    frames = int(cfg.preprocessing.frame_stack)
    check_that(buffer_size // num_envs >= frames + 1,
               f"replay.buffer_size={buffer_size} is not allowed: expected at least "
               f"{num_envs * (frames + 1)} for algo.num_envs={num_envs} and frame_stack={frames}")


def linear_schedule(start_e: float, end_e: float, duration: float, t: int) -> float:
    """Epsilon at step ``t``: linear from ``start_e`` to ``end_e`` over ``duration`` steps, then flat."""
    if duration <= 0:
        return end_e
    return max(end_e, start_e + (end_e - start_e) * t / duration)


def td_target(rewards: torch.Tensor, terminated: torch.Tensor, gamma: float,
              next_q_target: torch.Tensor, next_q_online: torch.Tensor | None = None) -> torch.Tensor:
    """The one-step TD target y = r + gamma * (1 - terminated) * Q_target(s', a').

    DQN (Mnih et al. 2015) takes a' = argmax Q_target(s', .); Double DQN
    (van Hasselt et al. 2016) takes a' = argmax Q_online(s', .) when
    ``next_q_online`` is given. A truncated transition has terminated = 0 and so
    bootstraps from its final observation.

    Args:
        rewards: (B,) float32.
        terminated: (B,) float32 in {0, 1}.
        gamma: discount in [0, 1].
        next_q_target: (B, A) float32, Q_target(s', .).
        next_q_online: (B, A) float32, Q_online(s', .) for Double DQN, else None.

    Returns:
        (B,) float32 targets.
    """
    if next_q_online is None:
        next_value = next_q_target.max(dim=1).values
    else:
        next_value = next_q_target.gather(1, next_q_online.argmax(dim=1, keepdim=True)).squeeze(1)
    return rewards + gamma * (1.0 - terminated) * next_value


def train(cfg: DictConfig, run: Run) -> float:
    """Train DQN on ``cfg.env``; returns the mean raw return of the last episodes."""
    args = SimpleNamespace(**OmegaConf.to_container(cfg.algo, resolve=True))  # plain values: fast in the loop
    device = resolve_device(cfg.device)
    num_envs, buffer_size = int(args.num_envs), int(cfg.replay.buffer_size)
    envs = with_learned_reward(cfg, make_vec_env(cfg, num_envs))
    if not isinstance(envs.single_action_space, spaces.Discrete):
        fail("env", cfg.env.id, "an env with discrete actions for DQN")
    n_actions = int(envs.single_action_space.n)
    obs_shape = envs.single_observation_space.shape
    rng = np.random.default_rng(cfg.seed)  # exploration: epsilon coin flips and random actions

    q_network = make_network(obs_shape, n_actions, args.hidden_sizes).to(device)
    pixels = len(obs_shape) == 3
    if pixels and args.channels_last:
        q_network = q_network.to(memory_format=torch.channels_last)
    target_network = copy.deepcopy(q_network)
    target_network.requires_grad_(False)
    optimizer = make_adam(q_network, args.learning_rate, args.adam_eps)
    rb = ReplayBuffer(buffer_size, obs_shape, envs.single_observation_space.dtype,
                      num_envs=num_envs, frame_stack=envs.frame_stack, seed=cfg.seed)
    update = make_update(q_network, target_network, optimizer, args)
    clip_rewards, log_interval = bool(cfg.preprocessing.clip_rewards), int(cfg.logging.log_interval)

    # STATE: what a checkpoint holds; a resumed run loads it back here
    obs = envs.reset(seed=cfg.seed)
    counters = Counters(next_log_step=0, learning_resumes=0)
    run.track(q_network=q_network, target_network=target_network, optimizer=optimizer, exploration_rng=rng,
              replay_rng=rb.rng, counters=counters, envs=envs, replay=rb)
    global_step, obs = run.start_step, envs.obs
    if run.resumed and len(rb) == 0:  # no replay snapshot: refill the buffer before learning again
        counters.learning_resumes = global_step + max(min(args.learning_starts, buffer_size), args.batch_size)
        print(f"rlrun: no replay snapshot for step {global_step}: refilling the buffer for "
              f"{counters.learning_resumes - global_step} steps before learning resumes", flush=True)
    if run.resumed and not envs.episodes_restored:  # ALE: the checkpoint's episodes end where they were cut
        rb.end_episodes(run.restored["obs"].numpy())

    while global_step < run.total:
        t = global_step  # agent steps before this iteration: the schedules' clock (CleanRL's loop index)
        # ALGO LOGIC: epsilon-greedy action for every env
        epsilon = linear_schedule(args.start_e, args.end_e, args.exploration_fraction * run.total, t)
        explore = rng.random(num_envs) < epsilon
        actions = rng.integers(0, n_actions, size=num_envs)
        if not explore.all():
            with torch.inference_mode():
                greedy = q_network(torch.as_tensor(obs, device=device)).argmax(dim=1).cpu().numpy()
            actions = np.where(explore, actions, greedy)

        # step the envs; log finished episodes (raw score over all lives)
        step = envs.step(actions)
        global_step += num_envs  # agent steps done: the x-axis of every scalar
        run.log_episodes(global_step, step.episodes, step.learned_returns)
        rewards = np.sign(step.reward) if clip_rewards else step.reward
        rb.add(obs, actions, rewards, step.terminated, step.episode_end, step.final_obs)
        obs = step.obs

        # ALGO LOGIC: training
        if t > args.learning_starts and t >= counters.learning_resumes:
            for _ in range(multiples_in(t, num_envs, args.train_frequency)):
                b = rb.sample(args.batch_size)
                loss, q_mean = update(*(torch.as_tensor(x, device=device)
                                        for x in (b.obs, b.actions, b.rewards, b.next_obs, b.terminated)))
                if t >= counters.next_log_step:
                    counters.next_log_step = t + log_interval
                    run.log(global_step, {"losses/td_loss": loss.item(), "losses/q_values": q_mean.item(),
                                          "charts/epsilon": epsilon})
            if multiples_in(t, num_envs, args.target_network_frequency):
                with torch.no_grad():
                    for target_param, param in zip(target_network.parameters(), q_network.parameters()):
                        if args.tau == 1.0:
                            target_param.copy_(param)  # hard copy (Mnih et al. 2015)
                        else:
                            target_param.lerp_(param, args.tau)  # Polyak averaging
        if run.end_iteration(global_step):
            break

    run.finish(global_step)
    envs.close()
    return run.mean_return()


def make_policy(cfg: DictConfig, state: dict, envs, device: torch.device, epsilon: float, seed: int):
    """The evaluation policy of a DQN checkpoint: epsilon-greedy on its Q-network.

    Args:
        cfg: the run's config (network settings).
        state: a loaded checkpoint (``state["q_network"]``).
        envs: the VecEnv to be played (its single observation and action spaces).
        device: where the network runs.
        epsilon: probability of a uniformly random action (0.05 in Mnih et al. 2015).
        seed: seed of the random actions.

    Returns:
        ``act(obs) -> actions``: (N, *obs_shape) observations to (N,) int64 actions.
    """
    if not isinstance(envs.single_action_space, spaces.Discrete):
        fail("env", cfg.env.id, "an env with discrete actions for DQN")
    obs_shape, n_actions = envs.single_observation_space.shape, int(envs.single_action_space.n)
    q_network = make_network(obs_shape, n_actions, list(cfg.algo.hidden_sizes)).to(device)
    load_weights(q_network, state["q_network"], "q_network", cfg)
    q_network.eval()
    rng = np.random.default_rng(seed)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            greedy = q_network(torch.as_tensor(obs, device=device)).argmax(dim=1).cpu().numpy()
        explore = rng.random(len(obs)) < epsilon
        return np.where(explore, rng.integers(0, n_actions, size=len(obs)), greedy)

    return act


def make_update(q_network: torch.nn.Module, target_network: torch.nn.Module, optimizer: torch.optim.Optimizer,
                args: SimpleNamespace):
    """The gradient step of DQN as a function of one batch.

    ``update(obs, actions, rewards, next_obs, terminated)`` takes (B, *obs_shape)
    observations, (B,) int64 actions, (B,) float32 rewards and terminated flags,
    minimizes the TD loss (``args.loss``: mse or huber) against :func:`td_target`
    with one optimizer step (gradient norm clipped to ``args.max_grad_norm`` if set)
    and returns the loss and the mean Q-value of the batch as 0-d tensors.
    The loss computation is ``torch.compile``d when ``args.compile``.
    """
    gamma, double_dqn, max_grad_norm = float(args.gamma), bool(args.double_dqn), args.max_grad_norm
    loss_fn = F.mse_loss if args.loss == "mse" else F.smooth_l1_loss

    def td_loss(obs, actions, rewards, next_obs, terminated):
        with torch.no_grad():
            next_q_online = q_network(next_obs) if double_dqn else None
            target = td_target(rewards, terminated, gamma, target_network(next_obs), next_q_online)
        q_values = q_network(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
        return loss_fn(q_values, target), q_values.mean()

    if args.compile:
        td_loss = torch.compile(td_loss)

    def update(obs, actions, rewards, next_obs, terminated):
        loss, q_mean = td_loss(obs, actions, rewards, next_obs, terminated)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(q_network.parameters(), max_grad_norm)
        optimizer.step()
        return loss.detach(), q_mean.detach()

    return update


def multiples_in(start: int, count: int, every: int) -> int:
    """How many multiples of ``every`` lie in [start, start + count): the events due in one iteration."""
    return (start + count - 1) // every - (start - 1) // every


register(AlgoSpec("dqn", validate, train, make_policy, eval_policy="epsilon-greedy", eval_uses_epsilon=True,
                  learned_reward=True))
