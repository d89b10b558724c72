"""GPU readiness: rlrun's DQN and PPO on ALE Breakout on one CUDA GPU, and the projected wall time of a
10M-step run against CleanRL's published figures.

On a machine where torch sees no CUDA device the script says so and exits 0 (nothing to measure).

Each figure is the median over ``--repeats`` real training runs, each in a fresh Python process, one after
the other. The ALE vector env (ale_py's C++ ``AtariVectorEnv``) gets as many threads as the machine has
cores (``env.num_threads``). The update runs in three ways:

- eager: ``algo.compile=false``;
- compiled: ``algo.compile=true`` (``torch.compile``, mode ``default``);
- compiled + CUDA graphs: ``algo.compile=true algo.compile_mode=reduce-overhead`` (torch.compile replays the
  kernels of the update as CUDA graphs; LeanRL reports 6.8x on PPO Atari with compile and CUDA graphs).

Figures:

1. PPO Breakout, CleanRL ``ppo_atari.py``'s settings (rlrun's ``algo=ppo`` defaults: 8 envs x 128 steps, 4
   epochs of 4 minibatches, Nature CNN), and the same with one env per core (minibatches of the same size).
   Steady-state agent steps/s from the ``losses/approx_kl`` events (one per iteration), skipping iteration 1
   (compiling happens there).
2. DQN Breakout, CleanRL ``dqn_atari.py``'s settings (1 env, batch 32, one update every 4 steps), after a
   short ``learning_starts``: steady-state agent steps/s from the ``losses/td_loss`` events (every 100 steps),
   skipping the first 5.
3. The projected wall time of 10M agent steps at each rate (``10e6 / rate``), next to CleanRL's published
   PPO Breakout times for 10M steps: 264 min with ``ppo_atari.py`` and 42 min with ``ppo_atari_envpool_xla_jax``
   (CleanRL's docs, ppo_atari and ppo_atari_envpool_xla_jax_scan pages). Goal: PPO under 40 minutes.

Usage::

    python scripts/bench_gpu.py              # the full benchmark (about 8 minutes on an H100)
    python scripts/bench_gpu.py --quick      # tiny sizes, a smoke check of every figure
    python scripts/bench_gpu.py --record     # also write the "## GPU" section of docs/benchmarks.md
    python scripts/bench_gpu.py --quick --cpu-dry-run   # check the script's every path on the CPU
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import compose_config, in_subprocess, publish, say, steady_rate  # noqa: E402

SEED = 1
TEN_MILLION = 10_000_000
CLEANRL_PPO_MINUTES = {"CleanRL ppo_atari.py": 264, "CleanRL envpool + JAX": 42}  # 10M steps, Breakout
GOAL_MINUTES = 40
MODES = {"eager": ["algo.compile=false"],
         "compiled": ["algo.compile=true", "algo.compile_mode=default"],
         "compiled + CUDA graphs": ["algo.compile=true", "algo.compile_mode=reduce-overhead"]}


def cuda_status() -> str | None:
    """A one-line description of the GPU, or None when torch sees no CUDA device."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, torch {torch.__version__}"


def train(overrides: list[str], tag: str, device: str = "cuda") -> list[tuple[int, float]]:
    """One rlrun training run on Breakout with ``overrides`` on cuda; (step, wall time) of every ``tag`` event,
    or an error string if the run failed (a mode this torch cannot run is reported, not fatal)."""
    from rlrun.cli.train import run_training
    from rlrun.core.events import read_scalars

    cfg = compose_config(["env=breakout", f"device={device}", f"seed={SEED}", f"env.num_threads={os.cpu_count()}",
                          "logging.progress=none", "checkpoint.interval=0", "checkpoint.save_replay=false",
                          *overrides])
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        run_dir = Path(tmp) / "run"
        with contextlib.redirect_stdout(io.StringIO()):
            run_training(cfg, run_dir)
        return [(step, wall_time) for step, _, wall_time in read_scalars(run_dir)[tag]]


def ppo_overrides(num_envs: int, steps: int) -> list[str]:
    """PPO with ``num_envs`` envs x 128 steps; minibatches of 256 steps as CleanRL's 8 x 128 / 4."""
    return ["algo=ppo", f"algo.num_envs={num_envs}", "algo.num_steps=128",
            f"algo.num_minibatches={num_envs * 128 // 256}", f"total_timesteps={steps}"]


def dqn_overrides(learning_starts: int, steps: int) -> list[str]:
    return ["algo=dqn", f"algo.learning_starts={learning_starts}", f"total_timesteps={learning_starts + steps}",
            f"replay.buffer_size={learning_starts + steps}", "logging.log_interval=100"]


def measure(label: str, overrides: list[str], tag: str, warmup: int, repeats: int,
            device: str = "cuda") -> tuple[float | None, str]:
    """Median steady-state steps/s of ``repeats`` runs, or (None, the error) when the mode fails."""
    rates = []
    for i in range(repeats):
        say(f"{label}: run {i + 1}/{repeats}")
        try:
            points, _ = in_subprocess(train, overrides, tag, device)
        except Exception as exc:  # e.g. CUDA graphs refused by this torch: reported in the table
            return None, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
        rates.append(steady_rate(points, warmup))
    return statistics.median(rates), ""


def minutes(rate: float | None) -> str:
    return "-" if not rate else f"{TEN_MILLION / rate / 60:.0f} min"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke check of every figure")
    p.add_argument("--repeats", type=int, default=None, help="runs per figure (default 3, 1 with --quick)")
    p.add_argument("--record", action="store_true", help='write the "## GPU" section of docs/benchmarks.md')
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="run every figure on the CPU (a check of the script itself; the figures mean nothing)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gpu = "none: CPU dry run" if args.cpu_dry_run else cuda_status()
    device = "cpu" if args.cpu_dry_run else "cuda"
    if args.cpu_dry_run and args.record:
        print("bench_gpu: --cpu-dry-run does not record", file=sys.stderr)
        return 2
    if gpu is None:
        import torch

        print(f"bench_gpu: no CUDA device here (torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
              "nothing to measure. Run it on a machine with an NVIDIA GPU.")
        return 0
    say(f"GPU: {gpu}; {os.cpu_count()} CPU cores")
    repeats = args.repeats or (1 if args.quick else 3)
    ppo_steps = 8 * 128 * (4 if args.quick else 40)
    dqn_starts, dqn_steps = (1_000, 2_000) if args.quick else (5_000, 20_000)
    cores = os.cpu_count() or 8
    rows = []
    for envs in dict.fromkeys([8, max(8, cores // 8 * 8)]):
        for mode, extra in MODES.items():
            rate, note = measure(f"PPO {envs} envs, {mode}", [*ppo_overrides(envs, ppo_steps), *extra],
                                 "losses/approx_kl", 1, repeats, device)
            verdict = "" if not rate else (" (goal < 40 min: met)" if TEN_MILLION / rate / 60 < GOAL_MINUTES
                                           else " (goal < 40 min: not met)")
            rows.append((f"PPO Breakout, {envs} envs, {mode}: agent steps/s",
                         "-" if rate is None else f"{rate:,.0f}", note or f"10M steps in {minutes(rate)}{verdict}"))
    for mode, extra in MODES.items():
        rate, note = measure(f"DQN, {mode}", [*dqn_overrides(dqn_starts, dqn_steps), *extra], "losses/td_loss", 5,
                             repeats, device)
        rows.append((f"DQN Breakout, 1 env, {mode}: agent steps/s", "-" if rate is None else f"{rate:,.0f}",
                     note or f"10M steps in {minutes(rate)}"))
    for name, value in CLEANRL_PPO_MINUTES.items():
        rows.append((f"{name}, PPO Breakout 10M steps (published)", f"{value} min", "CleanRL's documentation"))
    settings = (f"GPU: {gpu}. ALE vector env threads: {cores} (one per core). PPO: CleanRL ppo_atari.py settings, "
                f"{ppo_steps:,} agent steps per run, iteration 1 untimed. DQN: CleanRL dqn_atari.py settings, "
                f"learning from step {dqn_starts:,}, {dqn_steps:,} steps timed after 500.")
    publish("## GPU", "scripts/bench_gpu.py", argv, settings, rows, repeats, args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
