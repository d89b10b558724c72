"""Start-up time of the console entry points: how long ``rlrun-plot --help``, ``rlrun-eval --help`` and
``rlrun --help`` take in a fresh Python process, and which heavy libraries each imports.

Each figure is the median over ``--repeats`` fresh processes of ``python -m <module> --help`` (all of its
imports, then argument parsing; nothing is plotted, evaluated or trained). ``--tree DIR`` measures another
checkout of rlrun instead (e.g. a ``git worktree`` of an older commit), put first on PYTHONPATH; the modules
are found under their names there (``rlrun.plot`` before the layered layout, ``rlrun.cli.plot`` after).

Usage::

    python scripts/bench_startup.py                       # this checkout
    python scripts/bench_startup.py --tree /tmp/old_rlrun # another checkout, for a before/after comparison
    python scripts/bench_startup.py --record              # also write the section of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import publish, say

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {  # command -> its module in the layered layout, and before it
    "rlrun-plot": ("rlrun.cli.plot", "rlrun.plot"),
    "rlrun-eval": ("rlrun.cli.evaluate", "rlrun.evaluate"),
    "rlrun": ("rlrun.cli", "rlrun.cli"),
}
HEAVY = ("torch", "gymnasium", "ale_py", "hydra")  # libraries whose import dominates start-up
PROBE = ("import sys, runpy; sys.argv = ['{command}', '--help']\n"
         "try:\n    runpy.run_module('{module}', run_name='__main__')\nexcept SystemExit:\n    pass\n"
         "print('imported:' + ','.join(m for m in {heavy!r} if m in sys.modules))")


def module_of(command: str, tree: Path) -> str:
    """The module that implements ``command`` in the checkout at ``tree``."""
    layered, before = COMMANDS[command]
    return layered if (tree / "rlrun" / "cli").is_dir() else before


def measure(command: str, tree: Path, repeats: int) -> tuple[float, str]:
    """(median seconds of ``python -m <module> --help`` in a fresh process, the heavy libraries it imported)."""
    module = module_of(command, tree)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = PROBE.format(command=command, module=module, heavy=HEAVY)
    times, imported = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tree, capture_output=True, text=True,
                             timeout=300)
        times.append(time.perf_counter() - start)
        if out.returncode != 0:
            raise RuntimeError(f"{module} failed: {out.stderr.strip().splitlines()[-1:]}")
        imported = out.stdout.strip().splitlines()[-1].removeprefix("imported:")
    return statistics.median(times), imported


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7, help="fresh processes per figure, the median is reported")
    p.add_argument("--tree", type=Path, default=ROOT, help="the rlrun checkout to measure (default: this one)")
    p.add_argument("--record", action="store_true", help="write the results into docs/benchmarks.md")
    args = p.parse_args(argv)
    tree = args.tree.resolve()
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"
    rows = []
    for command in COMMANDS:
        say(f"{command} --help, {args.repeats} fresh processes, tree {tree} ({commit})")
        seconds, imported = measure(command, tree, args.repeats)
        rows.append((f"`{command} --help` ({module_of(command, tree)}), commit {commit}", f"{seconds:.2f} s",
                     f"imports {imported.replace(',', ', ') or 'none of ' + ', '.join(HEAVY)}"))
    settings = (f"Each figure: `python -m <module> --help` in a fresh process (every import, then argument parsing), "
                f"median of {args.repeats}; the note lists which of {', '.join(HEAVY)} the process imported.")
    publish(f"## Start-up of the commands (commit {commit})", "scripts/bench_startup.py", argv, settings, rows,
            args.repeats, args.record)


if __name__ == "__main__":
    main()
