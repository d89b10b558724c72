"""rlrun-plot: learning curves, final-score tables and the CSV behind every plot.

    rlrun-plot multirun/2026-11-21/10-00-00                     # every run of a sweep
    rlrun-plot outputs/run_a outputs/run_b --out figures        # any run or sweep directories together
    rlrun-plot multirun/atari_sweep --x frames --last 30        # x in emulator frames, final score of 30 episodes
    python -m rlrun.cli.plot DIR ...                                # the same without the console script

Each DIR is searched recursively for run directories: directories holding a
``config.yaml`` next to TensorBoard event files (``events.out.tfevents.*``). The
curves are read back from the event files (:func:`rlrun.core.events.read_scalars`), so
runs made by any version of rlrun work.

**Groups.** Runs are grouped by ``(algo.name, env.name)`` from their config.yaml,
and further by every other config key whose value differs between runs of the
same (algo, env) pair (a swept hyperparameter, ``reward.name``, ...). Keys
that do not change the experiment are ignored (:data:`NOT_EXPERIMENT_KEYS`: the
seed, and what ``rlrun resume=`` may change: ``total_timesteps``, ``device``,
``torch_threads``, ``logging.*``, ``checkpoint.*``, ``eval.*``), and so are keys
missing from some runs of the pair (configs of older rlrun versions). A group's
label is the algorithm's name followed by its ``key=value`` pairs, e.g.
``ppo algo.learning_rate=0.001``.

**Curves.** The x axis (``--x``) is agent steps (``global_step``, summed over
vector envs), emulator frames (agent steps x ``preprocessing.frame_skip``: 4 on
Atari, 1 where the key does not exist), or wall-clock seconds since the run's
first logged scalar (a resumed run's pause counts). For each env, the x range
from 0 to the last episode of any of its runs is cut into ``--window`` equal
bins; a run's curve is the mean return of its episodes ending in each bin
(bins are closed on the right), linearly interpolated over bins in which none
ended, and undefined before its first and after its last episode. A group's
curve is, per bin, the mean over the runs defined there, with a 95% percentile
confidence interval from the stratified bootstrap over those runs
(:func:`rlrun.core.stats.stratified_bootstrap_ci`; one env is one stratum, so this
is the bootstrap over seeds; whole curves are resampled and each bin's interval
taken on its own, so the band is pointwise). ``n_runs`` in the CSV says how many runs each point averages.

**Final scores.** A run's final score is the mean return of its last ``--last``
episodes (all of them if it has fewer). Per group: the number of runs, the mean
and sample standard deviation (ddof 1; NaN for a single run) of the final scores, and the interquartile
mean (IQM: the mean of the middle 50% of runs, ``scipy.stats.trim_mean`` with
25% cut at each end, floor-rounded, so 2 or 3 runs give their mean) with its 95%
stratified-bootstrap confidence interval
(:func:`rlrun.core.stats.iqm`; Agarwal et al. 2021, "Deep Reinforcement
Learning at the Edge of the Statistical Precipice", NeurIPS).

Files written into ``--out`` (default ``<first DIR>/plots``)::

    learning_curves_<env>.png   one curve and band per group
    learning_curves_<env>.csv   group, algo, env, x, mean, ci_low, ci_high, n_runs
    final_scores.csv            group, algo, env, n_runs, mean, std, iqm, iqm_ci_low, iqm_ci_high
    final_scores.md             the same as a Markdown table
    per_run.csv                 run_dir, group, algo, env, seed, steps, final_score, episodes

Bad input (a DIR that does not exist or holds no run directory, a ``--tag`` that no
run logged, a count below 1) ends with one line on stderr and exit status 2,
before anything is written.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from omegaconf import OmegaConf

from rlrun.core.config import RESUMABLE_KEYS, flatten
from rlrun.core import stats
from rlrun.core.events import EVENT_GLOB, read_scalars

EXIT_BAD_INPUT = 2                   # exit status for bad input, as for rlrun and rlrun-eval
DEFAULT_TAG = "charts/episodic_return"  # the raw episodic return every rlrun algorithm logs
DEFAULT_BINS = 50                    # equal-width x bins per curve (--window)
DEFAULT_LAST = 100                   # episodes averaged into a run's final score, as logging.metric_episodes
DEFAULT_REPS = 50_000                # bootstrap resamples (rliable's default, Agarwal et al.'s choice)
CONFIDENCE = 0.95                    # coverage of every confidence interval
BOOTSTRAP_SEED = 0                   # seed of the bootstrap, so the same runs give the same intervals
OUT_SUBDIR = "plots"                 # default output directory, inside the first DIR
# Config keys that do not change the experiment: the seed, a resumed run's origin, the sweep's name, cuDNN
# determinism, and what `rlrun resume=` may change.
NOT_EXPERIMENT_KEYS = ("seed", "resume", "sweep_name", "torch_deterministic", *RESUMABLE_KEYS)
X_AXES = {  # --x choice -> axis label naming the unit
    "steps": "agent steps (global_step, summed over vector envs)",
    "frames": "emulator frames (agent steps x preprocessing.frame_skip)",
    "wall": "wall-clock time since the run's first scalar (seconds)",
}
FIGURE_SIZE = (7.0, 4.5)             # inches
FIGURE_DPI = 150                     # pixels per inch of the PNGs
BAND_ALPHA = 0.25                    # opacity of the confidence bands
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")  # characters replaced by "_" in file names (env ids like ALE/Pong-v5)


class InputError(ValueError):
    """A directory or option rlrun-plot cannot use; the message names it and what is expected."""


@dataclass
class RunCurve:
    """One run's episodes, read from its directory.

    Attributes:
        dir: the run directory.
        algo, env: ``algo.name`` and ``env.name`` from its config.yaml.
        seed: its ``seed``.
        config: its config flattened to dotted keys -> values.
        steps: (E,) int64, ``global_step`` at which each episode ended (agent steps).
        wall: (E,) float64, seconds from the run's first scalar to each episode's end.
        returns: (E,) float64, the episodes' values of the plotted tag.
        frame_skip: emulator frames per agent step (``preprocessing.frame_skip``, 1 without it).
        steps_done: the largest step of any scalar the run logged.
        group: the group's label, set by :func:`group_runs`.
    """

    dir: Path
    algo: str
    env: str
    seed: int
    config: dict[str, Any]
    steps: np.ndarray
    wall: np.ndarray
    returns: np.ndarray
    frame_skip: int
    steps_done: int
    group: str = ""

    def x(self, axis: str) -> np.ndarray:
        """(E,) float64 x value of each episode's end in the unit of ``axis`` (a key of :data:`X_AXES`)."""
        if axis == "wall":
            return self.wall
        return self.steps.astype(np.float64) * (self.frame_skip if axis == "frames" else 1)

    def final_score(self, last: int) -> float:
        """Mean return of the last ``last`` episodes (all of them if there are fewer)."""
        return float(np.mean(self.returns[-last:]))


# ---- finding and reading runs ---------------------------------------------------------------
def find_run_dirs(dirs: Sequence[str | Path]) -> list[Path]:
    """Run directories (a config.yaml next to TensorBoard event files) in or under ``dirs``, sorted.

    Raises:
        InputError: if a directory does not exist, or holds no run directory.
    """
    found: set[Path] = set()
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise InputError(f"{d} is not a directory: expected run or sweep directories")
        runs = {c.parent.resolve() for c in [d / "config.yaml", *d.rglob("config.yaml")]
                if c.is_file() and any(c.parent.glob(EVENT_GLOB))}
        if not runs:
            raise InputError(f"{d} holds no run directory: expected a config.yaml next to TensorBoard event "
                             f"files ({EVENT_GLOB}) in it or below it")
        found |= runs
    return sorted(found)


def read_run(run_dir: Path, tag: str) -> RunCurve | None:
    """The episodes of ``run_dir``'s scalar ``tag``, or None if the run never logged it.

    Raises:
        InputError: if its config.yaml cannot be read or lacks ``algo.name``, ``env.name`` or ``seed``.
    """
    try:
        config = flatten(OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=False))
    except Exception as exc:
        raise InputError(f"cannot read {run_dir / 'config.yaml'}: {exc.__class__.__name__}: "
                         f"{(str(exc).strip().splitlines() or [''])[0]}") from None
    missing = [k for k in ("algo.name", "env.name", "seed") if k not in config]
    if missing:
        raise InputError(f"{run_dir / 'config.yaml'} has no {', '.join(missing)}: expected an rlrun run's config")
    scalars = read_scalars(run_dir)
    if tag not in scalars:
        return None
    start = min(e[2] for events in scalars.values() for e in events)
    episodes = np.array(scalars[tag], dtype=np.float64).reshape(-1, 3)  # (E, 3): step, value, wall time
    return RunCurve(dir=run_dir, algo=str(config["algo.name"]), env=str(config["env.name"]), seed=int(config["seed"]),
                    config=config, steps=episodes[:, 0].astype(np.int64), wall=episodes[:, 2] - start,
                    returns=episodes[:, 1], frame_skip=int(config.get("preprocessing.frame_skip") or 1),
                    steps_done=int(max(e[0] for events in scalars.values() for e in events)))


def load_runs(dirs: Sequence[str | Path], tag: str = DEFAULT_TAG) -> list[RunCurve]:
    """Every run under ``dirs`` that logged ``tag``, grouped (see :func:`group_runs`).

    Runs without the tag (e.g. ``algo=reward_model``, which plays no episodes) are left out
    with a note on stderr.

    Raises:
        InputError: as :func:`find_run_dirs`, or if no run logged ``tag`` (the message lists the
            tags the runs have).
    """
    run_dirs = find_run_dirs(dirs)
    runs, without = [], []
    for run_dir in run_dirs:
        run = read_run(run_dir, tag)
        if run is None:
            without.append(run_dir)
        else:
            runs.append(run)
    if not runs:
        tags = sorted({t for d in run_dirs for t in read_scalars(d)})
        raise InputError(f"--tag {tag!r}: no run logged it; the runs have: {', '.join(tags) or 'no scalars'}")
    if without:
        print(f"rlrun-plot: leaving out {len(without)} run(s) without {tag}: "
              + ", ".join(str(d) for d in without), file=sys.stderr, flush=True)
    return group_runs(runs)


def experiment_key(key: str) -> bool:
    """Whether a dotted config key defines the experiment (is not in :data:`NOT_EXPERIMENT_KEYS`)."""
    return not any(key == k or key.startswith(k + ".") for k in NOT_EXPERIMENT_KEYS)


def group_runs(runs: list[RunCurve]) -> list[RunCurve]:
    """Set each run's ``group`` label and return the runs sorted by (env, group, seed).

    Runs of the same (algo, env) are split by the experiment keys (:func:`experiment_key`)
    present in all of them whose values differ; the label is ``algo`` followed by
    ``key=value`` for each such key, in key order.
    """
    pairs: dict[tuple[str, str], list[RunCurve]] = {}
    for run in runs:
        pairs.setdefault((run.algo, run.env), []).append(run)
    for (algo, _), members in pairs.items():
        shared = set.intersection(*(set(r.config) for r in members))
        swept = sorted(k for k in shared if experiment_key(k) and len({repr(r.config[k]) for r in members}) > 1)
        for run in members:
            run.group = " ".join([algo, *(f"{k}={run.config[k]}" for k in swept)])
    return sorted(runs, key=lambda r: (r.env, r.group, r.seed, str(r.dir)))


# ---- statistics -------------------------------------------------------------------------
def binned_curve(x: np.ndarray, returns: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """One run's curve on shared bins: the mean of the returns of episodes ending in each bin.

    Args:
        x: (E,) float64, x of each episode's end, in [edges[0], edges[-1]].
        returns: (E,) float64, the episodes' returns.
        edges: (B + 1,) float64, increasing bin edges; bin i is (edges[i], edges[i+1]] (bin 0 includes edges[0]).

    Returns:
        (B,) float64: bins in which episodes ended hold their mean return, bins between two such bins
        the linear interpolation at the bin centres, bins before the first or after the last NaN.
    """
    bins = len(edges) - 1
    index = np.clip(np.searchsorted(edges, x, side="left") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    sums = np.bincount(index, weights=returns, minlength=bins)
    filled = np.flatnonzero(counts)
    curve = np.full(bins, np.nan)
    if filled.size:
        centres = (edges[:-1] + edges[1:]) / 2
        inside = np.arange(filled[0], filled[-1] + 1)
        curve[inside] = np.interp(centres[inside], centres[filled], sums[filled] / counts[filled])
    return curve


def mean_curve(curves: np.ndarray, reps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs per bin with its 95% stratified-bootstrap interval, ignoring undefined (NaN) points.

    Args:
        curves: (R, B) float64, one row per run, NaN where a run has no value.
        reps: bootstrap resamples.

    Returns:
        (mean, ci_low, ci_high, n_runs): (B,) float64 arrays (NaN where no run is defined) and
        (B,) int64, the number of runs defined in each bin. Bins are grouped by which runs are
        defined, and each set is bootstrapped once over those runs (:mod:`rlrun.core.stats`).
    """
    bins = curves.shape[1]
    defined = ~np.isnan(curves)
    mean, low, high = (np.full(bins, np.nan) for _ in range(3))
    patterns: dict[bytes, list[int]] = {}
    for b in np.flatnonzero(defined.any(axis=0)):
        patterns.setdefault(defined[:, b].tobytes(), []).append(b)
    for cols in patterns.values():
        rows = defined[:, cols[0]]
        scores = curves[np.ix_(rows, cols)][:, None, :]  # (runs, 1 task, bins)
        mean[cols], low[cols], high[cols] = stats.stratified_bootstrap_ci(scores, stats.mean_statistic, reps,
                                                                           seed=BOOTSTRAP_SEED)
    return mean, low, high, defined.sum(axis=0)


@dataclass
class GroupCurve:
    """One group's learning curve on its env's bins, where at least one of its runs is defined.

    Attributes:
        group, algo: the group's label and algorithm.
        runs: the number of runs in the group.
        x: (K,) float64 bin centres in the unit of the x axis.
        mean, ci_low, ci_high: (K,) float64 mean over runs and its 95% interval.
        n_runs: (K,) int64 runs defined in each bin.
    """

    group: str
    algo: str
    runs: int
    x: np.ndarray
    mean: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    n_runs: np.ndarray


def env_curves(runs: list[RunCurve], axis: str, bins: int, reps: int) -> list[GroupCurve]:
    """The learning curve of each group among ``runs`` (all of one env) on shared bins.

    The range from 0 to the last episode's x of any run is cut into ``bins`` equal bins
    (:func:`binned_curve` per run, :func:`mean_curve` per group). A note goes to stderr for a
    group whose runs ended at different steps.
    """
    edges = np.linspace(0.0, max(float(r.x(axis).max()) for r in runs), bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    curves = []
    for group in dict.fromkeys(r.group for r in runs):
        members = [r for r in runs if r.group == group]
        mean, low, high, n = mean_curve(np.stack([binned_curve(r.x(axis), r.returns, edges) for r in members]), reps)
        keep = n > 0
        curves.append(GroupCurve(group, members[0].algo, len(members), centres[keep], mean[keep], low[keep],
                                 high[keep], n[keep]))
        done = [r.steps_done for r in members]
        if min(done) != max(done):
            print(f"rlrun-plot: note: the runs of {group} on {members[0].env} ended at different steps "
                  f"({min(done)} to {max(done)}); later points average fewer runs (n_runs), and final scores "
                  "compare them as they are", file=sys.stderr, flush=True)
    return curves


def final_score_table(runs: list[RunCurve], last: int, reps: int) -> list[dict[str, Any]]:
    """Per group: n_runs, mean, std (ddof 1; NaN for one run), IQM and its 95% interval of the final scores.

    The IQM and its interval come from :mod:`rlrun.core.stats` (scipy's trimmed mean under its
    stratified bootstrap; Agarwal et al. 2021). Rows are in the order of ``runs``' groups.
    """
    groups: dict[tuple[str, str], list[RunCurve]] = {}
    for run in runs:
        groups.setdefault((run.env, run.group), []).append(run)
    scores = {f"{env}\0{group}": np.array([[r.final_score(last)] for r in members])
              for (env, group), members in groups.items()}  # (runs, 1 task)
    rows = []
    for (env, group), members in groups.items():
        key = f"{env}\0{group}"
        (iqm,), (iqm_low,), (iqm_high,) = stats.stratified_bootstrap_ci(scores[key], stats.iqm_statistic, reps,
                                                                       seed=BOOTSTRAP_SEED)
        s = scores[key][:, 0]
        rows.append({"group": group, "algo": members[0].algo, "env": env, "n_runs": len(members),
                     "mean": float(s.mean()), "std": float(s.std(ddof=1)) if len(s) > 1 else float("nan"),
                     "iqm": float(iqm), "iqm_ci_low": float(iqm_low), "iqm_ci_high": float(iqm_high)})
    return rows


# ---- output -----------------------------------------------------------------------------
def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    """Write ``rows`` under ``header`` to ``path``; floats at repr precision, so they read back exactly."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([[v.item() if isinstance(v, np.generic) else v for v in row] for row in rows])
    return path


def plot_env(path: Path, env: str, curves: list[GroupCurve], axis: str, tag: str) -> Path:
    """Draw one env's group curves, each with its confidence band, into a PNG at ``path``."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

    fig = Figure(figsize=FIGURE_SIZE, layout="constrained")
    ax = fig.add_subplot()
    for c in curves:
        (line,) = ax.plot(c.x, c.mean, label=f"{c.group} ({c.runs} run{'s' if c.runs > 1 else ''})")
        ax.fill_between(c.x, c.ci_low, c.ci_high, color=line.get_color(), alpha=BAND_ALPHA, linewidth=0)
    ax.set_xlabel(X_AXES[axis])
    ax.set_ylabel(f"{tag} (mean over runs)")
    ax.set_title(f"{env}: mean and {CONFIDENCE:.0%} stratified-bootstrap CI over runs")
    ax.grid(alpha=BAND_ALPHA)
    ax.legend()
    fig.savefig(path, dpi=FIGURE_DPI)
    return path


def markdown_table(rows: list[dict[str, Any]], last: int) -> str:
    """The final-score rows of :func:`final_score_table` as a Markdown table with a caption."""
    lines = [f"Final score of a run: mean return of its last {last} episodes. Mean +- sample std over runs; "
             f"IQM with its {CONFIDENCE:.0%} stratified-bootstrap CI (Agarwal et al. 2021).", "",
             "| env | group | runs | mean +- std | IQM [95% CI] |", "| --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        std = "n/a" if np.isnan(r["std"]) else f"{r['std']:.2f}"
        lines.append(f"| {r['env']} | {r['group']} | {r['n_runs']} | {r['mean']:.2f} +- {std} | "
                     f"{r['iqm']:.2f} [{r['iqm_ci_low']:.2f}, {r['iqm_ci_high']:.2f}] |")
    return "\n".join(lines) + "\n"


def plot(dirs: Sequence[str | Path], out: str | Path | None = None, x: str = "steps", tag: str = DEFAULT_TAG,
         window: int = DEFAULT_BINS, last: int = DEFAULT_LAST, reps: int = DEFAULT_REPS) -> list[Path]:
    """Aggregate the runs under ``dirs`` and write curves, tables and CSVs into ``out`` (see the module doc).

    Args:
        dirs: run and/or sweep directories, searched recursively.
        out: output directory, created if needed (default ``<dirs[0]>/plots``).
        x: ``steps``, ``frames`` or ``wall`` (see :data:`X_AXES`).
        tag: the TensorBoard scalar plotted and scored, one value per episode.
        window: number of equal-width x bins per curve (>= 1).
        last: episodes averaged into a run's final score (>= 1).
        reps: bootstrap resamples per interval (>= 1).

    Returns:
        The paths written.

    Raises:
        InputError: on bad input (see :func:`load_runs`; an unknown ``x``; a count below 1),
            before anything is written.
    """
    if x not in X_AXES:
        raise InputError(f"--x {x!r} is not allowed: expected one of {', '.join(X_AXES)}")
    for name, value in (("--window", window), ("--last", last), ("--reps", reps)):
        if value < 1:
            raise InputError(f"{name} {value} is not allowed: expected an integer >= 1")
    if not dirs:
        raise InputError("no directory given: expected run or sweep directories")
    out = Path(out) if out is not None else Path(dirs[0]) / OUT_SUBDIR
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is not allowed: it is a file, expected a directory")
    runs = load_runs(dirs, tag)

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for env in sorted({r.env for r in runs}):
        curves = env_curves([r for r in runs if r.env == env], x, window, reps)
        rows = [[c.group, c.algo, env, *point] for c in curves
                for point in zip(c.x, c.mean, c.ci_low, c.ci_high, c.n_runs)]
        name = SAFE_NAME.sub("_", env)
        written.append(plot_env(out / f"learning_curves_{name}.png", env, curves, x, tag))
        written.append(write_csv(out / f"learning_curves_{name}.csv",
                                 ["group", "algo", "env", "x", "mean", "ci_low", "ci_high", "n_runs"], rows))

    table = final_score_table(runs, last, reps)
    columns = ["group", "algo", "env", "n_runs", "mean", "std", "iqm", "iqm_ci_low", "iqm_ci_high"]
    written.append(write_csv(out / "final_scores.csv", columns, [[r[c] for c in columns] for r in table]))
    (out / "final_scores.md").write_text(markdown_table(table, last))
    written.append(out / "final_scores.md")
    written.append(write_csv(out / "per_run.csv",
                             ["run_dir", "group", "algo", "env", "seed", "steps", "final_score", "episodes"],
                             [[shown_path(r.dir), r.group, r.algo, r.env, r.seed, r.steps_done, r.final_score(last),
                               r.returns.size] for r in runs]))
    return written


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``rlrun-plot DIR [DIR ...] [--out OUT] [--x steps|frames|wall] [--tag TAG]
    [--window N] [--last N] [--reps N]``; exit status 2 with one line on stderr on bad input."""
    parser = argparse.ArgumentParser(
        prog="rlrun-plot", description="Learning curves (mean over seeds, 95% stratified-bootstrap bands), "
        "final-score tables (mean +- std, IQM with 95% CI) and the CSV behind them, from rlrun run "
        "and sweep directories.")
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run or sweep directories, searched recursively")
    parser.add_argument("--out", metavar="OUT", help=f"output directory (default: <first DIR>/{OUT_SUBDIR})")
    parser.add_argument("--x", default="steps", metavar="{" + ",".join(X_AXES) + "}",
                        help="x axis: steps (agent steps, default), frames (steps x preprocessing.frame_skip) "
                        "or wall (seconds)")
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"the per-episode scalar (default {DEFAULT_TAG})")
    parser.add_argument("--window", type=int, default=DEFAULT_BINS, metavar="N",
                        help=f"number of x bins; a run's curve is the mean return of the episodes ending in each "
                        f"(default {DEFAULT_BINS})")
    parser.add_argument("--last", type=int, default=DEFAULT_LAST, metavar="N",
                        help=f"final score = mean return of a run's last N episodes (default {DEFAULT_LAST})")
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS, metavar="N",
                        help=f"bootstrap resamples per interval (default {DEFAULT_REPS})")
    args = parser.parse_args(argv)
    try:
        written = plot(args.dirs, args.out, args.x, args.tag, args.window, args.last, args.reps)
    except InputError as exc:
        print(f"rlrun-plot: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_INPUT)
    print(f"rlrun-plot: wrote {len(written)} files into {written[0].parent}: "
          + ", ".join(p.name for p in written), flush=True)


if __name__ == "__main__":
    main()
