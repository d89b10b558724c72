"""Evaluate a checkpoint: play whole episodes with its policy and record the raw returns.

    rlrun-eval <run dir>                      # the newest valid checkpoint of a run
    rlrun-eval <run dir>/checkpoints/step_000000100000.pt --episodes 30 --epsilon 0 --video
    rlrun-eval <run dir> --episodes 200 --save-demos demos.npz   # the episodes as demonstrations

Defaults come from the checkpoint's config (``eval.episodes``, ``eval.epsilon``,
``eval.video``; the seed is ``seed + eval.seed_offset``). An episode is a whole
game: on Atari its return is the raw score over all lives. Results go into the
run directory::

    <run dir>/eval/step_<N>.json          returns, lengths, mean, std, min, max, checkpoint, epsilon, seed
    <run dir>/eval/events.out.tfevents.*  eval/episodic_return (each episode) and eval/mean_return at step N
    <run dir>/videos/step_<N>/episode_<i>.mp4   with --video

where N is the checkpoint's global step, zero-padded like the checkpoint names. With
``--save-demos PATH`` the episodes' observations, actions and true rewards are also written to PATH
as demonstrations (see :mod:`rlrun.demos`) for imitation learning and inverse RL.
Bad input ends with one line on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import closing
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlrun import algos
from rlrun.demos import DemoRecorder, save_demos
from rlrun.envs import VecEnv, make_vec_env
from rlrun.envs.render import RecordEpisodeVideos, make_render_env
from rlrun.run import CHECKPOINT_DIGITS, latest_checkpoint, load_checkpoint, resolve_device

EXIT_BAD_INPUT = 2  # exit status for a bad path or option, as for rlrun's invalid configs

Policy = Callable[[np.ndarray], np.ndarray]  # (N, *obs_shape) observations -> (N, *action_shape) actions


DEFAULT_EVAL_POLICY = "the policy's mode"  # how rlrun-eval describes a policy without epsilon


class InputError(ValueError):
    """A path or option rlrun-eval cannot use; the message names it and what is expected."""


def make_act(cfg: DictConfig, state: dict[str, Any], env: VecEnv, device: torch.device, epsilon: float,
             seed: int) -> Policy:
    """The evaluation policy of a checkpoint, from its algorithm's ``make_policy``.

    Dispatches through the registry to ``rlrun.algos.<cfg.algo.name>.make_policy(cfg,
    state, env, device, epsilon, seed)``; an algorithm becomes evaluable by defining it
    (algorithms without exploration ignore ``epsilon``).

    Args:
        cfg: the run's config.
        state: the loaded checkpoint payload.
        env: the env to be played (its single observation and action spaces).
        device: where the network runs.
        epsilon: probability of a uniformly random action, in [0, 1].
        seed: seed of the policy's random choices.

    Returns:
        ``act(obs)``: (N, *obs_shape) observations to (N, *action_shape) actions.

    Raises:
        ValueError: unknown algorithm (ConfigError), an algorithm without
            ``make_policy``, or a policy that does not fit the env.
    """
    module = algos.get(cfg.algo.name)
    make_policy = getattr(module, "make_policy", None)
    if make_policy is None:
        raise ValueError(f"algorithm {cfg.algo.name!r} has no make_policy(...), so its checkpoints cannot be evaluated")
    return make_policy(cfg, state, env, device, epsilon, seed)


def make_eval_env(cfg: DictConfig, video_dir: str | Path | None = None, episodes: int = 0) -> VecEnv:
    """One env of the run: ``make_vec_env(cfg, 1)``, or with ``video_dir`` a rendering env
    with the same observations that writes its first ``episodes`` episodes as MP4 files there."""
    if video_dir is None:
        return make_vec_env(cfg, 1, learned_reward=False)  # evaluation reports true returns only
    return make_render_env(cfg, wrapper=lambda env: RecordEpisodeVideos(env, video_dir, episodes))


def play(env: VecEnv, act: Policy, episodes: int, seed: int, recorder: DemoRecorder | None = None) -> dict[str, Any]:
    """Play ``episodes`` whole episodes on ``env`` (num_envs=1) from ``env.reset(seed)``; with a ``recorder``
    every step's observation, action and true reward go into it.

    Returns:
        {"episodes": n, "returns": [float] raw returns, "lengths": [int] agent steps,
        "mean", "std" (population, ddof=0), "min", "max": of the returns}.

    Raises:
        ValueError: if ``episodes`` < 1.
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes}: expected at least 1")
    obs = env.reset(seed=seed)
    finished: list[tuple[float, int]] = []
    while len(finished) < episodes:
        actions = act(obs)
        step = env.step(actions)
        if recorder is not None:
            recorder.add(obs, actions, float(step.reward[0]), bool(step.episode_end[0]))
        finished += step.episodes
        obs = step.obs
    returns = [float(r) for r, _ in finished]
    return {"episodes": len(finished), "returns": returns, "lengths": [int(n) for _, n in finished],
            "mean": float(np.mean(returns)), "std": float(np.std(returns)),
            "min": min(returns), "max": max(returns)}


def evaluate(cfg: DictConfig, make_policy: Callable[[VecEnv], Policy], episodes: int, seed: int,
             video_dir: str | Path | None = None, recorder: DemoRecorder | None = None) -> dict[str, Any]:
    """Play ``episodes`` whole episodes on one env built from ``cfg`` (see :func:`make_eval_env`).

    Args:
        cfg: the run's config (its env and preprocessing).
        make_policy: given the env, returns ``act``: (1, *obs_shape) observations to (1,)
            int64 actions, e.g. ``lambda env: make_act(cfg, state, env, device, epsilon, seed)``.
        episodes: number of episodes (>= 1).
        seed: seed of the env.
        video_dir: if given, one MP4 per episode is written there (``episode_<i>.mp4``).
        recorder: if given, records the episodes as demonstrations (see :func:`play`).

    Returns:
        The statistics of :func:`play`.

    Raises:
        ValueError: if ``episodes`` < 1, or from ``make_policy``.
    """
    with closing(make_eval_env(cfg, video_dir, episodes)) as env:
        return play(env, make_policy(env), episodes, seed, recorder)


def find_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any], Path]:
    """(checkpoint path, payload, run dir) for a run directory (its newest valid checkpoint)
    or for a checkpoint file in ``<run dir>/checkpoints/``.

    Raises:
        InputError: if ``path`` is neither, or the run holds no valid checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        try:
            ckpt_path, payload = latest_checkpoint(path)
        except FileNotFoundError as exc:
            raise InputError(str(exc)) from None
        return ckpt_path, payload, path
    if not path.is_file():
        raise InputError(f"{path} does not exist: expected a run directory or a checkpoint file")
    run_dir = path.parent.parent
    if path.parent.name != "checkpoints" or not (run_dir / "config.yaml").is_file():
        raise InputError(f"{path} is not in the checkpoints/ directory of a run (<run dir>/checkpoints/step_N.pt)")
    try:
        return path, load_checkpoint(path), run_dir
    except ValueError as exc:
        raise InputError(str(exc)) from None


def parse_device(name: str) -> torch.device:
    """The torch.device for ``--device`` (auto, cpu, cuda, cuda:N, mps). Raises InputError."""
    try:
        device = resolve_device(name)
    except RuntimeError:
        raise InputError(f"--device={name} is not allowed: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device={name} is not allowed: no CUDA device is available")
    return device


def evaluate_checkpoint(path: str | Path, episodes: int | None = None, epsilon: float | None = None,
                        video: bool | None = None, seed: int | None = None, device: str = "auto",
                        save_demos_path: str | Path | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint and record the result in its run directory (what ``rlrun-eval`` does).

    Args:
        path: a run directory (its newest valid checkpoint) or a checkpoint file.
        episodes, epsilon, video, seed: None takes the checkpoint config's ``eval``
            keys (the seed is ``seed + eval.seed_offset``).
        device: torch device for the network.
        save_demos_path: if given, the episodes are also written there as demonstrations (.npz).

    Returns:
        The statistics of :func:`play` plus "demos" (the demonstrations file or None), "checkpoint", "global_step", "epsilon" (None for
        algorithms whose evaluation policy has none, e.g. PPO plays its mode), "policy" (in words),
        "seed", "video_dir" (None without video) and "json" (where they were written).

    Raises:
        InputError: on a bad path or option (``epsilon`` for an algorithm without one); nothing has
            been written then.
    """
    if episodes is not None and episodes < 1:
        raise InputError(f"--episodes={episodes} is not allowed: expected an integer >= 1")
    if epsilon is not None and not 0.0 <= epsilon <= 1.0:
        raise InputError(f"--epsilon={epsilon} is not allowed: expected a number in [0, 1]")
    if seed is not None and seed < 0:
        raise InputError(f"--seed={seed} is not allowed: expected an integer >= 0")
    torch_device = parse_device(device)
    if save_demos_path is not None:
        demos_dir = Path(save_demos_path).parent
        if Path(save_demos_path).is_dir() or not demos_dir.is_dir():
            raise InputError(f"--save-demos={save_demos_path} is not allowed: expected a file path in an existing "
                             "directory, e.g. demos.npz")
    ckpt_path, payload, run_dir = find_checkpoint(path)
    cfg = OmegaConf.create(payload["config"])
    episodes = int(cfg.eval.episodes) if episodes is None else episodes
    module = algos.get(cfg.algo.name)
    if getattr(module, "EVAL_USES_EPSILON", False):
        epsilon = float(cfg.eval.epsilon) if epsilon is None else epsilon
        policy = f"epsilon {epsilon:g}"
    else:
        policy = getattr(module, "EVAL_POLICY", DEFAULT_EVAL_POLICY)
        if epsilon is not None:
            raise InputError(f"--epsilon={epsilon} is not allowed for {cfg.algo.name}: its evaluation policy has "
                             f"no epsilon (it plays {policy}); leave --epsilon out")
    video = bool(cfg.eval.video) if video is None else video
    seed = int(cfg.seed) + int(cfg.eval.seed_offset) if seed is None else seed
    global_step = int(payload["global_step"])
    name = f"step_{global_step:0{CHECKPOINT_DIGITS}d}"
    video_dir = run_dir / "videos" / name if video else None

    recorder = None
    if save_demos_path is not None:
        from rlrun.envs import env_spaces

        recorder = DemoRecorder(str(cfg.env.id), *env_spaces(cfg), source=str(ckpt_path))
    try:
        stats = evaluate(cfg, lambda env: make_act(cfg, payload, env, torch_device, epsilon or 0.0, seed), episodes,
                         seed, video_dir, recorder)
    except ValueError as exc:
        raise InputError(f"{ckpt_path}: {exc}") from None
    demos_path = None if recorder is None else str(save_demos(recorder.demos(), save_demos_path))

    result = {"checkpoint": str(ckpt_path), "global_step": global_step, "epsilon": epsilon, "policy": policy,
              "seed": seed, **stats, "demos": demos_path, "video_dir": None if video_dir is None else str(video_dir)}
    json_path = run_dir / "eval" / f"{name}.json"
    json_path.parent.mkdir(exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    write_scalars(run_dir, global_step, stats["returns"])
    return {**result, "json": str(json_path)}


def write_scalars(run_dir: str | Path, global_step: int, returns: list[float]) -> None:
    """Log eval/episodic_return (each return) and eval/mean_return at ``global_step`` into a new
    TensorBoard event file in ``<run_dir>/eval/`` (TensorBoard shows it as the run's "eval" curves;
    kept apart from training's event files, which a resumed run purges past its checkpoint)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(Path(run_dir) / "eval"))
    for ret in returns:
        writer.add_scalar("eval/episodic_return", ret, global_step)
    writer.add_scalar("eval/mean_return", float(np.mean(returns)), global_step)
    writer.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``rlrun-eval PATH [--episodes N] [--epsilon E] [--video] [--seed S] [--device D]``."""
    parser = argparse.ArgumentParser(
        prog="rlrun-eval", description="Evaluate a checkpoint of an rlrun run: play whole episodes, "
        "report the raw returns, write them to <run dir>/eval/ and TensorBoard, optionally record videos.")
    parser.add_argument("path", help="a run directory (its newest valid checkpoint) or a checkpoint file")
    parser.add_argument("--episodes", type=int, metavar="N",
                        help="episodes to play (default: the run's eval.episodes)")
    parser.add_argument("--epsilon", type=float, metavar="E",
                        help="probability of a random action (default: eval.epsilon)")
    parser.add_argument("--video", action=argparse.BooleanOptionalAction, default=None,
                        help="record one MP4 per episode into <run dir>/videos/step_<N>/ (default: eval.video)")
    parser.add_argument("--seed", type=int, metavar="S",
                        help="seed of the env and the policy (default: seed + eval.seed_offset)")
    parser.add_argument("--device", default="auto", metavar="D",
                        help="torch device: auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--save-demos", metavar="PATH",
                        help="also write the episodes (observations, actions, true rewards) to PATH (.npz) as "
                        "demonstrations for algo=bc, dagger or maxent_irl")
    args = parser.parse_args(argv)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renders off-screen: no display wanted, no warning
    try:
        r = evaluate_checkpoint(args.path, args.episodes, args.epsilon, args.video, args.seed, args.device,
                                args.save_demos)
    except InputError as exc:
        message = str(exc).splitlines()[0]  # torch's unpickling errors run over several lines
        print(f"rlrun-eval: {message}", file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_INPUT)
    print(f"rlrun-eval: step {r['global_step']}, {r['episodes']} episodes "
          f"({r['policy']}, seed {r['seed']}): return mean {r['mean']:.2f} std {r['std']:.2f} "
          f"min {r['min']:g} max {r['max']:g}; written to {r['json']}"
          + (f"; demonstrations written to {r['demos']}" if r["demos"] else ""), flush=True)


if __name__ == "__main__":
    main()
