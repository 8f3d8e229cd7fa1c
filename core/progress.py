"""Progress of long work: a bar on a terminal, a periodic log line otherwise (CI logs, nohup).

    with progress(total=6000, desc="train", unit="step") as bar:
        bar.update(1)
        bar.set_postfix(loss="2.31")

Off with `mmgen -q` and in the test suite (MMGEN_NO_PROGRESS); log lines even on a terminal with
MMGEN_PROGRESS=log (a sweep's parallel variants, each logging to its own file).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

log = logging.getLogger("mmgen.progress")

LOG_EVERY_S = 30.0


def progress(
    *,
    total: int | None,
    desc: str,
    unit: str = "it",
    initial: int = 0,
    enabled: bool = True,
    every_s: float = LOG_EVERY_S,
) -> Any:
    """A tqdm bar when stderr is a terminal, else a LogProgress; a silent one when disabled."""
    enabled = enabled and not os.environ.get("MMGEN_NO_PROGRESS")
    if enabled and sys.stderr.isatty() and os.environ.get("MMGEN_PROGRESS") != "log":
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
    return LogProgress(total=total, desc=desc, unit=unit, initial=initial, enabled=enabled, every_s=every_s)


def duration(seconds: float) -> str:
    """3725 -> '1h 2m', 125 -> '2m 5s', 7.2 -> '7s'."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s" if minutes else f"{secs}s"


class LogProgress:
    """tqdm's interface, writing one INFO line at most every `every_s` seconds and one at the end."""

    def __init__(self, *, total: int | None, desc: str, unit: str, initial: int, enabled: bool, every_s: float) -> None:
        self.total, self.desc, self.unit, self.enabled, self.every_s = total, desc, unit, enabled, every_s
        self.n = self.start_n = initial
        self.start = self.last = time.monotonic()
        self.postfix: dict[str, Any] = {}

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        self.postfix = values

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.enabled and now - self.last >= self.every_s:
            self.last = now
            log.info("%s", self.line(now))

    def close(self) -> None:
        if self.enabled and self.n > self.start_n:
            log.info("%s", self.line(time.monotonic()))
            self.enabled = False

    def line(self, now: float) -> str:
        """'train 500/6000 step (8%), 2.31 step/s, ETA 39m 40s, loss=2.31'."""
        rate = (self.n - self.start_n) / max(now - self.start, 1e-9)
        parts = [
            f"{self.desc} {self.n}/{self.total} {self.unit}" if self.total else f"{self.desc} {self.n} {self.unit}"
        ]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{rate:.2f} {self.unit}/s")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {duration((self.total - self.n) / rate)}")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        return ", ".join(parts)
