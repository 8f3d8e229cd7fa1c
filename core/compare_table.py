"""A sweep's comparison as text: the terminal table, compare.csv and compare.md.

Every table has one row per variant, in the sweep's order; a metric's cell is "mean ± std" over the variant's
finished seeds ("-" for the std of a single seed), with "(n=k)" added where fewer seeds than finished logged it.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

from .compare import Group, Stat, Sweep

TERMINAL_WIDTH = 100
GAP = "  "


def significant(value: float, digits: int) -> str:
    """`value` to `digits` significant digits in fixed notation, so a column's numbers line up: 0.7500, 0.0043."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def cell(stat: Stat, finished: int) -> str:
    """The mean to 4 significant digits, the std to 2 (seeds are few: its third digit is noise)."""
    if stat.mean is None:
        return "-"
    text = f"{significant(stat.mean, 4)} ± {significant(stat.std, 2) if stat.std is not None else '-'}"
    return text if stat.n == finished else f"{text} (n={stat.n})"


def short_names(metrics: Sequence[str]) -> tuple[str, list[str]]:
    """The path the metrics share (whole "/" segments) and each name without it; every name keeps its last segment."""
    split = [metric.split("/") for metric in metrics]
    shared = 0
    while all(len(parts) > shared + 1 and parts[shared] == split[0][shared] for parts in split):
        shared += 1
    prefix = "/".join(split[0][:shared])
    return (f"{prefix}/" if prefix else ""), ["/".join(parts[shared:]) for parts in split]


def aligned(rows: Sequence[Sequence[str]], *, right_from: int = 1) -> list[str]:
    """Rows of cells padded into columns; columns from `right_from` on are right-aligned (numbers)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        GAP.join(
            text.ljust(w) if i < right_from else text.rjust(w) for i, (text, w) in enumerate(zip(row, widths))
        ).rstrip()
        for row in rows
    ]


def terminal_table(groups: Sequence[Group], metrics: Sequence[str]) -> list[str]:
    """Plain aligned text within TERMINAL_WIDTH: metric columns that do not fit go on to a further table."""
    prefix, names = short_names(metrics)
    base = [["variant", "n", "failed"]] + [[g.variant, str(g.finished), str(g.failed)] for g in groups]
    columns = [[name] + [cell(g.stats[metric], g.finished) for g in groups] for metric, name in zip(metrics, names)]
    lines = [f"metrics under {prefix}"] if prefix else []
    for index, chunk in enumerate(fitting(base, columns)):
        if index:  # a further table for the columns that did not fit
            lines.append("")
        lines += aligned([base_row + [column[i] for column in chunk] for i, base_row in enumerate(base)])
    return lines


def fitting(base: Sequence[Sequence[str]], columns: Sequence[Sequence[str]]) -> list[list[Sequence[str]]]:
    """The metric columns in runs that fit beside the variant, n and failed columns (at least one each)."""
    used = sum(max(len(row[i]) for row in base) + len(GAP) for i in range(len(base[0])))
    chunks: list[list[Sequence[str]]] = [[]]
    width = used
    for column in columns:
        need = max(len(text) for text in column) + len(GAP)
        if chunks[-1] and width + need > TERMINAL_WIDTH:
            chunks.append([])
            width = used
        chunks[-1].append(column)
        width += need
    return chunks


def failures(sweep: Sweep) -> list[str]:
    """One line per failed child: its full name and the error it recorded."""
    return [
        f"{child.name} ({child.status.lower()}): {child.error or 'no error recorded'}"
        for child in sweep.children
        if child.status not in ("FINISHED", "RUNNING", "SCHEDULED")
    ]


def key_columns(groups: Sequence[Group]) -> list[str]:
    return list(dict.fromkeys(key for group in groups for key in group.keys))


def write_csv(path: Path, groups: Sequence[Group], metrics: Sequence[str]) -> Path:
    """One row per variant and metric, with the varied keys' values and each seed's value (JSON: seed -> value)."""
    keys = key_columns(groups)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["variant", *keys, "metric", "mean", "std", "n", "failed", "values"])
        for group in groups:
            for metric in metrics:
                stat = group.stats[metric]
                writer.writerow(
                    [
                        group.variant,
                        *(group.keys.get(key, "") for key in keys),
                        metric,
                        "" if stat.mean is None else repr(stat.mean),
                        "" if stat.std is None else repr(stat.std),
                        stat.n,
                        group.failed,
                        json.dumps(dict(stat.values)),
                    ]
                )
    return path


def markdown_lines(sweep: Sweep, groups: Sequence[Group], metrics: Sequence[str], *, command: str) -> list[str]:
    keys = key_columns(groups)
    header = ["variant", *(f"`{key}`" for key in keys), "n", "failed", *(f"`{metric}`" for metric in metrics)]
    rows = [
        [
            group.variant,
            *(f"`{group.keys.get(key, '')}`" for key in keys),
            str(group.finished),
            str(group.failed),
            *(cell(group.stats[metric], group.finished) for metric in metrics),
        ]
        for group in groups
    ]
    lines = [
        f"Sweep parent run `{sweep.parent_id}` in experiment `{sweep.experiment}`: `{command}`",
        "",
        "Each cell: mean ± sample standard deviation over the variant's finished seeds; failed seeds are left out.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 or (0 < i <= len(keys)) else "---:" for i in range(len(header))) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    failed = failures(sweep)
    if failed:
        lines += ["", "Failed runs:", "", *(f"- {line}" for line in failed)]
    return lines


def write_markdown(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path
