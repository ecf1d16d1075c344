"""The live progress bars of `run --wait`: rows done of total, rows/s and ETA per stage."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, TextIO

BAR_WIDTH = 30


@dataclass
class Rate:
    """Rows per second over the recent past, from successive (time, done) samples."""

    samples: list[tuple[float, int]] = field(default_factory=list)
    window_s: float = 15.0

    def add(self, now: float, done: int) -> float:
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window_s:
            self.samples.pop(0)
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0


def eta_text(remaining: int, rate: float) -> str:
    if remaining <= 0:
        return "done"
    if rate <= 0:
        return "--:--"
    seconds = int(remaining / rate)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def bar(done: int, total: int) -> str:
    filled = BAR_WIDTH if total <= 0 else min(BAR_WIDTH, BAR_WIDTH * done // max(total, 1))
    return "#" * filled + "-" * (BAR_WIDTH - filled)


def line(stage: str, status: str, done: int, total: int, rate: float) -> str:
    pct = 100.0 if total <= 0 else min(100.0, 100.0 * done / total)
    return (
        f"{stage:<28.28} [{bar(done, total)}] {pct:5.1f}% {done:>12,}/{total:<12,} "
        f"{rate:>9,.0f} rows/s  ETA {eta_text(total - done, rate):>8}  {status}"
    )


class ProgressView:
    """Redraws in place on a terminal; prints a line per stage now and then otherwise."""

    def __init__(self, out: TextIO, interval_s: float = 10.0) -> None:
        self.out = out
        self.tty = out.isatty()
        self.rates: dict[str, Rate] = {}
        self.drawn = 0
        self.interval_s = interval_s
        self.last_print = 0.0

    def show(self, rows: list[dict[str, Any]], final: bool = False) -> None:
        now = time.monotonic()
        text = [
            line(
                r["stage"],
                r["status"],
                r["done"],
                r["total"],
                self.rates.setdefault(r["stage"], Rate()).add(now, r["done"]),
            )
            for r in rows
        ]
        if self.tty:
            if self.drawn:
                self.out.write(f"\x1b[{self.drawn}F")
            self.out.write("".join(f"\x1b[2K{t}\n" for t in text))
            self.drawn = len(text)
        elif final or now - self.last_print >= self.interval_s:
            self.out.write("".join(f"{t}\n" for t in text))
            self.last_print = now
        self.out.flush()
