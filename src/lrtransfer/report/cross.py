"""Reports of the experiments that join the two papers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import figures
from .claims import edge_notes, fmt, verdict
from .flerm import fslr_series
from .html import ExperimentReport, Figure
from .runs import ExperimentRuns
from .super_consistency import SHARP, at_lr, best_by, by_stage, common_optimum, cv_over_time, eos_figure, width


def cross_flerm_sharpness(runs: ExperimentRuns, out: Path) -> ExperimentReport:
    stages = by_stage(runs.merged)
    claims, panels, cvs, best = [], {}, {}, {}
    titles = {"flerm": "SP + FLeRM", "mup": "µP", "sp": "SP"}
    for g, title in titles.items():
        rs = stages.get(g, [])
        best[g] = best_by(rs, width)
        lr = common_optimum(best[g])
        at = sorted(at_lr(rs, lr), key=width)
        cvs[title] = cv_over_time(at, SHARP)
        panels[f"{title} η0={fmt(lr)}"] = at
    fl, mu, sp = cvs["SP + FLeRM"], cvs["µP"], cvs["SP"]
    claims.append(verdict("FLeRM's rescaled sharpness is super consistent across width, as µP's",
                          "median CV across widths of λmax(D½HD½) after 10% (FLeRM / µP / SP), at each best LR",
                          "FLeRM ≤ 0.25", f"{fmt(fl)} / {fmt(mu)} / {fmt(sp)}", None if math.isnan(fl) else fl <= 0.25,
                          soft=True))
    figs = [eos_figure(out, panels, "Rescaled sharpness (D = the per-tensor SGD LRs in force, FLeRM's included) "
                                    "times η0, per width.")]
    return ExperimentReport("cross_flerm_sharpness", "", "Joining the papers: is FLeRM super consistent?",
                            "SGD: SP with FLeRM-set per-tensor LRs (an SGD record of the base width), µP and SP; the "
                            "rescaled sharpness along training at each one's best LR.",
                            figs, claims, len(runs.finished), edge_notes(best, titles))


def cross_mup_fslr(runs: ExperimentRuns, out: Path) -> ExperimentReport:
    rs = sorted(runs.merged, key=width)
    series = {width(r): fslr_series(r) for r in rs if not r.diverged}
    claims, spreads = [], {}
    if len(series) >= 2:
        base = series[min(series)]
        for name in base:
            if name.endswith(".weight"):
                first = [s[name][1][0] for s in series.values() if name in s]
                spreads[name] = max(first) / min(first)
        worst = max(spreads, key=spreads.get)
        claims.append(verdict("µP's per-tensor function-space LRs are width-independent at step 0",
                              "largest max/min ratio across widths of η_ℓΔ_ℓF (worst tensor)", "≤ 1.5",
                              f"{fmt(spreads[worst])} ({worst})", spreads[worst] <= 1.5, soft=True))
        widest = series[max(series)]
        dev = {n: widest[n][1][0] / base[n][1][0] for n in base if n in widest and n.endswith(".weight")}
        claims.append(verdict("µP already matches FLeRM's targets (the base-width record)",
                              f"η_ℓΔ_ℓF at width {max(series):g} / base (width {min(series):g}), per weight tensor",
                              "∈ [0.67, 1.5]", ", ".join(f"{n}: {fmt(v)}" for n, v in dev.items()),
                              all(0.67 <= v <= 1.5 for v in dev.values()), soft=True))
    else:
        claims.append(verdict("µP's per-tensor function-space LRs are width-independent", "runs", "≥ 2 widths",
                              "missing", None, soft=True))
    names = sorted({n for s in series.values() for n in s if n.endswith(".weight")})
    figs = [Figure(figures.trajectories(out / "fslr_by_width.png", {
        n: {f"width {w:g}": s[n] for w, s in series.items() if n in s} for n in names[:4]}, "η_ℓ · Δ_ℓF", logy=True),
        "Per-tensor function-space LRs of µP models along training, one line per width (first four weight tensors).")]
    if series:
        w0 = np.array(sorted(series))
        figs.append(Figure(figures.trajectories(out / "fslr_vs_width.png", {"step 0": {
            n: (w0, np.array([series[w][n][1][0] for w in w0])) for n in names}}, "η_ℓ · Δ_ℓF", logy=True,
            xlabel="width"), "Step-0 function-space LR per weight tensor against width (flat = width-independent)."))
    return ExperimentReport("cross_mup_fslr", "", "Joining the papers: function-space LRs of µP models",
                            "µP ResMLP with Adam in record mode, widths from the base width up, at one LR; µP equals SP "
                            "at the base width, so the base-width record is what FLeRM would target.", figs, claims,
                            len(runs.finished))
