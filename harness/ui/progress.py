"""Where a sequence of runs stands (a sweep, a study): one line per run with a bar drawn by tqdm and
the time left. One line per run rather than a live bar: training draws its own bar meanwhile, and
the lines stay readable in a log file or CI output."""
from __future__ import annotations

import time

from tqdm import tqdm

BAR_WIDTH = 20


class RunProgress:
    """n of total runs; the time left is the mean duration of the runs that did work times the runs
    still to come (a reused record costs nothing, so a resumed sequence does not look fast)."""

    def __init__(self, total: int | None):
        self.total = total
        self.n = 0
        self.worked: list[float] = []
        self._started = time.perf_counter()

    def start(self) -> str:
        """Count the next run; the line's prefix: '[###.....] [3/20], ~12:34 left'."""
        self.n += 1
        self._started = time.perf_counter()
        total = self.total if self.total and self.total >= self.n else None
        bar = tqdm.format_meter(self.n - 1, total, 0, ncols=BAR_WIDTH + 3, bar_format="[{bar}] ", ascii=".#") \
            if total else ""
        left = self.seconds_left()
        return f"{bar}[{self.n}/{total or '?'}]" + (f", ~{tqdm.format_interval(left)} left" if left is not None else "")

    def finish(self, reused: bool = False) -> float:
        """The run's seconds; a run that did work counts towards the time left."""
        seconds = time.perf_counter() - self._started
        if not reused:
            self.worked.append(seconds)
        return seconds

    def grow(self, runs: int = 1) -> None:
        """More runs than planned (a study's grid extension)."""
        if self.total is not None:
            self.total += runs

    def seconds_left(self) -> float | None:
        if not self.worked or not self.total or self.total < self.n:
            return None
        return (self.total - self.n + 1) * sum(self.worked) / len(self.worked)
