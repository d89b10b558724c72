"""Learning curve of a reference PPO on Breakout with the ppo_atari settings, next to rlrun's.

The issue asks to compare rlrun's Breakout curve with CleanRL's at the same step count. CleanRL
publishes that curve only as plots and Weights & Biases runs, which this machine cannot reach, so
this script trains the reference it can run here, Stable-Baselines3's PPO with exactly the
settings of CleanRL's ppo_atari.py (``bench_ppo.ATARI``: 8 envs x 128 steps, 4 epochs x 4
minibatches, Adam 2.5e-4 annealed, clip 0.1, entropy 0.01, value 0.5, gamma 0.99, lambda 0.95,
max grad norm 0.5; ``make_atari_env`` + 4-frame stack, Nature CNN), and tabulates the mean raw
episodic return (game score over all lives, from SB3's Monitor) of the episodes that ended in each
window of agent steps; with ``--rlrun-run DIR`` the same windows of an rlrun run
(``charts/episodic_return``) go next to it.

Usage::

    python scripts/ppo_breakout_curve.py --steps 1000000 --rlrun-run outputs/.../ppo_breakout_s1 --record
    python scripts/ppo_breakout_curve.py --steps 20480 --window 10240    # a smoke check
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

# these modules sit next to this script, so they are on sys.path when it runs
from bench_ppo import ATARI, SEED
from benchlib import record, say

SECTION = "## PPO learning: Breakout against Stable-Baselines3"


def train_sb3(steps: int) -> tuple[list[tuple[int, float]], float]:
    """Train SB3 PPO on BreakoutNoFrameskip-v4 with ``ATARI`` for ``steps`` agent steps (rounded down to whole
    iterations); returns (agent step, raw return) of every finished game and the wall time in seconds."""
    import ale_py
    import gymnasium
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    class Episodes(BaseCallback):
        """Collects (num_timesteps, return) from the Monitor's episode records (whole games, raw score)."""

        def __init__(self) -> None:
            super().__init__()
            self.episodes: list[tuple[int, float]] = []

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.episodes.append((self.num_timesteps, float(info["episode"]["r"])))
            return True

    gymnasium.register_envs(ale_py)
    s = ATARI
    env = VecFrameStack(make_atari_env("BreakoutNoFrameskip-v4", n_envs=s["num_envs"], seed=SEED), n_stack=4)
    lr, batch = s["learning_rate"], s["num_envs"] * s["num_steps"]
    model = PPO("CnnPolicy", env, n_steps=s["num_steps"], batch_size=batch // s["num_minibatches"],
                n_epochs=s["update_epochs"], learning_rate=lambda progress_remaining: progress_remaining * lr,
                clip_range=s["clip_coef"], ent_coef=s["ent_coef"], vf_coef=s["vf_coef"], gamma=s["gamma"],
                gae_lambda=s["gae_lambda"], max_grad_norm=s["max_grad_norm"], seed=SEED, verbose=0)
    callback = Episodes()
    start = time.perf_counter()
    model.learn(total_timesteps=steps // batch * batch, callback=callback)
    env.close()
    return callback.episodes, time.perf_counter() - start


def rlrun_episodes(run_dir: Path) -> list[tuple[int, float]]:
    """(agent step, raw return) of every finished game of an rlrun run."""
    from rlrun.core.events import read_scalars

    return [(step, value) for step, value, _ in read_scalars(run_dir)["charts/episodic_return"]]


def window_means(episodes: list[tuple[int, float]], window: int, steps: int) -> list[float]:
    """Mean return of the episodes that ended in each window [k * window, (k + 1) * window) of agent steps
    (nan for a window without one)."""
    steps_arr = np.array([s for s, _ in episodes])
    returns = np.array([r for _, r in episodes])
    means = []
    for k in range(steps // window):
        inside = (steps_arr > k * window) & (steps_arr <= (k + 1) * window)
        means.append(float(returns[inside].mean()) if inside.any() else float("nan"))
    return means


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000, help="agent steps of the SB3 run (default 1M)")
    parser.add_argument("--window", type=int, default=100_000, help="agent steps per table column (default 100k)")
    parser.add_argument("--rlrun-run", type=Path, help="an rlrun run of algo=ppo env=breakout to put next to it")
    parser.add_argument("--record", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.window < 1 or args.steps < args.window:
        parser.error(f"--window={args.window} is not allowed: expected 1 <= window <= --steps={args.steps}")
    rows = []
    if args.rlrun_run is not None:
        rows.append(("rlrun PPO", window_means(rlrun_episodes(args.rlrun_run), args.window, args.steps)))
    say(f"training SB3 PPO on Breakout for {args.steps:,} agent steps")
    episodes, seconds = train_sb3(args.steps)
    rows.append(("SB3 PPO", window_means(episodes, args.window, args.steps)))
    say(f"SB3: {len(episodes):,} games in {seconds / 60:.1f} minutes ({args.steps / seconds:,.0f} agent steps/s); "
        f"mean of the last 100: {np.mean([r for _, r in episodes[-100:]]):.1f}")

    k = args.window // 1000
    header = "| steps | " + " | ".join(f"{i * k}-{(i + 1) * k}k" for i in range(args.steps // args.window)) + " |"
    lines = [header, "|---" * (args.steps // args.window + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{m:.1f}" for m in means) + " |" for name, means in rows]
    table = "\n".join(lines)
    settings = ("Mean raw episodic return (game score over all lives) of the games that ended in each window of "
                f"agent steps, seed {SEED}, CleanRL ppo_atari settings; SB3 PPO run in {seconds / 60:.0f} minutes, "
                f"{len(episodes):,} games.")
    print("\n" + settings + "\n\n" + table)
    if args.record:
        command = "python scripts/ppo_breakout_curve.py" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
        record(SECTION, command, settings, table)
        say("recorded in docs/benchmarks.md")


if __name__ == "__main__":
    main()
