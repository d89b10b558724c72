"""The progress display of a run: steps done of the total, the recent steps per second, the ETA at that rate
and the latest return."""

from __future__ import annotations

import collections
import sys
import time
from typing import Callable

import numpy as np

BAR_REFRESH_SECONDS = 0.2  # the progress display is redrawn at most this often
RATE_WINDOW_SECONDS = 60.0  # SPS and ETA are measured over about this many recent seconds


class RecentRate:
    """Steps per second over the last ``window`` seconds of (time, step) samples.

    The rate of a run changes: DQN's steps before ``learning_starts`` run many times faster than those
    after, so the average since the start overstates the speed (and understates the ETA) for a long time.
    Before ``window`` seconds have passed the rate is that since the first sample.
    """

    def __init__(self, window: float = RATE_WINDOW_SECONDS):
        self.window = window
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, now: float, step: int) -> None:
        """Record that ``step`` agent steps were done at time ``now`` (seconds)."""
        self._samples.append((now, step))
        # keep one sample at or before the window's start, so the rate spans the whole window
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()

    def rate(self) -> float | None:
        """Agent steps per second over the window, or None before two samples at different times."""
        if len(self._samples) < 2:
            return None
        (t0, s0), (t1, s1) = self._samples[0], self._samples[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else None


class Progress:
    """Steps done of the total, recent SPS, ETA at that rate and the latest return.

    ``mode``: ``bar`` (tqdm), ``lines`` (a plain line every ``interval`` seconds, for
    CI and SLURM logs), ``none``, or ``auto`` (a bar when stderr is a terminal). ``clock``: seconds,
    ``time.monotonic`` by default (tests pass a synthetic one).
    """

    def __init__(self, mode: str, interval: float, total: int, start_step: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode, self.interval, self.total, self.clock = mode, interval, total, clock
        self._bar = None
        self._rate = RecentRate()
        self._last_line = self._last_draw = clock()
        self._rate.add(self._last_draw, start_step)
        if mode == "bar":
            from tqdm import tqdm

            # tqdm's own rate is the average since it started (we set n directly); ours is in the postfix
            self._bar = tqdm(total=total, initial=start_step, unit="step", dynamic_ncols=True,
                             bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")

    def set_total(self, total: int) -> None:
        """Change the run's length (the bar follows)."""
        self.total = int(total)
        if self._bar is not None:
            self._bar.total = self.total

    def sps(self) -> int:
        """Recent agent steps per second (0 before a rate is known)."""
        rate = self._rate.rate()
        return int(rate) if rate else 0

    def eta(self, step: int) -> float:
        """Seconds until ``total`` at the recent rate (infinity before a rate is known)."""
        rate = self._rate.rate()
        return (self.total - step) / rate if rate else float("inf")

    def status(self, step: int, last_return: float | None) -> str:
        """'ETA=4m10s SPS=812 return=12.0': what the bar's postfix and the plain lines show."""
        ret = "-" if last_return is None else f"{last_return:.1f}"
        return f"ETA={format_seconds(self.eta(step))} SPS={self.sps()} return={ret}"

    def update(self, step: int, last_return: float | None) -> None:
        """Redraw the bar or print a plain line when one is due (``step`` of ``total``), sampling the rate then."""
        if self.mode == "none":
            return
        now = self.clock()
        if now - self._last_draw < BAR_REFRESH_SECONDS:
            return
        self._rate.add(now, step)  # a sample per redraw (at most 5 a second), not per step
        self._last_draw = now
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix_str(self.status(step, last_return), refresh=False)
            self._bar.refresh()
        elif self.mode == "lines" and now - self._last_line >= self.interval:
            self._last_line = now
            print(f"[rlrun] step {step}/{self.total} ({100 * step / self.total:.1f}%) "
                  f"{self.status(step, last_return)}", flush=True)

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
