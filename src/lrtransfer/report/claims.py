"""Small statistics behind the claims tables, and the PASS / FAIL / SOFT-* verdicts."""

from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Iterable

import numpy as np

from ..transfer import BestLR, RunResult, best_lrs
from .html import Claim
from .runs import RunRecord


def verdict(name: str, metric: str, threshold: str, measured: str, ok: bool | None, soft: bool = False) -> Claim:
    """``ok=None``: the runs needed for the claim are missing."""
    if ok is None:
        status = "MISSING"
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


def shift(best: dict[float, BestLR]) -> int | None:
    """Grid steps the best LR moves from the smallest to the largest scale (signed); None if < 2 scales."""
    if len(best) < 2:
        return None
    scales = sorted(best)
    return best[scales[-1]].grid_index - best[scales[0]].grid_index


def spread(best: dict[float, BestLR]) -> int | None:
    """Largest minus smallest grid index of the best LR over all scales."""
    idx = [b.grid_index for b in best.values()]
    return max(idx) - min(idx) if len(idx) >= 2 else None


def common_optimum(best: dict[float, BestLR]) -> float | None:
    """The LR that is best at the most scales (ties: the one best at the smallest scale)."""
    if not best:
        return None
    counts = Counter(b.lr for b in best.values())
    top = max(counts.values())
    return next(best[s].lr for s in sorted(best) if counts[best[s].lr] == top)


def fmt(x: float | int | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:+d}" if isinstance(x, int) else f"{x:.{digits}g}"


def lr_table(best: dict[float, BestLR], label: str = "width") -> str:
    return ", ".join(f"{label} {s:g}: {b.lr:g}" for s, b in sorted(best.items()))
