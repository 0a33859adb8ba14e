"""Small statistics behind the claims tables, and the PASS / FAIL / SOFT-* verdicts."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from ..transfer import BestLR, RunResult, best_lrs
from .html import Claim
from .runs import RunRecord


class Undetermined:
    """The ``ok`` of a claim whose verdict depends on where an optimum beyond the edge of the LR grid lies."""

    def __repr__(self) -> str:
        return "UNDETERMINED"


UNDETERMINED = Undetermined()


def verdict(name: str, metric: str, threshold: str, measured: str, ok: bool | None | Undetermined,
            soft: bool = False) -> Claim:
    """``ok=None``: the runs needed for the claim are missing; ``UNDETERMINED``: see :func:`decide`."""
    if ok is None:
        status = "MISSING"
    elif ok is UNDETERMINED:
        status = "UNDETERMINED"
    else:
        status = ("SOFT-" if soft else "") + ("PASS" if ok else "FAIL")
    return Claim(name, metric, threshold, measured, status, soft)


def cv(values: Iterable[float]) -> float:
    """Coefficient of variation (population std / |mean|) of finite values; nan if fewer than two."""
    v = np.array([x for x in values if math.isfinite(x)], dtype=float)
    return float(v.std() / abs(v.mean())) if len(v) >= 2 and v.mean() != 0 else math.nan


def best_by(runs: list[RunRecord], scale_key: Callable[[RunRecord], float]) -> dict[float, BestLR]:
    """Best base LR per scale (width, depth, ...) of one group of runs; divergence counts as its cap."""
    results = [RunResult("g", scale_key(r), r.lr, r.final_loss, r.diverged) for r in runs]
    return {b.scale: b for b in best_lrs(results)} if results else {}


@dataclass(frozen=True)
class GridSteps:
    """A shift or spread of best-LR grid positions: the measured ``value``, and the range [low, high] it could
    span because an optimum on the edge of its LR grid may lie any number of steps beyond it."""

    value: int
    low: float
    high: float
    edges: str = ""  # which optima sit on an edge, for the report

    def __str__(self) -> str:
        if self.low == self.high:
            return f"{self.value:+d}"
        if math.isinf(self.low) and math.isinf(self.high):
            bound = "any value"
        else:
            bound = f"≥ {self.low:+.0f}" if math.isinf(self.high) else f"≤ {self.high:+.0f}"
        return f"{self.value:+d}, could be {bound} (best LR on the grid's edge at {self.edges})"

    def candidates(self, beyond: int = 8) -> range:
        """The values it could take; an unbounded side stands for up to ``beyond`` steps (every threshold
        of the claims is within three steps of zero)."""
        low = self.value - beyond if math.isinf(self.low) else int(self.low)
        high = self.value + beyond if math.isinf(self.high) else int(self.high)
        return range(low, high + 1)


def _index_range(b: BestLR) -> tuple[float, float]:
    return (-math.inf if b.open_below else b.grid_index), (math.inf if b.open_above else b.grid_index)


def _edges(best: Iterable[tuple[float, BestLR]]) -> str:
    return ", ".join(f"{s:g}: {b.lr:g}, the {'smallest' if b.open_below else 'largest'}" for s, b in best if b.on_edge)


def shift(best: dict[float, BestLR]) -> GridSteps | None:
    """Grid steps the best LR moves from the smallest to the largest scale (signed); None if < 2 scales."""
    if len(best) < 2:
        return None
    small, large = best[min(best)], best[max(best)]
    (s_lo, s_hi), (l_lo, l_hi) = _index_range(small), _index_range(large)
    return GridSteps(large.grid_index - small.grid_index, l_lo - s_hi, l_hi - s_lo,
                     _edges([(min(best), small), (max(best), large)]))


def spread(best: dict[float, BestLR]) -> GridSteps | None:
    """Largest minus smallest grid index of the best LR over all scales; None if < 2 scales."""
    if len(best) < 2:
        return None
    idx = [b.grid_index for b in best.values()]
    ranges = [_index_range(b) for b in best.values()]
    return GridSteps(max(idx) - min(idx), max(0.0, max(lo for lo, _ in ranges) - min(hi for _, hi in ranges)),
                     max(hi for _, hi in ranges) - min(lo for lo, _ in ranges), _edges(best.items()))


def decide(predicate: Callable[..., bool], *steps: GridSteps | None) -> bool | None | Undetermined:
    """``predicate`` of the measured shifts/spreads if it holds for every value they could take, its negation
    if it holds for none; ``UNDETERMINED`` if that depends on optima beyond the grid; None if one is missing."""
    if any(s is None for s in steps):
        return None
    outcomes = {bool(predicate(*values)) for values in itertools.product(*(s.candidates() for s in steps))}
    return outcomes.pop() if len(outcomes) == 1 else UNDETERMINED


def edge_notes(best: dict[str, dict[float, BestLR]], labels: dict[str, str], what: str = "width") -> list[str]:
    """A report note for every group ({group: its best LRs}, named by ``labels``) whose best LR is the edge of
    its LR grid at some scale."""
    notes = []
    for group, label in labels.items():
        edges = _edges(sorted(best.get(group, {}).items()))
        if edges:
            notes.append(f"{label}: the best LR is on the edge of the LR grid ({what} {edges}); the optimum may lie "
                         "beyond it, so a claim that depends on where it is can be UNDETERMINED, and one read at the "
                         "best LR uses the edge.")
    return notes


def common_optimum(best: dict[float, BestLR]) -> float | None:
    """The LR that is best at the most scales (ties: the one best at the smallest scale)."""
    if not best:
        return None
    counts = Counter(b.lr for b in best.values())
    top = max(counts.values())
    return next(best[s].lr for s in sorted(best) if counts[best[s].lr] == top)


def fmt(x: float | int | GridSteps | None, digits: int = 3) -> str:
    if isinstance(x, GridSteps):
        return str(x)
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:+d}" if isinstance(x, int) else f"{x:.{digits}g}"


def lr_table(best: dict[float, BestLR], label: str = "width") -> str:
    """Best LR per scale, each with how much worse the next-best LR there is."""
    return ", ".join(f"{label} {s:g}: {b.lr:g}" + (f" (next +{fmt(b.margin)})" if math.isfinite(b.margin) else "")
                     for s, b in sorted(best.items()))
