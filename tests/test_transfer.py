"""Best-LR summaries and the statistics behind the claims tables."""

import math

import pytest

from lrtransfer.report.claims import UNDETERMINED, common_optimum, cv, decide, edge_notes, lr_table, shift, spread, verdict
from lrtransfer.transfer import RunResult, best_lrs


def test_best_lr_grid_index_and_shift():
    results = [RunResult("sp", w, lr, loss) for w, lr, loss in [
        (32, 0.1, 1.0), (32, 0.2, 0.5), (32, 0.4, 0.7),
        (128, 0.1, 0.4), (128, 0.2, 0.6), (128, 0.4, 10.0)]]
    results.append(RunResult("mup", 32, 0.2, 0.3))
    best = {(b.group, b.scale): b for b in best_lrs(results)}
    assert best[("sp", 32)].lr == 0.2 and best[("sp", 32)].grid_index == 1
    assert best[("sp", 128)].lr == 0.1 and best[("sp", 128)].grid_index == 0
    # how much worse the next-best LR is: how close a call the best LR was (none where one LR ran)
    assert best[("sp", 32)].margin == pytest.approx(0.2) and best[("sp", 128)].margin == pytest.approx(0.2)
    assert math.isinf(best[("mup", 32)].margin)
    sp = {b.scale: b for b in best.values() if b.group == "sp"}
    assert lr_table(sp) == "width 32: 0.2 (next +0.2), width 128: 0.1 (next +0.2)"
    assert lr_table({32: best[("mup", 32)]}) == "width 32: 0.2"
    assert shift(sp).value == -1 and spread(sp).value == 1
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
    assert verdict("c", "m", "t", "+0", UNDETERMINED, soft=True).status == "UNDETERMINED"


def grid_of(losses_by_scale, lrs=(0.1, 0.2, 0.4, 0.8)):
    results = [RunResult("g", w, lr, loss, loss >= 10) for w, losses in losses_by_scale.items()
               for lr, loss in zip(lrs, losses)]
    return {b.scale: b for b in best_lrs(results)}


def test_an_optimum_on_the_grid_edge_leaves_the_shift_open_on_that_side():
    best = grid_of({32: [0.9, 0.5, 0.7, 0.8], 128: [0.9, 0.8, 0.7, 0.6]})  # width 128: best at the largest LR
    assert best[128].open_above and not best[128].open_below and not best[32].on_edge
    s = shift(best)
    assert (s.value, s.low, s.high) == (2, 2, math.inf)
    assert decide(lambda x: x >= 1, s) is True  # every value it could take passes
    assert decide(lambda x: x <= 1, s) is False  # none does
    assert decide(lambda x: x <= 3, s) is UNDETERMINED  # depends on how far beyond the grid the optimum is
    assert "could be ≥ +2" in str(s) and "128: 0.8, the largest" in str(s)
    assert decide(lambda x: x <= 1, None) is None
    (note,) = edge_notes({"sp": best}, {"sp": "SP"})
    assert note.startswith("SP: the best LR is on the edge of the LR grid (width 128: 0.8, the largest)")
    assert edge_notes({"sp": grid_of({32: [0.9, 0.5, 0.7, 0.8]})}, {"sp": "SP"}) == []


def test_edges_on_both_scales_and_spreads():
    # the small scale's best is the smallest LR (could be lower), the large one's the largest (could be higher)
    best = grid_of({1: [0.5, 0.6, 0.7, 0.8], 2: [0.9, 0.8, 0.7, 0.6], 3: [0.9, 0.5, 0.7, 0.8]})
    s = shift({1: best[1], 2: best[2]})
    assert (s.value, s.low, s.high) == (3, 3, math.inf)
    sp = spread(best)
    assert (sp.value, sp.low, sp.high) == (3, 3, math.inf)
    interior = grid_of({1: [0.9, 0.5, 0.7, 0.8], 2: [0.9, 0.7, 0.5, 0.8]})
    assert decide(lambda x: x <= 1, spread(interior)) is True and str(spread(interior)) == "+1"
    # both optima on the same edge: the shift could be anything
    top = grid_of({1: [0.9, 0.8, 0.7, 0.6], 2: [0.9, 0.8, 0.7, 0.5]})
    assert str(shift(top)).startswith("+0, could be any value")
    assert decide(lambda a, b: a >= 1 and a > abs(b), shift(top), shift(interior)) is UNDETERMINED


def test_a_scale_where_every_run_diverged_has_no_best_lr():
    """All capped at the divergence loss: the tie would otherwise pick the smallest LR as a fake optimum."""
    best = grid_of({2: [0.9, 0.5, 0.7, 0.8], 4: [0.9, 0.7, 0.5, 0.8], 16: [10.0, 10.0, 10.0, 10.0]})
    assert sorted(best) == [2, 4] and shift(best).value == 1
