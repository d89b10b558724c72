"""Deep Q-Network: Mnih et al. 2015, "Human-level control through deep
reinforcement learning", Nature 518:529; Double DQN: van Hasselt et al. 2016, AAAI;
and the Rainbow switches (Hessel et al. 2018, AAAI), each independent:
``prioritized`` replay (Schaul et al. 2016), ``n_step`` returns (Sutton 1988),
``dueling`` heads (Wang et al. 2016), ``distributional`` C51 (Bellemare et al. 2017)
and ``noisy`` networks (Fortunato et al. 2018). ``algo=rainbow`` is a preset of
this module with all of them on.

Reads top to bottom like CleanRL's ``dqn_atari.py``: hyperparameters come from
``cfg.algo`` (see configs/algo/dqn.yaml), then one flat loop:

    act epsilon-greedily (or greedily on noisy weights) -> step the envs -> store
    in replay -> every ``train_frequency`` steps a gradient step on a sampled batch
    (with prioritized replay: then update its priorities) -> every
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

from rlrun.core.config import (check_bool, check_choice, check_int, check_int_list, check_memory, check_number,
                               check_that, fail, get)
from rlrun.core.registry import AlgoSpec, register
from rlrun.core.run import Run, resolve_device
from rlrun.core.state import Counters, load_weights
from rlrun.data.replay import PrioritizedReplayBuffer, ReplayBuffer
from rlrun.envs.factory import action_kind, check_array_observations, env_spaces, make_vec_env
from rlrun.nn.compile import COMPILE_MODES, compile_update
from rlrun.nn.optim import make_adam
from rlrun.nn.qnets import make_q_network, reset_noise
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
    loss = check_choice(cfg, a + "loss", ["auto", "mse", "huber", "cross_entropy"])
    check_number(cfg, a + "max_grad_norm", low=0, low_open=True, optional=True)
    check_int_list(cfg, a + "hidden_sizes")
    prioritized = check_bool(cfg, a + "prioritized")
    check_number(cfg, a + "alpha", low=0, high=1)
    check_number(cfg, a + "beta", low=0, high=1)
    n_step = check_int(cfg, a + "n_step", low=1)
    for switch in ("double_dqn", "compile", "channels_last", "dueling", "noisy"):
        check_bool(cfg, a + switch)
    check_number(cfg, a + "noisy_std", low=0, low_open=True)
    check_choice(cfg, a + "compile_mode", COMPILE_MODES)
    if not isinstance(get(cfg, a + "epsilon_greedy"), bool):  # the command line's true / false are booleans
        check_choice(cfg, a + "epsilon_greedy", ["auto", "true", "false"])
    distributional = check_bool(cfg, a + "distributional")
    check_int(cfg, a + "num_atoms", low=2)
    v_min, v_max = check_number(cfg, a + "v_min"), check_number(cfg, a + "v_max")
    if v_min >= v_max:
        fail("algo.v_min", v_min, f"less than algo.v_max={v_max} (the support of C51's return distribution)")
    if distributional and loss not in ("auto", "cross_entropy"):
        fail("algo.loss", loss, "auto or cross_entropy with algo.distributional=true (C51 minimizes the "
             "cross-entropy to the projected target distribution)")
    if not distributional and loss == "cross_entropy":
        fail("algo.loss", loss, "auto, mse or huber (cross_entropy is C51's loss: set algo.distributional=true)")
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
        fail("algo", cfg.algo.name, f"an algorithm for continuous actions (e.g. algo=ppo): {cfg.env.id} has continuous "
             "actions and DQN needs discrete ones")
    frames = int(cfg.preprocessing.frame_stack)
    check_that(buffer_size // num_envs >= frames + n_step,
               f"replay.buffer_size={buffer_size} is not allowed: expected at least "
               f"{num_envs * (frames + n_step)} for algo.num_envs={num_envs}, frame_stack={frames} "
               f"and algo.n_step={n_step}")
    if cfg.env.family == "atari":  # (K, 84, 84) uint8 frames; building an ALE env to read that is slow
        shape, dtype = (frames, cfg.preprocessing.screen_size, cfg.preprocessing.screen_size), np.uint8
    else:
        space = env_spaces(cfg)[0]
        shape, dtype = space.shape, space.dtype
    check_memory("replay.buffer_size", buffer_size, ReplayBuffer.nbytes_for(buffer_size, shape, dtype, frames,
                                                                            prioritized), "the replay buffer")


def linear_schedule(start_e: float, end_e: float, duration: float, t: int) -> float:
    """Epsilon at step ``t``: linear from ``start_e`` to ``end_e`` over ``duration`` steps, then flat."""
    if duration <= 0:
        return end_e
    return max(end_e, start_e + (end_e - start_e) * t / duration)


def td_target(rewards: torch.Tensor, terminated: torch.Tensor, gamma: float | torch.Tensor,
              next_q_target: torch.Tensor, next_q_online: torch.Tensor | None = None) -> torch.Tensor:
    """The TD target y = r + gamma * (1 - terminated) * Q_target(s', a').

    DQN (Mnih et al. 2015) takes a' = argmax Q_target(s', .); Double DQN
    (van Hasselt et al. 2016) takes a' = argmax Q_online(s', .) when
    ``next_q_online`` is given. A truncated transition has terminated = 0 and so
    bootstraps from its final observation. For n-step returns, ``rewards`` is the
    discounted sum of the k <= n rewards and ``gamma`` the (B,) discounts gamma^k.

    Args:
        rewards: (B,) float32.
        terminated: (B,) float32 in {0, 1}.
        gamma: discount in [0, 1], or (B,) float32 discounts.
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


def categorical_projection(next_probs: torch.Tensor, rewards: torch.Tensor, discounts: torch.Tensor,
                           support: torch.Tensor) -> torch.Tensor:
    """Project the target distribution r + discount * z onto the fixed support z (Bellemare et al. 2017,
    "A Distributional Perspective on Reinforcement Learning", ICML, Algorithm 1).

    Each atom r + d z_j is clipped to [v_min, v_max] and its probability split between the two nearest
    support atoms in proportion to closeness; an atom that lands exactly on a support point keeps all of it.

    Args:
        next_probs: (B, Z) float32 probabilities of the target network at (s', a*).
        rewards: (B,) float32 (n-step) rewards.
        discounts: (B,) float32, gamma^k * (1 - terminated): 0 where the episode ended.
        support: (Z,) float32 atoms z, evenly spaced from v_min to v_max.

    Returns:
        (B, Z) float32 target probabilities (each row sums to 1).
    """
    v_min, v_max, num_atoms = support[0], support[-1], support.shape[0]
    delta = (v_max - v_min) / (num_atoms - 1)
    tz = (rewards.unsqueeze(1) + discounts.unsqueeze(1) * support.unsqueeze(0)).clamp(v_min, v_max)
    b = ((tz - v_min) / delta).clamp(0, num_atoms - 1)  # (B, Z) fractional index on the support
    lower, upper = b.floor().long(), b.ceil().long()
    target = torch.zeros_like(next_probs)
    target.scatter_add_(1, lower, next_probs * (upper.float() - b + (lower == upper).float()))
    target.scatter_add_(1, upper, next_probs * (b - lower.float()))
    return target


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

    q_network = build_q_network(cfg, obs_shape, n_actions).to(device)
    pixels = len(obs_shape) == 3
    if pixels and args.channels_last:
        q_network = q_network.to(memory_format=torch.channels_last)
    target_network = copy.deepcopy(q_network)
    target_network.requires_grad_(False)
    optimizer = make_adam(q_network, args.learning_rate, args.adam_eps)
    buffer_class = PrioritizedReplayBuffer if args.prioritized else ReplayBuffer
    rb = buffer_class(buffer_size, obs_shape, envs.single_observation_space.dtype, num_envs=num_envs,
                      frame_stack=envs.frame_stack, seed=cfg.seed, n_step=args.n_step, gamma=args.gamma,
                      **({"alpha": args.alpha} if args.prioritized else {}))
    update = make_update(q_network, target_network, optimizer, args)
    clip_rewards, log_interval = bool(cfg.preprocessing.clip_rewards), int(cfg.logging.log_interval)
    epsilon_greedy = args.epsilon_greedy in (True, "true") or (args.epsilon_greedy == "auto" and not args.noisy)

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
        # ALGO LOGIC: epsilon-greedy action for every env (noisy nets explore through their weights instead)
        epsilon = linear_schedule(args.start_e, args.end_e, args.exploration_fraction * run.total, t) \
            if epsilon_greedy else 0.0
        explore = rng.random(num_envs) < epsilon
        actions = rng.integers(0, n_actions, size=num_envs)
        if not explore.all():
            if args.noisy:
                reset_noise(q_network)  # new weights noise at every step (Fortunato et al. 2018, Algorithm 1)
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
            beta = args.beta + (1.0 - args.beta) * min(1.0, t / run.total)  # annealed to 1 (Schaul et al. 2016)
            for _ in range(multiples_in(t, num_envs, args.train_frequency)):
                b = rb.sample(args.batch_size, beta) if args.prioritized else rb.sample(args.batch_size)
                loss, q_mean, errors = update(*(None if x is None else torch.as_tensor(x, device=device) for x in (
                    b.obs, b.actions, b.rewards, b.next_obs, b.terminated, b.discounts, b.weights)))
                if args.prioritized:
                    rb.update_priorities(b.indices, errors.cpu().numpy())
                if t >= counters.next_log_step:
                    counters.next_log_step = t + log_interval
                    run.log(global_step, {"losses/td_loss": loss.item(), "losses/q_values": q_mean.item(),
                                          "charts/epsilon": epsilon, **({"charts/beta": beta} if args.prioritized
                                                                         else {})})
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


def build_q_network(cfg: DictConfig, obs_shape: tuple[int, ...], n_actions: int) -> torch.nn.Module:
    """The Q-network of ``cfg.algo``'s switches (:func:`rlrun.nn.qnets.make_q_network`); a config written
    before the switches existed builds the plain network."""
    a = cfg.algo
    return make_q_network(obs_shape, n_actions, list(a.hidden_sizes), dueling=bool(a.get("dueling", False)),
                          noisy=bool(a.get("noisy", False)),
                          num_atoms=int(a.num_atoms) if a.get("distributional", False) else 1,
                          v_min=float(a.get("v_min", -10.0)), v_max=float(a.get("v_max", 10.0)),
                          noisy_std=float(a.get("noisy_std", 0.5)))


def make_policy(cfg: DictConfig, state: dict, envs, device: torch.device, epsilon: float, seed: int):
    """The evaluation policy of a DQN checkpoint: epsilon-greedy on its Q-network (noisy layers at their
    mean weights).

    Args: the run's config, a loaded checkpoint (``state["q_network"]``), the VecEnv to be played (its
    single spaces), the network's device, the probability of a random action (0.05 in Mnih et al. 2015)
    and the seed of the random actions.

    Returns:
        ``act(obs) -> actions``: (N, *obs_shape) observations to (N,) int64 actions.
    """
    if not isinstance(envs.single_action_space, spaces.Discrete):
        fail("env", cfg.env.id, "an env with discrete actions for DQN")
    obs_shape, n_actions = envs.single_observation_space.shape, int(envs.single_action_space.n)
    q_network = build_q_network(cfg, obs_shape, n_actions).to(device)
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

    ``update(obs, actions, rewards, next_obs, terminated, discounts, weights)`` takes (B, *obs_shape)
    observations, (B,) int64 actions, (B,) float32 rewards and terminated flags, and optionally (B,)
    float32 n-step discounts and importance-sampling weights (None: gamma, and equal weights). It minimizes
    the TD loss (``args.loss``: mse or huber; C51's cross-entropy with ``args.distributional``), weighted
    when ``weights`` is given, with one optimizer step (gradient norm clipped to ``args.max_grad_norm`` if
    set). Returns the loss and the mean Q-value of the batch as 0-d tensors and the per-transition errors
    (B,) (|TD error|, or the cross-entropy for C51) from which prioritized replay sets priorities.
    The loss computation is ``torch.compile``d (in ``args.compile_mode``) when ``args.compile``.
    """
    gamma, double_dqn, max_grad_norm = float(args.gamma), bool(args.double_dqn), args.max_grad_norm
    noisy, distributional = bool(args.noisy), bool(args.distributional)
    loss_fn = F.smooth_l1_loss if args.loss == "huber" else F.mse_loss

    def td_loss(obs, actions, rewards, next_obs, terminated, discounts, weights):
        discount = gamma if discounts is None else discounts
        if distributional:
            with torch.no_grad():
                next_logits = target_network.logits(next_obs)  # (B, A, Z)
                next_probs = next_logits.softmax(dim=2)
                support = target_network.support
                next_q = q_network(next_obs) if double_dqn else (next_probs * support).sum(dim=2)
                best = next_probs[torch.arange(len(actions)), next_q.argmax(dim=1)]  # (B, Z)
                target = categorical_projection(best, rewards, discount * (1.0 - terminated), support)
            log_probs = q_network.logits(obs).log_softmax(dim=2)[torch.arange(len(actions)), actions]  # (B, Z)
            errors = -(target * log_probs).sum(dim=1)  # cross-entropy (B,)
            q_values = (log_probs.detach().exp() * support).sum(dim=1)
            loss = errors.mean() if weights is None else (weights * errors).mean()
            return loss, q_values.mean(), errors.detach()
        with torch.no_grad():
            next_q_online = q_network(next_obs) if double_dqn else None
            target = td_target(rewards, terminated, discount, target_network(next_obs), next_q_online)
        q_values = q_network(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
        if weights is None:
            loss = loss_fn(q_values, target)
        else:  # importance-sampling weights of prioritized replay (Schaul et al. 2016, Algorithm 1)
            loss = (weights * loss_fn(q_values, target, reduction="none")).mean()
        return loss, q_values.mean(), (target - q_values).abs().detach()

    td_loss = compile_update(td_loss, args.compile_mode, "the DQN update") if args.compile else td_loss

    def update(obs, actions, rewards, next_obs, terminated, discounts=None, weights=None):
        if noisy:  # independent noise for the online and the target network at every update
            reset_noise(q_network)
            reset_noise(target_network)
        loss, q_mean, errors = td_loss(obs, actions, rewards, next_obs, terminated, discounts, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(q_network.parameters(), max_grad_norm)
        optimizer.step()
        return loss.detach(), q_mean.detach(), errors

    return update


def multiples_in(start: int, count: int, every: int) -> int:
    """How many multiples of ``every`` lie in [start, start + count): the events due in one iteration."""
    return (start + count - 1) // every - (start - 1) // every


for _name in ("dqn", "rainbow"):  # rainbow: configs/algo/rainbow.yaml, this module with every switch on
    register(AlgoSpec(_name, validate, train, make_policy, eval_policy="epsilon-greedy", eval_uses_epsilon=True,
                      learned_reward=True))
