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
as demonstrations (see :mod:`rlrun.data.demos`) for imitation learning and inverse RL.
Bad input ends with one line on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import rlrun.algos  # noqa: F401 (registers every algorithm)
from rlrun.core import registry
from rlrun.core.checkpoint import find_checkpoint, step_name
from rlrun.core.config import ConfigError, device_unavailable
from rlrun.core.registry import AlgoSpec
from rlrun.core.run import resolve_device
from rlrun.data.demos import DemoRecorder, save_demos
from rlrun.envs.factory import env_spaces
from rlrun.envs.rollout import evaluate

EXIT_BAD_INPUT = 2  # exit status for a bad path or option, as for rlrun's invalid configs


class InputError(ValueError):
    """A path or option rlrun-eval cannot use; the message names it and what is expected."""


def make_evaluator(cfg: DictConfig, spec: AlgoSpec) -> Callable[[dict[str, Any], Path | None], dict[str, Any]]:
    """What a Run calls every ``eval.interval`` steps: ``evaluate(state, video_dir)`` plays ``eval.episodes``
    whole episodes of ``spec``'s evaluation policy of the tracked ``state`` on a separate env seeded with
    ``seed + eval.seed_offset`` (epsilon ``eval.epsilon`` where the policy has one) and returns
    :func:`rlrun.envs.rollout.play`'s statistics; with a ``video_dir`` it writes MP4s there."""
    device = resolve_device(cfg.device)
    seed, episodes = int(cfg.seed) + int(cfg.eval.seed_offset), int(cfg.eval.episodes)
    epsilon = float(cfg.eval.epsilon) if spec.eval_uses_epsilon else 0.0

    def evaluate_state(state: dict[str, Any], video_dir: Path | None) -> dict[str, Any]:
        return evaluate(cfg, lambda env: spec.make_policy(cfg, state, env, device, epsilon, seed), episodes, seed,
                        video_dir)

    return evaluate_state


def parse_device(name: str) -> torch.device:
    """The torch.device for ``--device`` (auto, cpu, cuda, cuda:N, mps). Raises InputError."""
    try:
        device = resolve_device(name)
    except RuntimeError:
        raise InputError(f"--device={name} is not allowed: expected auto, cpu, cuda, cuda:N or mps") from None
    unavailable = device_unavailable(name)
    if unavailable:
        raise InputError(f"--device={name} is not allowed: expected {unavailable}")
    return device


def load_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any], Path]:
    """:func:`rlrun.core.checkpoint.find_checkpoint`'s (checkpoint path, payload, run directory); InputError for a
    path that holds no valid checkpoint."""
    try:
        return find_checkpoint(path)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(str(exc)) from None


def check_options(episodes: int | None, epsilon: float | None, seed: int | None, device: str,
                  save_demos_path: str | Path | None) -> torch.device:
    """Check rlrun-eval's options before any file is read; returns the torch device. Raises InputError."""
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
    return torch_device


def evaluate_checkpoint(path: str | Path, episodes: int | None = None, epsilon: float | None = None,
                        video: bool | None = None, seed: int | None = None, device: str = "auto",
                        save_demos_path: str | Path | None = None,
                        found: tuple[Path, dict[str, Any], Path] | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint and record the result in its run directory (what ``rlrun-eval`` does).

    Args:
        path: a run directory (its newest valid checkpoint) or a checkpoint file.
        episodes, epsilon, video, seed: None takes the checkpoint config's ``eval``
            keys (the seed is ``seed + eval.seed_offset``).
        device: torch device for the network.
        save_demos_path: if given, the episodes are also written there as demonstrations (.npz).
        found: :func:`load_checkpoint`'s result for ``path`` when the caller has it already.

    Returns:
        The statistics of :func:`play` plus "demos" (the demonstrations file or None), "checkpoint", "global_step", "epsilon" (None for
        algorithms whose evaluation policy has none, e.g. PPO plays its mode), "policy" (in words),
        "seed", "video_dir" (None without video) and "json" (where they were written).

    Raises:
        InputError: on a bad path or option (``epsilon`` for an algorithm without one); nothing has
            been written then.
    """
    torch_device = check_options(episodes, epsilon, seed, device, save_demos_path)
    ckpt_path, payload, run_dir = found or load_checkpoint(path)
    cfg = OmegaConf.create(payload["config"])
    episodes = int(cfg.eval.episodes) if episodes is None else episodes
    spec = registry.get(cfg.algo.name)
    if spec.eval_uses_epsilon:
        epsilon = float(cfg.eval.epsilon) if epsilon is None else epsilon
        policy = f"epsilon {epsilon:g}"
    else:
        policy = spec.eval_policy
        if epsilon is not None:
            raise InputError(f"--epsilon={epsilon} is not allowed for {cfg.algo.name}: its evaluation policy has "
                             f"no epsilon (it plays {policy}); leave --epsilon out")
    video = bool(cfg.eval.video) if video is None else video
    seed = int(cfg.seed) + int(cfg.eval.seed_offset) if seed is None else seed
    global_step = int(payload["global_step"])
    name = step_name(global_step)
    video_dir = run_dir / "videos" / name if video else None

    recorder = None
    if save_demos_path is not None:
        recorder = DemoRecorder(str(cfg.env.id), *env_spaces(cfg), source=str(ckpt_path))
    try:
        stats = evaluate(cfg, lambda env: registry.make_policy(cfg, payload, env, torch_device, epsilon or 0.0, seed),
                         episodes, seed, video_dir, recorder)
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


def evaluate_board(path: str | Path, games: int | None = None, mcts_simulations: int = 0, video: bool | None = None,
                   seed: int | None = None, device: str = "auto",
                   found: tuple[Path, dict[str, Any], Path] | None = None) -> dict[str, Any]:
    """Evaluate a board-game checkpoint (algo=selfplay): its player, with MCTS at ``mcts_simulations`` > 0, against
    random play and minimax; written to ``<run dir>/eval/<step>_mcts<N>.json``. ``found``: as for
    :func:`evaluate_checkpoint`. Raises InputError."""
    if games is not None and games < 1:
        raise InputError(f"--games={games} is not allowed: expected an integer >= 1")
    if mcts_simulations < 0:
        raise InputError(f"--mcts-simulations={mcts_simulations} is not allowed: expected an integer >= 1 "
                         "(or 0, the raw policy)")
    torch_device = parse_device(device)
    ckpt_path, payload, run_dir = found or load_checkpoint(path)
    cfg = OmegaConf.create(payload["config"])
    spec = registry.get(cfg.algo.name)
    if spec.board_eval is None:
        raise InputError(f"--mcts-simulations and --games are not allowed for algo={cfg.algo.name}: they are for "
                         "board-game runs (algo=selfplay); use --episodes")
    games = int(cfg.algo.eval_games) if games is None else games
    seed = int(cfg.seed) + int(cfg.eval.seed_offset) if seed is None else seed
    global_step = int(payload["global_step"])
    name = f"{step_name(global_step)}_mcts{mcts_simulations}"
    video_dir = run_dir / "videos" / name if (bool(cfg.eval.video) if video is None else video) else None
    rates = spec.board_eval(cfg, payload, torch_device, mcts_simulations, games, seed, video_dir)
    result = {"checkpoint": str(ckpt_path), "global_step": global_step, "mcts_simulations": mcts_simulations,
              "games": games, "seed": seed, "rates": rates,
              "video_dir": None if video_dir is None else str(video_dir)}
    json_path = run_dir / "eval" / f"{name}.json"
    json_path.parent.mkdir(exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
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
    parser.add_argument("--mcts-simulations", type=int, metavar="N",
                        help="board games (algo=selfplay): play with MCTS at N simulations per move (0: the raw policy)")
    parser.add_argument("--games", type=int, metavar="G",
                        help="board games: games per opponent (default: the run's algo.eval_games)")
    args = parser.parse_args(argv)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renders off-screen: no display wanted, no warning
    try:
        check_options(args.episodes, args.epsilon, args.seed, args.device, args.save_demos)  # before any file is read
        found = load_checkpoint(args.path)  # read once, for both kinds of evaluation
        try:
            board = registry.get(found[1]["config"]["algo"]["name"]).board_eval is not None
        except (KeyError, TypeError, ConfigError):
            board = False  # evaluate_checkpoint reports the problem
        board = board or args.mcts_simulations is not None or args.games is not None
        if board:
            if args.episodes is not None or args.epsilon is not None or args.save_demos is not None:
                raise InputError("--episodes, --epsilon and --save-demos are not allowed for a board-game run: "
                                 "use --games and --mcts-simulations")
            r = evaluate_board(args.path, args.games, args.mcts_simulations or 0, args.video, args.seed, args.device,
                               found)
        else:
            r = evaluate_checkpoint(args.path, args.episodes, args.epsilon, args.video, args.seed, args.device,
                                    args.save_demos, found)
    except InputError as exc:
        message = str(exc).splitlines()[0]  # torch's unpickling errors run over several lines
        print(f"rlrun-eval: {message}", file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_INPUT)
    if board:
        table = ", ".join(f"{key.split('/')[1]} {value:.2f}" for key, value in r["rates"].items()
                          if key.endswith("/win"))
        print(f"rlrun-eval: step {r['global_step']}, MCTS {r['mcts_simulations']} simulations, {r['games']} games per "
              f"opponent: win rates {table}; written to {r['json']}", flush=True)
        return
    print(f"rlrun-eval: step {r['global_step']}, {r['episodes']} episodes "
          f"({r['policy']}, seed {r['seed']}): return mean {r['mean']:.2f} std {r['std']:.2f} "
          f"min {r['min']:g} max {r['max']:g}; written to {r['json']}"
          + (f"; demonstrations written to {r['demos']}" if r["demos"] else ""), flush=True)


if __name__ == "__main__":
    main()
