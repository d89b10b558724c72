"""The DQN family on classic control (docs/lectures.md): plain DQN, each Rainbow switch alone and Rainbow.

For each env (CartPole-v1, Acrobot-v1), variant and seed, one ``rlrun`` run with the env's tuned classic-control
settings (configs/preset/dqn_classic_control.yaml: CleanRL's dqn.py; rainbow_classic_control for Rainbow) for
``--total-timesteps`` agent steps. Reported per variant: how many seeds reached the env's solved threshold
(gymnasium's reward_threshold: 475 for CartPole-v1, -100 for Acrobot-v1) as the mean of the last
``WINDOW`` episode returns, the median over seeds of the agent steps at which it first did (an unsolved seed
counts as "more than the run"), and the mean return of the last 100 episodes at the end. The curves stay in
each run's TensorBoard files under ``--out-dir``.

Usage::

    python scripts/dqn_family_results.py --out-dir outputs/dqn_family                     # print the table
    python scripts/dqn_family_results.py --out-dir outputs/dqn_family --record            # also docs/lectures.md
    python scripts/dqn_family_results.py --envs cartpole --seeds 1 2 --variants dqn rainbow --total-timesteps 50000
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import compose_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LECTURES = ROOT / "docs" / "lectures.md"
BEGIN, END = "<!-- dqn_family_results:begin -->", "<!-- dqn_family_results:end -->"
THRESHOLDS = {"cartpole": 475.0, "acrobot": -100.0}  # gymnasium's reward_threshold of CartPole-v1, Acrobot-v1
WINDOW = 20  # episodes in the moving mean compared with the threshold
VARIANTS = {
    "dqn": ["algo=dqn"],
    "prioritized": ["algo=dqn", "algo.prioritized=true"],
    "n_step=3": ["algo=dqn", "algo.n_step=3"],
    "dueling": ["algo=dqn", "algo.dueling=true"],
    "noisy": ["algo=dqn", "algo.noisy=true"],
    "distributional": ["algo=dqn", "algo.distributional=true"],
    "rainbow": ["algo=rainbow"],
}


def solved_step(returns: list[tuple[int, float]], threshold: float) -> int | None:
    """The first agent step at which the mean of the last WINDOW episode returns is >= threshold, or None."""
    values = np.array([v for _, v in returns])
    for i in range(WINDOW - 1, len(values)):
        if values[i - WINDOW + 1:i + 1].mean() >= threshold:
            return returns[i][0]
    return None


def run_one(env: str, variant: str, seed: int, total: int, out_dir: Path) -> dict:
    """Train one run (or read it back if its directory is complete) and summarize its episodic returns."""
    from rlrun.cli.train import run_training
    from rlrun.core.checkpoint import latest_checkpoint
    from rlrun.core.events import read_scalars

    run_dir = out_dir / f"{env}_{variant}_s{seed}"
    overrides = [*VARIANTS[variant], f"env={env}", f"seed={seed}", f"total_timesteps={total}", "torch_threads=1",
                 "logging.progress=none", "checkpoint.save_replay=false"]
    done = False
    if run_dir.exists():  # a finished run is read back; an unfinished one is trained again from the start
        try:
            done = latest_checkpoint(run_dir)[1]["global_step"] >= total
        except Exception:
            done = False
        if not done:
            shutil.rmtree(run_dir)
    if not done:
        run_training(compose_config(overrides), run_dir)
    events = read_scalars(run_dir)["charts/episodic_return"]
    returns = [(step, value) for step, value, _ in events]
    # training time: the wall-clock span of the run's episodes (also for a run read back)
    return {"solved": solved_step(returns, THRESHOLDS[env]), "final": float(np.mean([v for _, v in returns[-100:]])),
            "seconds": events[-1][2] - events[0][2]}


def table(results: dict, envs: list[str], variants: list[str], seeds: list[int], total: int) -> str:
    lines = ["| Env | Variant | Seeds solved | Median steps to solve | Mean return, last 100 episodes (mean over seeds) |",
             "|---|---|---:|---:|---:|"]
    for env in envs:
        for variant in variants:
            rs = [results[(env, variant, s)] for s in seeds]
            steps = sorted(r["solved"] if r["solved"] is not None else float("inf") for r in rs)
            median = statistics.median(steps)
            text = f"{median:,.0f}" if np.isfinite(median) else f"> {total:,}"
            lines.append(f"| {env} | {variant} | {sum(r['solved'] is not None for r in rs)}/{len(rs)} | {text} | "
                         f"{np.mean([r['final'] for r in rs]):.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", type=Path, default=Path("outputs/dqn_family"))
    p.add_argument("--envs", nargs="+", default=list(THRESHOLDS), choices=list(THRESHOLDS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--total-timesteps", type=int, default=100_000, help="agent steps per run")
    p.add_argument("--record", action="store_true", help="write the table into docs/lectures.md")
    args = p.parse_args()
    results = {}
    for env in args.envs:
        for seed in args.seeds:
            for variant in args.variants:
                r = run_one(env, variant, seed, args.total_timesteps, args.out_dir)
                results[(env, variant, seed)] = r
                print(f"[dqn_family] {env} {variant} seed {seed}: solved at {r['solved']}, final {r['final']:.1f} "
                      f"({r['seconds']:.0f} s)", flush=True)
    text = table(results, args.envs, args.variants, args.seeds, args.total_timesteps)
    command = "python scripts/dqn_family_results.py " + " ".join(sys.argv[1:])
    minutes = sum(r["seconds"] for r in results.values()) / 60
    text = (f"Command: `{command}` ({minutes:.0f} min of training on this machine, one run at a time, "
            f"torch_threads=1). Seeds {', '.join(map(str, args.seeds))}; {args.total_timesteps:,} agent steps per "
            f"run; solved = the mean of {WINDOW} consecutive episode returns reaches gymnasium's reward_threshold "
            f"({', '.join(f'{e} {t:g}' for e, t in THRESHOLDS.items() if e in args.envs)}).\n\n{text}")
    print(text)
    if args.record:
        doc = LECTURES.read_text()
        block = f"{BEGIN}\n{text}\n{END}"
        if BEGIN in doc:
            doc = doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
        else:
            doc = doc.rstrip() + "\n\n## The DQN family on classic control (DQN lecture; Hessel et al. 2018)\n\n" + block + "\n"
        LECTURES.write_text(doc)


if __name__ == "__main__":
    main()
