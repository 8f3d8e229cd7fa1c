"""A sweep's comparison as pictures: compare.png (each metric per variant, with error bars and every seed's
value) and compare-curve.png (a metric against steps, one line per variant with a ±1 std band).

A variant keeps its colour in both. matplotlib is imported when a picture is drawn, with the Agg backend:
no display is needed and `mmgen --help` does not load it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .compare import Curve, Group

MAX_PANELS = 6
PANELS_PER_ROW = 3
TITLE_WIDTH = 40


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colour(index: int) -> str:
    return f"C{index % 10}"


def wrapped(metric: str, width: int = TITLE_WIDTH) -> str:
    """A long metric name broken at its "/" into lines of about `width` characters."""
    lines = [""]
    for part in metric.split("/"):
        piece = f"{part}/"
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(lines).rstrip("/")


def plot_bars(path: Path, groups: Sequence[Group], metrics: Sequence[str], *, title: str) -> Path:
    """One panel per metric (the first MAX_PANELS): a bar per variant at its mean, ±1 std error bars, and a
    dot per seed so a reader sees how few seeds stand behind each bar."""
    plt = pyplot()
    shown = list(metrics[:MAX_PANELS])
    columns = 2 if len(shown) == 4 else min(PANELS_PER_ROW, len(shown))  # 2 x 2, not 3 + 1
    rows = math.ceil(len(shown) / columns)
    width = max(4.5, 0.9 * len(groups) + 1.5)
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, 3.8 * rows), squeeze=False)
    for panel, metric in zip(axes.flat, shown):
        draw_bars(panel, groups, metric)
    for panel in list(axes.flat)[len(shown) :]:
        panel.set_visible(False)
    more = f" (first {MAX_PANELS} of {len(metrics)} metrics)" if len(metrics) > MAX_PANELS else ""
    figure.suptitle(f"{title}{more}\nbar: mean over finished seeds, error bar: ±1 std, dots: seeds", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def draw_bars(panel: Any, groups: Sequence[Group], metric: str) -> None:
    for index, group in enumerate(groups):
        stat = group.stats[metric]
        if stat.mean is None:  # no finished seed logged it
            continue
        error = [stat.std] if stat.std is not None else None
        panel.bar(index, stat.mean, yerr=error, capsize=5, color=colour(index), alpha=0.75)
        values = list(stat.values.values())
        panel.scatter([index + x for x in spread(len(values))], values, s=14, color="black", zorder=3)
    slanted = len(groups) > 3  # long variant names would overlap
    names = [group.variant for group in groups]
    panel.set_xticks(range(len(groups)), names, rotation=25 if slanted else 0, ha="right" if slanted else "center")
    panel.set_title(wrapped(metric), fontsize=9)
    panel.grid(axis="y", alpha=0.3)


def spread(count: int, half_width: float = 0.25) -> list[float]:
    """Horizontal offsets for `count` seed dots across a bar, so equal values do not hide each other."""
    if count == 1:
        return [0.0]
    return [half_width * (2 * i / (count - 1) - 1) for i in range(count)]


def plot_curves(path: Path, curves: Sequence[Curve], metric: str, *, variants: Sequence[str], title: str) -> Path:
    """`metric` against step, a line per variant at the mean over its seeds, shaded ±1 std where two seeds or
    more logged the step. `variants` is the full order, so colours match compare.png."""
    plt = pyplot()
    figure, panel = plt.subplots(figsize=(8, 4.5))
    for curve in curves:
        index = list(variants).index(curve.variant)
        panel.plot(curve.steps, curve.mean, color=colour(index), label=curve.variant, linewidth=1.5)
        low = [m - s for m, s in zip(curve.mean, curve.std)]
        high = [m + s for m, s in zip(curve.mean, curve.std)]
        panel.fill_between(curve.steps, low, high, color=colour(index), alpha=0.2, linewidth=0)
    panel.set_xlabel("step")
    panel.set_ylabel(metric)
    panel.grid(alpha=0.3)
    panel.legend(fontsize=9)
    panel.set_title(f"{title}\n{metric}: mean over finished seeds, band: ±1 std", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
