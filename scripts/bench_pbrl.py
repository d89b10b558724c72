"""Learning from preferences against learning from the true reward, and reward models against label counts.

1. Return: PPO on the true reward (``rlrun algo=ppo env=E``) and PPO on a reward learned from at most
   ``--labels`` synthetic comparisons (``rlrun algo=pbrl env=E algo.num_labels=L``), same PPO settings,
   ``--steps`` agent steps, seeds ``--seeds``. Tabulates the true episodic return by windows of agent
   steps (mean over seeds of the episodes ending in each window) and the final score (mean of the last
   100 episodes of each seed), and the ratio pbrl / true (Christiano et al. 2017: 700 labels nearly match
   the true reward on MuJoCo).
2. Labels: a fixed pool of segments from policies of different quality (uniformly random actions and the
   checkpoints of the first true-reward run) is written once; ``rlrun algo=reward_model`` is trained on
   ``--label-counts`` synthetic comparisons of its training segments, three seeds each, and its held-out
   accuracy and Pearson / Spearman correlations with the true segment returns are tabulated (the shape of
   Christiano et al.'s labels-versus-performance figure).

Runs that already finished in ``--out-dir`` are reused (their final checkpoint or reward model exists); a run
there whose saved ``algo`` settings differ from what rlrun composes now stops the script with the keys named.

Usage::

    python scripts/bench_pbrl.py --record                      # HalfCheetah-v5, 1M steps, 3 seeds, 1,400 labels
    python scripts/bench_pbrl.py --steps 20480 --seeds 1 --label-counts 50 --policies-per-pool 1 --out-dir /tmp/b
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# benchlib.py sits next to this script, so it is on sys.path when it runs
from benchlib import compose_config, record, say

ROOT = Path(__file__).resolve().parents[1]
SECTION_RETURN = "## Learning from preferences: PPO on a learned reward against the true reward, {env}"
SECTION_LABELS = "## Learning from preferences: reward-model accuracy against the number of labels, {env}"
LAST_EPISODES = 100  # final score: mean true return of this many last episodes
SEGMENTS_PER_POLICY = 400  # segments of each policy in the label-count pool
POOL_SEED = 12345  # seed of the segment collection (apart from the training seeds)


def rlrun(args: list[str], log: Path) -> None:
    """Run ``rlrun`` with ``args``, output into ``log``; exit on failure."""
    with open(log, "w") as f:
        code = subprocess.call([sys.executable, "-m", "rlrun.cli", *args], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if code != 0:
        sys.exit(f"bench_pbrl: rlrun {' '.join(args)} failed with status {code}; see {log}")


def finished(run_dir: Path, steps: int) -> bool:
    """True if ``run_dir`` holds a run whose newest checkpoint is at ``steps`` or beyond (rounded to rollouts)."""
    from rlrun.core.checkpoint import checkpoint_paths

    paths = checkpoint_paths(run_dir) if run_dir.is_dir() else []
    return bool(paths) and int(paths[-1].stem.split("_")[1]) >= steps - steps % 2048


def changed_settings(run_dir: Path, overrides: list[str]) -> list[str]:
    """The ``algo`` keys whose value in ``run_dir``'s saved config differs from what ``overrides`` compose to
    now (a key missing on either side counts), e.g. ["algo.init_log_std"]."""
    from omegaconf import OmegaConf

    from rlrun.core.config import flatten

    saved = flatten(OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml").algo, resolve=True), "algo")
    now = flatten(OmegaConf.to_container(compose_config(overrides).algo, resolve=True), "algo")
    return sorted(k for k in saved.keys() | now.keys() if saved.get(k, "missing") != now.get(k, "missing"))


def episodes(run_dir: Path) -> list[tuple[int, float]]:
    from rlrun.core.events import read_scalars

    return [(s, v) for s, v, _ in read_scalars(run_dir)["charts/episodic_return"]]


def last_scalar(run_dir: Path, tag: str) -> float:
    from rlrun.core.events import read_scalars

    values = read_scalars(run_dir).get(tag, [])
    return values[-1][1] if values else float("nan")


def window_means(eps: list[tuple[int, float]], window: int, steps: int) -> list[float]:
    return [float(np.mean([r for s, r in eps if w < s <= w + window] or [np.nan])) for w in range(0, steps, window)]


def train_runs(a: argparse.Namespace, out: Path) -> dict[str, list[Path]]:
    runs: dict[str, list[Path]] = {"true": [], "pbrl": []}
    common = [f"env={a.env}", f"total_timesteps={a.steps}", "checkpoint.keep_last=10", "logging.progress=none"]
    for seed in a.seeds:
        for kind, extra in (("true", ["algo=ppo"]), ("pbrl", ["algo=pbrl", f"algo.num_labels={a.labels}"])):
            run_dir = out / f"{kind}_s{seed}"
            if (run_dir / "config.yaml").exists():  # reuse (or resume) only a run of today's settings
                changed = changed_settings(run_dir, [*extra, *common, f"seed={seed}"])
                if changed:
                    sys.exit(f"bench_pbrl: {run_dir} was trained with other settings than rlrun composes now "
                             f"({', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''}); pass another "
                             "--out-dir to train afresh")
            if not finished(run_dir, a.steps):
                say(f"training {kind} seed {seed} into {run_dir}")
                start = time.time()
                rlrun([*extra, *common, f"seed={seed}", "torch_threads=1", f"hydra.run.dir={run_dir}"],
                      out / f"{kind}_s{seed}.log")
                say(f"  {time.time() - start:.0f} s")
            runs[kind].append(run_dir)
    return runs


def return_table(a: argparse.Namespace, runs: dict[str, list[Path]]) -> tuple[str, float]:
    window = a.window
    curves = {kind: np.array([window_means(episodes(d), window, a.steps) for d in dirs]) for kind, dirs in runs.items()}
    finals = {kind: np.array([np.mean([r for _, r in episodes(d)][-LAST_EPISODES:]) for d in dirs])
              for kind, dirs in runs.items()}
    labels_used = [int(last_scalar(d, "charts/labels")) for d in runs["pbrl"]]
    head = "| agent steps | " + " | ".join(f"{w // 1000}-{(w + window) // 1000}k" for w in range(0, a.steps, window))
    lines = [head + " |", "|---" * (1 + len(curves["true"][0])) + "|"]
    for kind, name in (("true", "PPO, true reward"), ("pbrl", f"pbrl, {a.labels} labels")):
        lines.append(f"| {name} | " + " | ".join(f"{v:,.0f}" for v in np.nanmean(curves[kind], axis=0)) + " |")
    # a ratio of returns means something only when the true-reward return is positive (HalfCheetah after learning)
    ratio = float(finals["pbrl"].mean() / finals["true"].mean()) if finals["true"].mean() > 0 else float("nan")
    per_seed = "; ".join(f"seed {s}: true {t:,.0f}, pbrl {p:,.0f} ({lab} labels, final accuracy on fresh labels "
                         f"{last_scalar(d, 'charts/reward_model_accuracy'):.2f}, Pearson on the last rollout "
                         f"{last_scalar(d, 'charts/pearson'):.2f})"
                         for s, t, p, lab, d in zip(a.seeds, finals["true"], finals["pbrl"], labels_used, runs["pbrl"]))
    summary = (f"\n\nFinal score (mean true return of the last {LAST_EPISODES} episodes), mean +- std over seeds "
               f"{', '.join(map(str, a.seeds))} (sample std): PPO on the true reward {finals['true'].mean():,.0f} +- "
               f"{finals['true'].std(ddof=1):,.0f}; pbrl {finals['pbrl'].mean():,.0f} +- {finals['pbrl'].std(ddof=1):,.0f}: "
               f"**{100 * ratio:.0f}%** of the true-reward return (target at least 80%).\n\nPer seed: {per_seed}.")
    return "\n".join(lines) + summary, ratio


def model_overrides(model) -> list[str]:
    """``algo=reward_model`` overrides that give its model the form of pbrl's reward-model config node."""
    return [f"algo.{key}={str(model[key]).lower()}" for key in ("use_actions", "use_next_obs", "shift")]


def segment_pool(a: argparse.Namespace, out: Path, true_run: Path) -> Path:
    """Segments of uniformly random actions and of checkpoints of ``true_run``, written once to ``pool.npz``
    (with next observations where pbrl's reward model reads them)."""
    from rlrun.algos.reward_model import collect_segments
    from rlrun.rlhf.preference_data import Segments, load_segments
    from rlrun.core.checkpoint import checkpoint_paths

    path = out / "pool.npz"
    next_obs = bool(a.reward_model.use_next_obs)
    if path.exists() and (load_segments(path).next_obs is not None or not next_obs):
        return path
    checkpoints = checkpoint_paths(true_run)
    chosen = [checkpoints[i] for i in np.linspace(0, len(checkpoints) - 1, a.policies_per_pool - 1).round().astype(int)]
    parts = []
    for policy in ["random", *map(str, chosen)]:
        say(f"collecting {SEGMENTS_PER_POLICY} segments with policy {Path(policy).name}")
        cfg = compose_config(["algo=reward_model", f"env={a.env}", f"algo.policy={policy}", f"seed={POOL_SEED}",
                              "algo.segment_length=50", f"algo.use_next_obs={str(next_obs).lower()}"])
        parts.append(collect_segments(cfg, SEGMENTS_PER_POLICY, 50))
    m = sum(len(p) for p in parts)
    Segments(np.concatenate([p.obs for p in parts]), np.concatenate([p.actions for p in parts]),
             np.concatenate([p.rewards for p in parts]), np.arange(m, dtype=np.int64), parts[0].env_id,
             np.concatenate([p.next_obs for p in parts]) if next_obs else None).save(path)
    return path


def label_table(a: argparse.Namespace, out: Path, pool: Path) -> str:
    import torch

    rows, form = [], model_overrides(a.reward_model)
    for count in a.label_counts:
        stats = []
        for seed in a.seeds:
            run_dir = out / f"labels_{count}_s{seed}"
            settings = ["algo=reward_model", f"env={a.env}", f"algo.segments_path={pool}", f"algo.num_labels={count}",
                        *form, f"seed={seed}"]
            if not (run_dir / "reward_model.pt").exists() or changed_settings(run_dir, settings):  # none, or stale
                say(f"reward model on {count} labels, seed {seed}")
                rlrun([*settings, "logging.progress=none", "torch_threads=1", f"hydra.run.dir={run_dir}"],
                      out / f"labels_{count}_s{seed}.log")
            metrics = torch.load(run_dir / "reward_model.pt", weights_only=True)["metrics"]
            stats.append([metrics["holdout_accuracy"], metrics["pearson"], metrics["spearman"]])
        s = np.array(stats)
        rows.append(f"| {count:,} | " + " | ".join(f"{m:.3f} +- {d:.3f}" for m, d in zip(s.mean(0), s.std(0, ddof=1))) + " |")
    return "\n".join(["| labels | held-out accuracy | Pearson | Spearman |", "|---|---|---|---|", *rows])


def reward_form(model) -> str:
    """How pbrl's reward-model config node shapes the learned reward, e.g. "r(s, a, s') normalized to std 1
    and mean 0"."""
    inputs = "s" + (", a" if model.use_actions else "") + (", s'" if model.use_next_obs else "")
    return f"r({inputs}) normalized to std 1 and {'mean' if model.shift == 'mean' else 'minimum'} 0"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="halfcheetah", help="env config (default halfcheetah)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=1_000_000, help="agent steps per run")
    parser.add_argument("--labels", type=int, default=1400, help="pbrl's label budget")
    parser.add_argument("--window", type=int, default=100_000, help="agent steps per curve window")
    parser.add_argument("--label-counts", type=int, nargs="+", default=[175, 350, 700, 1400])
    parser.add_argument("--policies-per-pool", type=int, default=5,
                        help="policies whose segments form the label-count pool: random plus N-1 checkpoints")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "outputs" / "pbrl_bench")
    parser.add_argument("--record", action="store_true", help="write the tables into docs/benchmarks.md")
    a = parser.parse_args(argv)
    a.reward_model = compose_config(["algo=pbrl", f"env={a.env}"]).algo.reward_model  # tuned/pbrl_<env>'s
    a.out_dir = a.out_dir.resolve()  # absolute, so that the paths saved in run configs compare equal from any cwd
    a.out_dir.mkdir(parents=True, exist_ok=True)
    runs = train_runs(a, a.out_dir)
    table, ratio = return_table(a, runs)
    pool = segment_pool(a, a.out_dir, runs["true"][0])
    labels = label_table(a, a.out_dir, pool)
    command = "python scripts/bench_pbrl.py " + " ".join(argv if argv is not None else sys.argv[1:])
    settings_return = (f"{a.env}, {a.steps:,} agent steps per run, seeds {', '.join(map(str, a.seeds))}; `rlrun algo=ppo "
                       f"env={a.env}` against `rlrun algo=pbrl env={a.env} algo.num_labels={a.labels}` (the same PPO "
                       f"settings and seeds; a learned reward {reward_form(a.reward_model)}; synthetic labels from the true "
                       "returns of 50-step segments, 25% on the first rollout, ensemble of 3, active selection). Mean "
                       "true episodic return of the episodes ending in each window, averaged over seeds:")
    settings_labels = (f"{a.env}: a pool of {SEGMENTS_PER_POLICY} segments of 50 steps from each of {a.policies_per_pool} "
                       "policies (uniformly random actions and checkpoints of the true-reward PPO run of seed "
                       f"{a.seeds[0]}); `rlrun algo=reward_model algo.segments_path=pool.npz algo.num_labels=N "
                       f"{' '.join(model_overrides(a.reward_model))} seed=S`: 20% of the segments held out, N comparisons of "
                       "training segments labelled by the deterministic synthetic labeler, an ensemble of 3 MLPs "
                       f"{reward_form(a.reward_model)} (as pbrl's), 100 epochs. Mean +- sample std over seeds "
                       f"{', '.join(map(str, a.seeds))}:")
    print(f"\n{settings_return}\n\n{table}\n\n{settings_labels}\n\n{labels}")
    if a.record:
        record(SECTION_RETURN.format(env=a.env), command, settings_return, table)
        record(SECTION_LABELS.format(env=a.env), command, settings_labels, labels)
        say("recorded in docs/benchmarks.md")
    sys.exit(0 if ratio >= 0.8 else 1)


if __name__ == "__main__":
    main()
