"""Helpers shared by the benchmark scripts (``bench_dqn.py``, ``bench_ppo.py``).

Only light imports at module level: the measurement processes are started with
"spawn" and re-import the scripts and this module, so torch and the like are
imported where used.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import multiprocessing
import os
import platform
import re
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

GB = 1e9
THREAD_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")  # recorded with the command
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


# ---- measuring -----------------------------------------------------------------------

def seconds_per_call(fn: Callable[[], Any], calls: int, warmup: int = 0) -> float:
    """Mean wall-clock seconds of ``fn()`` over ``calls`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def steady_rate(points: list[tuple[int, float]], warmup: int) -> float:
    """Agent steps/s between the first and last (step, seconds) clock points, skipping ``warmup`` points.

    At least two points are always kept, so short (``--quick``) runs skip fewer.
    """
    if len(points) < 2:
        raise RuntimeError(f"only {len(points)} clock points: the timed run is too short")
    points = points[min(warmup, len(points) - 2):]
    (step0, t0), (step1, t1) = points[0], points[-1]
    return (step1 - step0) / (t1 - t0)


def peak_rss() -> int:
    """Peak resident set size of this process in bytes.

    Read from ``VmHWM`` (the peak of this address space only), because
    ``getrusage`` of a forked child can also count its parent's pages.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _call_and_measure(fn: Callable[..., Any], *args: Any) -> tuple[Any, int]:
    return fn(*args), peak_rss()


def in_subprocess(fn: Callable[..., Any], *args: Any) -> tuple[Any, int]:
    """Run ``fn(*args)`` in a fresh Python process; returns its result and the process's peak RSS in bytes."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_call_and_measure, fn, *args).result()


def compose_config(overrides: list[str]):
    """rlrun's composed Hydra config with ``overrides``, as the ``rlrun`` command builds it."""
    import hydra

    with hydra.initialize_config_module(version_base="1.3", config_module="rlrun.configs"):
        return hydra.compose("config", overrides=overrides)


def say(message: str) -> None:
    """Print a progress line at once."""
    print(f"[bench] {message}", flush=True)


# ---- report ----------------------------------------------------------------------------

def machine_info() -> str:
    """One line naming the CPU, cores, RAM and the versions of torch, ale-py and SB3."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M).group(1)
    ram = "? GB"
    with contextlib.suppress(OSError, AttributeError):
        kb = int(re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M).group(1))
        ram = f"{kb * 1024 / GB:.1f} GB"

    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    import torch

    return (f"{cpu}, {os.cpu_count()} cores, {ram} RAM; torch {version('torch')} ({torch.get_num_threads()} threads), "
            f"ale-py {version('ale-py')}, stable-baselines3 {version('stable-baselines3')}, "
            f"Python {platform.python_version()}")


def markdown_table(rows: list[tuple[str, str, str]], repeats: int) -> str:
    """Rows of (figure, value, note) as a Markdown table."""
    lines = [f"| Figure | Median of {repeats} | Note |", "|---|---:|---|"]
    lines += [f"| {figure} | {value} | {note} |" for figure, value, note in rows]
    return "\n".join(lines)


def command_line(script: str, argv: list[str] | None) -> str:
    """The shell command that ran ``script`` with ``argv`` (default: this process's arguments),
    prefixed by the thread variables that are set, since they change the figures."""
    thread_vars = [f"{v}={os.environ[v]}" for v in THREAD_VARS if v in os.environ]
    return shlex.join([*thread_vars, "python", script, *(sys.argv[1:] if argv is None else argv)])


def record(section: str, command: str, settings: str, table: str, path: Path = DOCS) -> None:
    """Write ``section`` (a "## ..." heading) into ``path`` with the date, machine, ``command``,
    ``settings`` and ``table``, replacing that section if present."""
    body = (f"Date: {datetime.date.today().isoformat()}  \nMachine: {machine_info()}  \n"
            f"Command: `{command}`\n\n{settings}\n\n{table}")
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{section}\n\n{body.strip()}\n\n"
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text.rstrip("\n") + "\n")


def publish(section: str, script: str, argv: list[str] | None, settings: str, rows: list[tuple[str, str, str]],
            repeats: int, record_it: bool) -> None:
    """Print the settings and the table of ``rows``; with ``record_it`` also write them as ``section`` of
    docs/benchmarks.md with the command line that produced them."""
    table = markdown_table(rows, repeats)
    print("\n" + settings + "\n\n" + table)
    if record_it:
        record(section, command_line(script, argv), settings, table)
        say(f"recorded in {DOCS}")
