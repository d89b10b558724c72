"""Throughput benchmark of rlrun's PPO on ALE Breakout and CartPole, against Stable-Baselines3.

Every figure is the median over ``--repeats`` runs; each run is a real training run
in a fresh Python process, and the runs go one after the other, never two at once
(rlrun and SB3 alternate, so a slow phase of the machine hits both).

Steady-state rate: rlrun logs ``losses/approx_kl`` once per iteration (a rollout of
num_envs x num_steps agent steps, then the update epochs), so the wall times of those
TensorBoard events are a clock at the end of every iteration. The rate is
(last.step - first.step) / (last.wall_time - first.wall_time), skipping the first
``WARMUP_POINTS`` events: iterations 1 and 2 (start-up, first allocations) are not
timed. SB3 is timed the same way from a callback clock at the end of every iteration
(when the next rollout starts, and when training ends), over the same number of
iterations. Agent steps are summed over envs; on Atari one agent step is 4 emulator
frames.

The figures:

1. Breakout, the reference settings (CleanRL ``ppo_atari.py``, rlrun's ``algo=ppo``
   defaults; ``ATARI``): 8 envs x 128 steps, 4 epochs of 4 minibatches, Adam at
   2.5e-4 annealed linearly to 0, clip 0.1, entropy 0.01, value 0.5, gamma 0.99,
   GAE lambda 0.95, gradient norm clipped at 0.5, Nature CNN; ``--atari-steps``
   agent steps (default 20,480 = 20 iterations).
   (a) rlrun PPO (``algo=ppo env=breakout``: ale_py's C++ vector env; its default
       ``algo.compile=auto`` compiles the minibatch loss for pixel observations, which
       happens in the untimed first iteration), steady state.
   (b) Stable-Baselines3 PPO with the same hyperparameters on
       ``BreakoutNoFrameskip-v4`` (``make_atari_env`` with 8 envs in a DummyVecEnv,
       ``VecFrameStack(4)``, ``CnnPolicy``), steady state. SB3 keeps its defaults where
       CleanRL differs (no value-loss clipping).
   (c) The ratio rlrun / SB3 from the same invocation; the issue's target is 1.3x.
2. CartPole-v1, rlrun's tuned settings (CleanRL ``ppo.py``, ``algo=ppo env=cartpole``;
   ``CARTPOLE``): as above with 4 envs and clip 0.2, actor and critic MLPs of 64x64
   tanh; ``--cartpole-steps`` agent steps (default 100,000).
   (a) rlrun PPO with 4 and with 8 envs and, where the config has the key
       ``env.vectorized``, with it false (a gymnasium SyncVectorEnv of single envs)
       and true (gymnasium's NumPy-vectorized CartPole), steady state. The row that
       is the tuned config carries the issue's target of 10,000 agent steps/s.
   (b) SB3 PPO with the tuned hyperparameters (4 envs in a DummyVecEnv, ``MlpPolicy``
       with ``net_arch=dict(pi=[64, 64], vf=[64, 64])`` and tanh), steady state, and
       the ratio of the tuned rlrun row to it.
3. Peak RSS (``VmHWM``) of the rlrun Breakout PPO process of figure 1a, in GB.

Torch uses its default threads (one per core) unless ``OMP_NUM_THREADS`` is set; the
thread count and such variables are recorded with the results.

Usage::

    python scripts/bench_ppo.py                 # the full benchmark
    python scripts/bench_ppo.py --quick         # tiny sizes, a smoke check of every figure
    python scripts/bench_ppo.py --record        # also write the "## PPO" section of docs/benchmarks.md
"""

from __future__ import annotations

# Only light imports at module level: the measurement processes are started with
# "spawn" and re-import this module. Heavy modules are imported where used.
import argparse
import contextlib
import importlib.util
import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

# benchlib.py sits next to this script, so it is on sys.path when the script runs
from benchlib import DOCS, GB, compose_config, in_subprocess, publish, say, steady_rate

ATARI = {  # CleanRL ppo_atari.py settings (rlrun's algo=ppo defaults), shared by the rlrun and SB3 runs
    "num_envs": 8,
    "num_steps": 128,
    "update_epochs": 4,
    "num_minibatches": 4,
    "learning_rate": 2.5e-4,  # annealed linearly to 0 over the run
    "clip_coef": 0.1,
    "ent_coef": 0.01,
    "vf_coef": 0.5,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "max_grad_norm": 0.5,
}
CARTPOLE = {**ATARI, "num_envs": 4, "clip_coef": 0.2}  # CleanRL ppo.py (rlrun's configs/tuned/ppo_cartpole.yaml)
CARTPOLE_NUM_ENVS = (CARTPOLE["num_envs"], 8)  # rlrun CartPole variants
SEED = 1
WARMUP_POINTS = 1  # clock points skipped: timing starts at the end of iteration 2
SECTION = "## PPO"
TARGET_RATIO = 1.3  # the issue's targets: rlrun / SB3 on Breakout, and rlrun's rate on CartPole
TARGET_CARTPOLE = 10_000

FULL = {"repeats": 3, "atari_steps": 20 * 1024, "cartpole_steps": 100_000}
QUICK = {"repeats": 1, "atari_steps": 3 * 1024, "cartpole_steps": 10_000}


# ---- training runs ------------------------------------------------------------------

def rlrun_overrides(env: str, settings: dict[str, Any], steps: int) -> list[str]:
    """rlrun config overrides for PPO on ``env`` with ``settings`` for ``steps`` agent steps."""
    return [f"env={env}", f"total_timesteps={steps}", "algo.anneal_lr=true",
            *(f"algo.{key}={value}" for key, value in settings.items())]


def train_rlrun(overrides: list[str]) -> list[tuple[int, float]]:
    """Train rlrun's PPO with ``overrides``; returns (step, wall time) of every ``losses/approx_kl``
    event, one per iteration."""
    from rlrun.cli.train import run_training
    from rlrun.core.events import read_scalars

    cfg = compose_config(["algo=ppo", f"seed={SEED}", "logging.progress=none", "checkpoint.interval=0", *overrides])
    with tempfile.TemporaryDirectory(prefix="bench_ppo_") as tmp:
        run_dir = Path(tmp) / "run"
        with contextlib.redirect_stdout(io.StringIO()):  # rlrun's start and end lines
            run_training(cfg, run_dir)
        return [(step, wall_time) for step, _, wall_time in read_scalars(run_dir)["losses/approx_kl"]]


def train_sb3(atari: bool, settings: dict[str, Any], steps: int) -> list[tuple[int, float]]:
    """Train SB3's PPO with ``settings`` on BreakoutNoFrameskip-v4 (``atari``) or CartPole-v1 for as many
    full iterations as rlrun runs in ``steps``; returns (num_timesteps, perf_counter) at the end of every
    iteration (rollout and update), as rlrun's approx_kl events."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    class Clock(BaseCallback):
        """Records (num_timesteps, perf_counter) at the end of every iteration: when the next rollout
        starts, and when training ends."""

        def __init__(self) -> None:
            super().__init__()
            self.points: list[tuple[int, float]] = []

        def _on_rollout_start(self) -> None:
            if self.num_timesteps > 0:
                self.points.append((self.num_timesteps, time.perf_counter()))

        def _on_training_end(self) -> None:
            self.points.append((self.num_timesteps, time.perf_counter()))

        def _on_step(self) -> bool:
            return True

    s = settings
    if atari:
        import ale_py
        import gymnasium

        gymnasium.register_envs(ale_py)
        env = VecFrameStack(make_atari_env("BreakoutNoFrameskip-v4", n_envs=s["num_envs"], seed=SEED), n_stack=4)
        policy, policy_kwargs = "CnnPolicy", {}
    else:
        env = make_vec_env("CartPole-v1", n_envs=s["num_envs"], seed=SEED)
        policy, policy_kwargs = "MlpPolicy", {"net_arch": {"pi": [64, 64], "vf": [64, 64]},
                                              "activation_fn": torch.nn.Tanh}
    lr, batch = s["learning_rate"], s["num_envs"] * s["num_steps"]
    model = PPO(policy, env, n_steps=s["num_steps"], batch_size=batch // s["num_minibatches"],
                n_epochs=s["update_epochs"], learning_rate=lambda progress_remaining: progress_remaining * lr,
                clip_range=s["clip_coef"], ent_coef=s["ent_coef"], vf_coef=s["vf_coef"], gamma=s["gamma"],
                gae_lambda=s["gae_lambda"], max_grad_norm=s["max_grad_norm"], policy_kwargs=policy_kwargs,
                seed=SEED, verbose=0)
    clock = Clock()
    model.learn(total_timesteps=steps // batch * batch, callback=clock)  # SB3 would finish a partial iteration
    env.close()
    return clock.points


def cartpole_variants(steps: int) -> list[tuple[str, int, list[str], bool]]:
    """rlrun CartPole runs: (label, num_envs, overrides, whether it is the tuned config) for 4 and 8 envs,
    each with env.vectorized false and true when rlrun's config has that key."""
    tuned = compose_config(["algo=ppo", "env=cartpole"])
    vectorized = (False, True) if "vectorized" in tuned.env else (None,)
    variants = []
    for num_envs in CARTPOLE_NUM_ENVS:
        for vec in vectorized:
            label = f"{num_envs} envs" + ("" if vec is None else f", env.vectorized={str(vec).lower()}")
            overrides = rlrun_overrides("cartpole", {**CARTPOLE, "num_envs": num_envs}, steps)
            overrides += [] if vec is None else [f"env.vectorized={str(vec).lower()}"]
            is_tuned = num_envs == tuned.algo.num_envs and (vec is None or vec == tuned.env.vectorized)
            variants.append((label, num_envs, overrides, is_tuned))
    return variants


# ---- report ----------------------------------------------------------------------------

def describe(settings: dict[str, Any]) -> str:
    """The PPO settings in one phrase."""
    s = settings
    return (f"{s['num_envs']} envs x {s['num_steps']} steps, {s['update_epochs']} epochs x {s['num_minibatches']} "
            f"minibatches, lr {s['learning_rate']} annealed, clip {s['clip_coef']}, ent {s['ent_coef']}, "
            f"vf {s['vf_coef']}, gamma {s['gamma']}, lambda {s['gae_lambda']}, max grad norm {s['max_grad_norm']}")


def timed(steps: int, num_envs: int, num_steps: int) -> str:
    """The note saying what a steady-state rate covers: the run's full iterations within ``steps``."""
    batch = num_envs * num_steps
    return f"{steps // batch} iterations of {batch:,} agent steps, iterations 1-2 untimed"


def verdict(value: float, target: float, text: str) -> str:
    """The note on a target of the issue: whether ``value`` reaches ``target``."""
    return f"target {text}: {'met' if value >= target else 'NOT met'}"


# ---- main --------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags; sizes left unset take the full or ``--quick`` defaults."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)

    def defaults(key: str) -> str:
        return f"(default {FULL[key]}, quick {QUICK[key]})"

    p.add_argument("--repeats", type=int, help=f"runs per figure, the median is reported {defaults('repeats')}")
    p.add_argument("--atari-steps", type=int, help=f"agent steps of each Breakout run {defaults('atari_steps')}")
    p.add_argument("--cartpole-steps", type=int, help=f"agent steps of each CartPole run {defaults('cartpole_steps')}")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke check")
    p.add_argument("--skip-sb3", action="store_true", help="do not run Stable-Baselines3")
    p.add_argument("--record", action="store_true", help=f"write the results into {DOCS.relative_to(DOCS.parents[1])}")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for key in ("repeats", "atari_steps", "cartpole_steps"):
        if getattr(args, key) is None:
            setattr(args, key, sizes[key])
    return args


def main(argv: list[str] | None = None) -> None:
    """Run every measurement one after the other, print the Markdown table, optionally record it."""
    args = parse_args(argv)
    run_sb3 = not args.skip_sb3 and importlib.util.find_spec("stable_baselines3") is not None
    if not args.skip_sb3 and not run_sb3:
        say("stable-baselines3 is not installed: skipping SB3 (pip install stable-baselines3)")

    # name -> (function, arguments) of each measurement, run in this order in every repeat
    breakout, sb3_breakout, sb3_cartpole = "rlrun PPO Breakout", "SB3 PPO Breakout", "SB3 PPO CartPole"
    jobs: dict[str, tuple] = {breakout: (train_rlrun, rlrun_overrides("breakout", ATARI, args.atari_steps))}
    if run_sb3:
        jobs[sb3_breakout] = (train_sb3, True, ATARI, args.atari_steps)
    variants = cartpole_variants(args.cartpole_steps)
    for label, _, overrides, _ in variants:
        jobs[f"rlrun PPO CartPole, {label}"] = (train_rlrun, overrides)
    if run_sb3:
        jobs[sb3_cartpole] = (train_sb3, False, CARTPOLE, args.cartpole_steps)

    rates: dict[str, list[float]] = {name: [] for name in jobs}
    breakout_rss: list[int] = []
    for i in range(args.repeats):
        for name, (fn, *fn_args) in jobs.items():
            points, rss = in_subprocess(fn, *fn_args)
            rates[name].append(steady_rate(points, WARMUP_POINTS))
            if name == breakout:
                breakout_rss.append(rss)
            say(f"{name} run {i + 1}/{args.repeats}: {rates[name][-1]:,.0f} agent steps/s")
    rate = {name: statistics.median(values) for name, values in rates.items()}

    atari_note = timed(args.atari_steps, ATARI["num_envs"], ATARI["num_steps"])
    rows = [(f"{breakout}, {ATARI['num_envs']} envs, steady state", f"{rate[breakout]:,.0f} steps/s",
             f"{atari_note}; the minibatch loss is torch.compile'd (algo.compile=auto), in iteration 1")]
    if run_sb3:
        ratio = rate[breakout] / rate[sb3_breakout]
        rows += [(f"{sb3_breakout}, {ATARI['num_envs']} envs, steady state", f"{rate[sb3_breakout]:,.0f} steps/s",
                  atari_note),
                 ("rlrun / SB3, Breakout", f"{ratio:.2f}x",
                  f"same invocation; {verdict(ratio, TARGET_RATIO, f'>= {TARGET_RATIO}x')}")]
    tuned_name = None
    for label, num_envs, _, is_tuned in variants:
        name = f"rlrun PPO CartPole, {label}"
        note = timed(args.cartpole_steps, num_envs, CARTPOLE["num_steps"])
        if is_tuned:
            tuned_name = name
            note += f"; the tuned config; {verdict(rate[name], TARGET_CARTPOLE, f'>= {TARGET_CARTPOLE:,} steps/s')}"
        rows.append((f"{name}, steady state", f"{rate[name]:,.0f} steps/s", note))
    if run_sb3:
        rows.append((f"{sb3_cartpole}, {CARTPOLE['num_envs']} envs, steady state", f"{rate[sb3_cartpole]:,.0f} steps/s",
                     timed(args.cartpole_steps, CARTPOLE["num_envs"], CARTPOLE["num_steps"])))
        if tuned_name:
            rows.append(("rlrun (tuned) / SB3, CartPole", f"{rate[tuned_name] / rate[sb3_cartpole]:.2f}x",
                         "same invocation"))
    rows.append(("Peak RSS, rlrun PPO Breakout training process", f"{statistics.median(breakout_rss) / GB:.2f} GB",
                 "figure 1a"))

    settings = (f"Settings: Breakout (CleanRL ppo_atari, rlrun algo=ppo env=breakout): {describe(ATARI)}, Nature CNN; "
                f"1 agent step = 4 frames. CartPole-v1 (CleanRL ppo.py, rlrun algo=ppo env=cartpole): "
                f"{describe(CARTPOLE)}, MLPs 64x64 tanh. SB3 PPO with the same hyperparameters, DummyVecEnv.")
    publish(SECTION, "scripts/bench_ppo.py", argv, settings, rows, args.repeats, args.record)


if __name__ == "__main__":
    main()
