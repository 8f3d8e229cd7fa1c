"""The in-context curve: oracle accuracy of in-context T2I and I2T against the number of context pairs.

For each held-out episode its last pair is the query and its first k pairs the
context, k = 0 .. pairs - 1. In-context T2I is right when the Shapes image
oracle finds the query's scene as the rule draws it; in-context I2T when the
caption oracle finds the caption true and complete of the scene as named (the
rule undone). The rule-free baseline gives the same queries the first k pairs
of the next episode (another rule, mostly), so it shows what the model does
without the query's rule. `literal` is the share of answers that ignore the
rule (right for the scene as named in T2I, as drawn in I2T), over episodes
whose rule changes something.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from ..shapes.accuracy import i2t_correct, t2i_correct
from ..shapes.captions import prompt
from ..shapes.scene import Scene

CONDITIONS = ("own", "other")  # context from the query's episode, or from the next one (rule-free baseline)


@attrs.frozen(kw_only=True)
class Point:
    """One (direction, condition, k): accuracy over every episode, literal share over rule-changing ones."""

    direction: str
    condition: str
    k: int
    accuracy: float
    literal: float
    episodes: int
    # Accuracy over the episodes of each rule kind (identity, colour, shape, shift): which rules are read.
    by_rule: dict[str, float] = attrs.field(factory=dict)


def judge(direction: str, answer: Any, meta: dict[str, Any]) -> tuple[bool, bool]:
    """(right under the rule, right if no rule applied) of one answer to a query whose record meta is `meta`."""
    named, drawn = Scene.from_json(meta), Scene.from_json(meta["drawn"])
    if direction == "t2i":
        pixels = np.asarray(answer, dtype=np.uint8)
        return (
            t2i_correct(prompt(drawn.specs), pixels, size=named.size).correct,
            t2i_correct(prompt(named.specs), pixels, size=named.size).correct,
        )
    return i2t_correct(answer, named).correct, i2t_correct(answer, drawn).correct


def point(direction: str, condition: str, k: int, answers: Sequence[Any], metas: Sequence[dict]) -> Point:
    right, literal = zip(*(judge(direction, a, m) for a, m in zip(answers, metas, strict=True)))
    changing = [lit for lit, m in zip(literal, metas) if m["rule"]["kind"] != "identity"]
    kinds = sorted({m["rule"]["kind"] for m in metas})
    by_rule = {kind: float(np.mean([r for r, m in zip(right, metas) if m["rule"]["kind"] == kind])) for kind in kinds}
    return Point(
        direction=direction,
        condition=condition,
        k=k,
        accuracy=float(np.mean(right)),
        literal=float(np.mean(changing)) if changing else float("nan"),
        episodes=len(answers),
        by_rule=by_rule,
    )


def table(points: Sequence[Point], *, command: str) -> str:
    """The curve as Markdown: one row per k, accuracy (and literal share) per direction and condition."""
    ks = sorted({p.k for p in points})
    found = {(p.direction, p.condition, p.k): p for p in points}
    columns = [(d, c) for d in ("t2i", "i2t") for c in CONDITIONS if any((d, c, k) in found for k in ks)]
    names = {"own": "own context", "other": "other episode's context"}
    head = "| k | " + " | ".join(f"{d.upper()} {names[c]}" for d, c in columns) + " |"
    lines = [head, "|---" * (len(columns) + 1) + "|"]
    for k in ks:
        cells = []
        for d, c in columns:
            p = found.get((d, c, k))
            cells.append("" if p is None else f"{p.accuracy:.2f} (literal {p.literal:.2f})")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    episodes = max(p.episodes for p in points)
    kinds = sorted({kind for p in points for kind in p.by_rule})
    rule_lines = [
        "| direction, context | k | " + " | ".join(kinds) + " |",
        "|---|---" + "|---" * len(kinds) + "|",
    ]
    for d, c in columns:
        for k in ks:
            p = found.get((d, c, k))
            if p is not None:
                cells = " | ".join(f"{p.by_rule[kind]:.2f}" if kind in p.by_rule else "" for kind in kinds)
                rule_lines.append(f"| {d.upper()}, {names[c]} | {k} | {cells} |")
    return "\n".join(
        [
            f"Oracle accuracy of the query over {episodes} held-out episodes; in brackets the share of answers"
            " that ignore the rule (episodes whose rule changes something). k = 0 has no context, so both"
            " conditions are one measurement.",
            "",
            *lines,
            "",
            "Accuracy by the episode's rule:",
            "",
            *rule_lines,
            "",
            f"Command: `{command}`",
            "",
        ]
    )


def plot(points: Sequence[Point], path: Any) -> None:
    """Accuracy against k, one line per direction and condition (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for direction in ("t2i", "i2t"):
        for condition, style in zip(CONDITIONS, ("-o", "--x")):
            line = sorted((p.k, p.accuracy) for p in points if (p.direction, p.condition) == (direction, condition))
            if line:
                axes.plot(*zip(*line), style, label=f"{direction.upper()}, {condition} context")
    axes.set_xlabel("context pairs k")
    axes.set_ylabel("oracle accuracy of the query")
    axes.set_ylim(0, 1)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
