"""LR-transfer summaries from finished runs: best base LR per scale, and how far it moves."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class RunResult:
    group: str  # e.g. the parametrization
    scale: int  # width or depth
    lr: float
    loss: float  # final train loss; a diverged run carries the divergence cap
    diverged: bool = False


@dataclass(frozen=True)
class BestLR:
    group: str
    scale: int
    lr: float
    loss: float
    grid_index: int  # position of lr in the group's sorted LR grid


def best_lrs(results: list[RunResult]) -> list[BestLR]:
    """Per (group, scale): the LR with the lowest final loss (ties: the smaller LR)."""
    grids: dict[str, list[float]] = defaultdict(list)
    cells: dict[tuple[str, int], list[RunResult]] = defaultdict(list)
    for r in results:
        if r.lr not in grids[r.group]:
            grids[r.group].append(r.lr)
        cells[(r.group, r.scale)].append(r)
    out = []
    for (group, scale), runs in sorted(cells.items()):
        finite = [r for r in runs if math.isfinite(r.loss)]
        best = min(finite, key=lambda r: (r.loss, r.lr))
        out.append(BestLR(group, scale, best.lr, best.loss, sorted(grids[group]).index(best.lr)))
    return out


def argmin_shift(best: list[BestLR], group: str) -> int:
    """Grid steps between the best LR at the smallest and at the largest scale (signed)."""
    rows = sorted((b for b in best if b.group == group), key=lambda b: b.scale)
    return rows[-1].grid_index - rows[0].grid_index


def format_table(best: list[BestLR]) -> str:
    lines = [f"{'group':<10} {'scale':>6} {'best lr':>10} {'final loss':>11} {'grid idx':>9}"]
    for b in best:
        lines.append(f"{b.group:<10} {b.scale:>6} {b.lr:>10.4g} {b.loss:>11.4f} {b.grid_index:>9}")
    for group in sorted({b.group for b in best}):
        lines.append(f"{group}: best-LR shift from smallest to largest scale = {argmin_shift(best, group):+d} grid steps")
    return "\n".join(lines)
