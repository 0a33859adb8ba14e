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
    # The best LR is the grid's smallest (largest): the true optimum may lie below (above) the grid.
    open_below: bool = False
    open_above: bool = False
    # How much worse the next-best LR at this scale is (inf if no other LR ran): a small margin is a best
    # LR that seed noise or the last bits of the arithmetic could move.
    margin: float = math.inf

    @property
    def on_edge(self) -> bool:
        return self.open_below or self.open_above


def best_lrs(results: list[RunResult]) -> list[BestLR]:
    """Per (group, scale): the LR with the lowest final loss (ties: the smaller LR).

    A scale at which every run diverged has no best LR and is left out (its losses all equal the cap).
    """
    grids: dict[str, list[float]] = defaultdict(list)
    cells: dict[tuple[str, int], list[RunResult]] = defaultdict(list)
    for r in results:
        if r.lr not in grids[r.group]:
            grids[r.group].append(r.lr)
        cells[(r.group, r.scale)].append(r)
    out = []
    for (group, scale), runs in sorted(cells.items()):
        finite = [r for r in runs if math.isfinite(r.loss)]
        if all(r.diverged for r in finite):
            continue
        ranked = sorted(finite, key=lambda r: (r.loss, r.lr))
        best, margin = ranked[0], ranked[1].loss - ranked[0].loss if len(ranked) > 1 else math.inf
        grid = sorted(grids[group])
        i = grid.index(best.lr)
        out.append(BestLR(group, scale, best.lr, best.loss, i, i == 0, i == len(grid) - 1, margin))
    return out
