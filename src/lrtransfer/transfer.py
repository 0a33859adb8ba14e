"""LR-transfer summaries from finished runs: the best base LR per group and scale."""

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
