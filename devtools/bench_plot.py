"""The benchmark's figure: rows per second over time per table, for the plain SQL and for the
tool, and a histogram of both's batch durations; one row of plots per size.

A batch's rows are spread evenly over its own start to end, then summed per time bin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server or in CI
import matplotlib.pyplot as plt

from devtools.bench_phases import Batch

TABLE_COLOURS = {
    "users": "tab:blue", "clinics": "tab:orange", "dashboards": "tab:green", "providers": "tab:red",
}


def rates(batches: list[Batch], table: str, bin_s: float, end: float) -> tuple[list, list]:
    """(bin starts, rows/s in each bin) of one table."""
    bins = [0.0] * (int(end / bin_s) + 1)
    for name, start, stop, rows in batches:
        if name != table or stop <= start:
            continue
        per_s = rows / (stop - start)
        i = int(start / bin_s)
        while i < len(bins) and i * bin_s < stop:
            overlap = min(stop, (i + 1) * bin_s) - max(start, i * bin_s)
            bins[i] += per_s * max(overlap, 0.0) / bin_s
            i += 1
    return [i * bin_s for i in range(len(bins))], bins


def _timeline(ax: Any, title: str, batches: list[Batch], end: float) -> None:
    bin_s = max(end / 120, 0.25)
    for table in TABLE_COLOURS:
        if any(b[0] == table for b in batches):
            xs, ys = rates(batches, table, bin_s, end)
            ax.step(xs, ys, where="post", label=table, color=TABLE_COLOURS[table])
    ax.set_title(title, fontsize=9)
    ax.set_xlim(0, end)
    ax.set_xlabel("seconds from start")
    ax.set_ylabel("rows/s")
    ax.legend(fontsize=7)


def _histogram(ax: Any, plain: list[Batch], tool: list[Batch], title: str) -> None:
    durations = {
        "plain SQL": [(e - s) * 1000 for _, s, e, _ in plain],
        "uuid-migrate": [(e - s) * 1000 for _, s, e, _ in tool],
    }
    top = max(max(d, default=1) for d in durations.values())
    edges = [top * i / 40 for i in range(41)]
    for label, values in durations.items():
        ax.hist(values, bins=edges, alpha=0.6, label=f"{label} ({len(values)})")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("batch duration, ms")
    ax.set_ylabel("batches")
    ax.legend(fontsize=7)


def draw(path: Path, sizes: list[dict[str, Any]]) -> None:
    """`sizes`: per size a label, and the plain and tool Measured (seconds, batches)."""
    fig, axes = plt.subplots(len(sizes), 3, figsize=(15, 3.6 * len(sizes)), squeeze=False)
    for row, size in zip(axes, sizes, strict=True):
        plain, tool = size["plain"], size["tool"]
        end = max(plain.seconds, tool.seconds)
        _timeline(row[0], f"plain SQL, {size['label']} ({plain.seconds:.1f} s)", plain.batches, end)
        _timeline(row[1], f"uuid-migrate run, {size['label']} ({tool.seconds:.1f} s)",
                  tool.batches, end)
        _histogram(row[2], plain.batches, tool.batches, f"batch durations, {size['label']}")
        top = max(row[0].get_ylim()[1], row[1].get_ylim()[1])  # one scale, to compare
        row[0].set_ylim(0, top)
        row[1].set_ylim(0, top)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
