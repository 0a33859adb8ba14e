"""Best-LR summaries and the statistics behind the claims tables."""

import math

import pytest

from lrtransfer.report.claims import common_optimum, cv, shift, spread, verdict
from lrtransfer.transfer import RunResult, best_lrs


def test_best_lr_grid_index_and_shift():
    results = [RunResult("sp", w, lr, loss) for w, lr, loss in [
        (32, 0.1, 1.0), (32, 0.2, 0.5), (32, 0.4, 0.7),
        (128, 0.1, 0.4), (128, 0.2, 0.6), (128, 0.4, 10.0)]]
    results.append(RunResult("mup", 32, 0.2, 0.3))
    best = {(b.group, b.scale): b for b in best_lrs(results)}
    assert best[("sp", 32)].lr == 0.2 and best[("sp", 32)].grid_index == 1
    assert best[("sp", 128)].lr == 0.1 and best[("sp", 128)].grid_index == 0
    sp = {b.scale: b for b in best.values() if b.group == "sp"}
    assert shift(sp) == -1 and spread(sp) == 1
    assert common_optimum(sp) == 0.2  # a tie between the scales: the smallest scale's LR
    assert shift({32: sp[32]}) is None


def test_ties_go_to_the_smaller_lr_and_the_most_common_optimum_wins():
    results = [RunResult("g", w, lr, loss) for w, lr, loss in [
        (1, 0.1, 0.5), (1, 0.2, 0.5), (2, 0.1, 0.9), (2, 0.2, 0.4), (3, 0.1, 0.8), (3, 0.2, 0.3)]]
    best = {b.scale: b for b in best_lrs(results)}
    assert best[1].lr == 0.1
    assert common_optimum(best) == 0.2


def test_cv_and_verdicts():
    assert cv([1.0, 1.0, 1.0]) == 0.0
    assert cv([1.0, 3.0]) == pytest.approx(0.5)
    assert math.isnan(cv([2.0])) and math.isnan(cv([1.0, float("nan")]))
    assert verdict("c", "m", "t", "1", True).status == "PASS"
    assert verdict("c", "m", "t", "1", False).status == "FAIL"
    assert verdict("c", "m", "t", "1", False, soft=True).status == "SOFT-FAIL"
    assert verdict("c", "m", "t", "n/a", None).status == "MISSING"
