"""The progress display of a run: steps done of the total, steps per second, ETA and the latest return."""

from __future__ import annotations

import sys
import time

import numpy as np

BAR_REFRESH_SECONDS = 0.2  # the progress display is redrawn at most this often


class Progress:
    """Steps done of the total, SPS, ETA and the latest return.

    ``mode``: ``bar`` (tqdm), ``lines`` (a plain line every ``interval`` seconds, for
    CI and SLURM logs), ``none``, or ``auto`` (a bar when stderr is a terminal).
    """

    def __init__(self, mode: str, interval: float, total: int):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode, self.interval, self.total = mode, interval, total
        self._bar = None
        self._last_line = self._last_draw = time.time()
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="step", dynamic_ncols=True, smoothing=0.1)

    def set_total(self, total: int) -> None:
        """Change the run's length (the bar follows)."""
        self.total = int(total)
        if self._bar is not None:
            self._bar.total = self.total

    def update(self, step: int, sps: int, last_return: float | None) -> None:
        """Redraw the bar, or print a plain line when one is due (``step`` of ``total`` done)."""
        now = time.time()
        if self.mode == "none" or now - self._last_draw < BAR_REFRESH_SECONDS:
            return
        self._last_draw = now
        ret = "-" if last_return is None else f"{last_return:.1f}"
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix_str(f"SPS={sps} return={ret}", refresh=False)
            self._bar.refresh()
        elif self.mode == "lines" and time.time() - self._last_line >= self.interval:
            self._last_line = time.time()
            eta = (self.total - step) / sps if sps > 0 else float("inf")
            print(f"[rlrun] step {step}/{self.total} ({100 * step / self.total:.1f}%) SPS={sps} "
                  f"ETA={format_seconds(eta)} last_return={ret}", flush=True)

    def close(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()


def format_seconds(seconds: float) -> str:
    """'1h02m03s' style duration; '?' for infinity."""
    if not np.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
