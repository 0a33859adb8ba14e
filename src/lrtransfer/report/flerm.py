"""Reports of the function-space LR experiments (criteria B-F of the reproduction notes)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

from ..transfer import BestLR
from . import figures
from .claims import best_by, decide, edge_notes, fmt, lr_table, shift, spread, verdict
from .html import ExperimentReport, Figure
from .runs import ExperimentRuns, RunRecord
from .super_consistency import by_stage, depth, width

# Stages in panel order.
GROUP_TITLES = {"sp": "SP", "flerm": "SP + FLeRM", "flerm_periodic": "FLeRM re-matched periodically (ablation)",
                "flerm_no_split": "FLeRM, no depth split (ablation)", "mup": "µP"}


def init_scale(r: RunRecord) -> float:
    return r.tag("init_scale")


def transfer_figures(out: Path, stages: dict[str, list[RunRecord]], scale: Callable, label: str,
                     prefix: str = "") -> list[Figure]:
    groups = {title: stages[g] for g, title in GROUP_TITLES.items() if stages.get(g)}
    heat = {}
    for title, rs in groups.items():
        scales, lrs = sorted({scale(r) for r in rs}), sorted({r.lr for r in rs})
        loss = np.full((len(scales), len(lrs)), np.nan)
        for r in rs:
            loss[scales.index(scale(r)), lrs.index(r.lr)] = math.inf if r.diverged else r.final_loss
        heat[title] = (scales, lrs, loss)
    return [Figure(figures.loss_vs_lr(out / f"{prefix}loss_vs_lr.png", groups, scale, label),
                   f"{prefix}final train loss (mean of the last steps) against the base LR, one curve per {label}; "
                   "crosses are diverged runs."),
            Figure(figures.grid_heatmaps(out / f"{prefix}grid.png", heat, label),
                   f"{prefix}the same grids, each cell's loss coloured by its excess over the best of its {label} (the "
                   "box; ×: diverged, grey: no run).")]


def group_best(stages, scale: Callable) -> dict[str, dict]:
    """{group: its best LR per scale} for every group of GROUP_TITLES (empty where the stage did not run)."""
    return {g: best_by(stages.get(g, []), scale) for g in GROUP_TITLES}


def shift_claims(stages, best: dict[str, dict], label: str, sp_min: int, tag: str, soft_sp: bool = False) -> list:
    s_sp, s_fl, s_mu = (shift(best[g]) for g in ("sp", "flerm", "mup"))
    claims = [verdict(f"{tag}: SP best LR moves with {label}", f"SP shift ({lr_table(best['sp'], label)})",
                      f"≤ −{sp_min} grid steps", fmt(s_sp), decide(lambda s: s <= -sp_min, s_sp), soft_sp),
              verdict(f"{tag}: FLeRM best LR stays put", f"SP+FLeRM shift ({lr_table(best['flerm'], label)})",
                      "|shift| ≤ 1", fmt(s_fl), decide(lambda s: abs(s) <= 1, s_fl))]
    if stages.get("mup"):
        claims.append(verdict(f"{tag} (comparison): µP best LR stays put", f"µP shift ({lr_table(best['mup'], label)})",
                              "|shift| ≤ 1", fmt(s_mu), decide(lambda s: abs(s) <= 1, s_mu), soft=True))
    return claims


def transfer_notes(best: dict[str, dict], label: str, prefix: str = "") -> list[str]:
    """Notes on the groups whose best LR sits on the edge of the LR grid."""
    return edge_notes(best, {g: prefix + t for g, t in GROUP_TITLES.items()}, label)


def base_best(stages, scale: Callable) -> BestLR | None:
    """The base model's best LR (the mean of its recording seeds), None unless it ran at one scale."""
    base = best_by(stages.get("base", []), scale)
    return next(iter(base.values())) if len(base) == 1 else None


def base_optimal_gap(stages, scale: Callable, group: str = "flerm") -> tuple[str, bool | None]:
    """The loss of ``group`` (a FLeRM stage) at the base model's best LR against each scale's best loss."""
    base, flerm = base_best(stages, scale), stages.get(group, [])
    best = best_by(flerm, scale)
    if base is None or len(best) < 2:
        return "n/a", None
    base_lr = base.lr
    gaps = {}
    for s, b in best.items():
        at_base = [r.final_loss for r in flerm if scale(r) == s and math.isclose(r.lr, base_lr)]
        gaps[s] = at_base[0] - b.loss if at_base else math.inf
    ok = all(g <= max(0.02, 0.02 * best[s].loss) for s, g in gaps.items())
    return (f"η0={base_lr:g} (the base model's next-best LR +{fmt(base.margin)}): "
            + ", ".join(f"{s:g}: +{fmt(g)}" for s, g in gaps.items())), ok


def lr_multiplier_figures(out: Path, stages, base_lr: float | None) -> list[Figure]:
    """FLeRM's per-tensor LR multipliers (of the swept SP LR): at step 0 against width, beside µP's hidden-weight
    multiplier for Adam (base width / width); and, where FLeRM re-matches periodically, along training."""
    flerm = [r for r in stages.get("flerm", []) if not r.diverged]
    widths = np.array(sorted({width(r) for r in flerm}), dtype=float)
    names = sorted({k[len("lr_mult/"):] for r in flerm for k in r.metrics if k.startswith("lr_mult/")
                    and k.endswith(".weight")})
    if not names:
        return []
    # at step 0 Adam's update per unit LR is the same at every LR, so FLeRM's multipliers are too, but for the estimator
    step0 = {n: (widths, np.array([np.median([r.metrics[f"lr_mult/{n}"] for r in flerm if width(r) == w])
                                   for w in widths])) for n in names}
    mup = {"µP's for hidden weights (base width / width)": (widths, widths[0] / widths)}
    figs = [Figure(figures.trajectories(out / "lr_multipliers.png", {"first-step FLeRM": step0}, "LR multiplier (× η0)",
                                        logy=True, logx=True, xlabel="width", references={"first-step FLeRM": mup}),
                   "The LR multiplier FLeRM sets per weight tensor at step 0, against width (median over the LRs of "
                   "the seed means), with µP's Adam multiplier for hidden weights (dashed).")]
    periodic = sorted((r for r in stages.get("flerm_periodic", []) if base_lr is not None and math.isclose(r.lr, base_lr)),
                      key=width)
    if periodic:
        panels = {f"width {width(r):g}": {n: r.history(f"lr_mult/{n}") for n in names} for r in periodic}
        figs.append(Figure(figures.trajectories(out / "lr_multipliers_periodic.png", panels, "LR multiplier (× η0)",
                                                logy=True),
                           f"Periodic FLeRM's LR multipliers along training at the base model's best LR, η0={base_lr:g} "
                           "(seed means), per width."))
    return figs


def flerm_width(runs: ExperimentRuns, out: Path) -> ExperimentReport:
    stages = by_stage(runs.merged)
    best = group_best(stages, width)
    claims = shift_claims(stages, best, "width", 2, "B")
    measured, ok = base_optimal_gap(stages, width)
    claims.append(verdict("B: FLeRM at the base model's best LR is near each width's best", "loss gap per width",
                          "≤ max(0.02, 2%)", measured, ok))
    if stages.get("flerm_periodic"):
        every = stages["flerm_periodic"][0].params.get("fslr.every", "?")
        measured, ok = base_optimal_gap(stages, width, "flerm_periodic")
        claims.append(verdict(f"B (ablation): FLeRM re-matched every {every} steps, at the base model's best LR, is "
                              "near each width's best", "loss gap per width", "≤ max(0.02, 2%)", measured, ok, soft=True))
    base = base_best(stages, width)
    figs = transfer_figures(out, stages, width, "width") + lr_multiplier_figures(out, stages, base and base.lr)
    return ExperimentReport("flerm_width", "", "FLeRM: width transfer of a ResMLP (criterion B)",
                            "ResMLP with Adam; the base-width model records its per-tensor function-space LRs (its "
                            "seeds averaged); SP+FLeRM sets per-tensor LRs at step 0 to match "
                            "them (the ablation re-matches them periodically); SP and µP for comparison.", figs,
                            claims, len(runs.finished), transfer_notes(best, "width"))


def flerm_depth(runs: ExperimentRuns, out: Path) -> ExperimentReport:
    stages = by_stage(runs.merged)
    best = group_best(stages, depth)
    claims = shift_claims(stages, best, "depth", 2, "C")
    if stages.get("flerm_no_split"):
        ablation = best["flerm_no_split"]
        s_fl, s_ns = shift(best["flerm"]), shift(ablation)
        claims.append(verdict("C (ablation): without the /m depth split FLeRM's best LR moves more",
                              f"shift without the split ({lr_table(ablation, 'depth')}) against FLeRM's ({fmt(s_fl)})",
                              "|shift| ≥ FLeRM's |shift| + 1", fmt(s_ns),
                              decide(lambda n, f: abs(n) >= abs(f) + 1, s_ns, s_fl)))
    return ExperimentReport("flerm_depth", "", "FLeRM: depth transfer of a ResMLP (criterion C)",
                            "ResMLP whose residual-branch weights are initialised ×1/√(L/L_base), with no "
                            "forward multiplier (the FLeRM paper's ResMLP baseline), Adam; the base-depth model records; "
                            "deeper models split each base block's target over the blocks replacing it.",
                            transfer_figures(out, stages, depth, "depth"), claims, len(runs.finished),
                            transfer_notes(best, "depth"))


def best_loss_spread(best: dict) -> float:
    losses = [b.loss for b in best.values()]
    return max(losses) - min(losses) if len(losses) >= 2 else math.nan


def flerm_init_scale(runs: ExperimentRuns, out: Path) -> ExperimentReport:
    stages = by_stage(runs.merged)
    best = group_best(stages, init_scale)
    s_fl = spread(best["flerm"])
    claims = [verdict("E: FLeRM best LR is the same at every init scale",
                      f"spread of the best LR's grid index ({lr_table(best['flerm'], 'init')})", "≤ 1",
                      fmt(s_fl), decide(lambda s: s <= 1, s_fl))]
    l_sp, l_fl = best_loss_spread(best["sp"]), best_loss_spread(best["flerm"])
    claims.append(verdict("E: FLeRM evens out the best loss across init scales", "spread of the best loss (FLeRM vs SP)",
                          "FLeRM ≤ ½ SP", f"{fmt(l_fl)} vs {fmt(l_sp)}",
                          None if math.isnan(l_sp) or math.isnan(l_fl) else l_fl <= l_sp / 2))
    return ExperimentReport("flerm_init_scale", "", "FLeRM across initialisation scales (criterion E)",
                            "Transformer (pre+post-mod LayerNorms, QK-norm), Adam, hidden weights initialised "
                            "init_scale times larger; FLeRM matches the record of the init_scale=1 base model (its seeds "
                            "averaged).",
                            transfer_figures(out, stages, init_scale, "init scale"), claims, len(runs.finished),
                            transfer_notes(best, "init scale"))


def flerm_transformer(runs: ExperimentRuns, out: Path) -> ExperimentReport:
    claims, figs, notes = [], [], []
    for norm in sorted({r.tags.get("norm", "") for r in runs.merged}):
        stages = by_stage([r for r in runs.merged if r.tags.get("norm") == norm])
        best = group_best(stages, width)
        claims += shift_claims(stages, best, "width", 1, f"D ({norm})")
        figs += transfer_figures(out, stages, width, "width", prefix=f"{norm}_")
        notes += transfer_notes(best, "width", prefix=f"{norm}: ")
    return ExperimentReport("flerm_transformer", "", "FLeRM: Transformer width transfer per norm placement (criterion D)",
                            "Transformer with QK-norm, Adam; norm placements pre, post and pre_post_mod (LayerNorms "
                            "with or without gain and bias: the setup table says which); base-width records.",
                            figs, claims, len(runs.finished), notes)


def fslr_series(r: RunRecord, weighted: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per tensor: (steps, η_ℓ·Δ_ℓF) with η_ℓ = η0 × its LR multiplier (or Δ_ℓF at η=1)."""
    out = {}
    for key in sorted(k for k in r.metrics if k.startswith("fslr/")):
        name = key[len("fslr/"):]
        steps, values = r.history(key)
        mult = r.metrics.get(f"lr_mult/{name}", 1.0)
        out[name] = (steps, values * (r.lr * mult if weighted else 1.0))
    return out


# The FLeRM paper's tensor groups for its function-space LR plots, in stacking order.
TENSOR_GROUPS = ("embedding", "input", "QK", "VO", "FF in", "FF out", "hidden", "readout", "norms", "biases")


def tensor_group(name: str, model: str) -> str:
    """The group of a parameter of our models (:data:`TENSOR_GROUPS`), from its name."""
    if "norm" in name:
        return "norms"
    if name.endswith(".bias"):
        return "biases"
    if name.startswith(("tok.", "pos.")):
        return "embedding"
    if name.startswith(("input.", "readout.")):
        return name.split(".")[0]
    if name.endswith((".q.weight", ".k.weight")):
        return "QK"
    if name.endswith((".v.weight", ".o.weight")):
        return "VO"
    if model == "transformer":  # its MLP branch is Sequential(Linear in, activation, Linear out)
        return "FF in" if ".branch.0." in name else "FF out"
    return "hidden"


def grouped(series: dict[str, tuple[np.ndarray, np.ndarray]], model: str) -> dict[str, np.ndarray]:
    """The sum of each group's per-step values, in :data:`TENSOR_GROUPS` order."""
    sums: dict[str, np.ndarray] = {}
    for name, (_, values) in series.items():
        group = tensor_group(name, model)
        sums[group] = sums.get(group, 0) + values
    return {g: sums[g] for g in TENSOR_GROUPS if g in sums}


def fslr_dynamics(runs: ExperimentRuns, out: Path) -> ExperimentReport:
    stages = by_stage(runs.merged)
    claims, panels, steps = [], {}, {}
    for stage in ("resmlp", "transformer"):
        if not stages.get(stage):
            claims.append(verdict(f"F ({stage})", "runs", "present", "missing", None, soft=True))
            continue
        series = fslr_series(stages[stage][0])
        weights = {n: s for n, s in series.items() if n.endswith(".weight") and "norm" not in n}
        first = {n: s[1][0] for n, s in series.items()}
        # every bias against its own layer's weight, a norm's bias against its gain
        ratios = {n: first[n] / first[n[:-5] + ".weight"] for n in series
                  if n.endswith(".bias") and first.get(n[:-5] + ".weight", 0) > 0}
        claims.append(verdict(f"F ({stage}): biases move the function much less than their weights",
                              "largest bias/weight function-space LR ratio at step 0", "< 0.1",
                              f"{fmt(max(ratios.values()))} ({max(ratios, key=ratios.get)})" if ratios else "n/a",
                              max(ratios.values()) < 0.1 if ratios else None, soft=True))
        total = np.sum([s[1] for s in series.values()], axis=0)
        change = float(max(total[0], total[-1]) / min(total[0], total[-1])) if len(total) >= 2 else math.nan
        claims.append(verdict(f"F ({stage}): the total function-space LR is not constant over training",
                              "max/min of Σ_ℓ η_ℓΔ_ℓF between step 0 and the end", "≥ 1.5", fmt(change),
                              None if math.isnan(change) else change >= 1.5, soft=True))
        if stage == "transformer":
            share = {n: float(np.mean(s[1] / total)) for n, s in weights.items()}
            qk = [v for n, v in share.items() if n.endswith((".q.weight", ".k.weight"))]
            med = float(np.median(list(share.values())))
            claims.append(verdict("F (transformer): query/key weights take less than the median share",
                                  "mean share of q/k weights vs median weight share", "q/k < median",
                                  f"{fmt(max(qk) if qk else math.nan)} vs {fmt(med)}", max(qk) < med if qk else None,
                                  soft=True))
        panels[stage] = grouped(series, stages[stage][0].tags.get("model", stage))
        steps[stage] = next(iter(series.values()))[0]
    figs = [Figure(figures.stacked_shares(out / "fslr_shares.png", panels, steps),
                   "Each tensor group's share of the total function-space LR η_ℓ·Δ_ℓF over training (Adam), "
                   "grouped as the FLeRM paper plots them.")] if panels else []
    return ExperimentReport("fslr_dynamics", "", "Function-space LRs over training (criterion F)",
                            "Record mode: per-tensor function-space LRs of a ResMLP and a Transformer along training, "
                            "both with Adam.", figs, claims, len(runs.finished))


def mnist1d_width_lr(runs: ExperimentRuns, out: Path) -> ExperimentReport:
    """The foundation's first experiment: SP against µP width transfer with Adam (no FLeRM)."""
    stages = {p: [r for r in runs.merged if r.tags.get("param") == p] for p in ("sp", "mup")}
    best = {p: best_by(rs, width) for p, rs in stages.items()}
    s_sp, s_mu = shift(best["sp"]), shift(best["mup"])
    claims = [verdict("SP best LR shrinks with width", f"SP shift ({lr_table(best['sp'])})", "≤ −2", fmt(s_sp),
                      decide(lambda s: s <= -2, s_sp)),
              verdict("µP best LR transfers across width", f"µP shift ({lr_table(best['mup'])})", "|shift| ≤ 1",
                      fmt(s_mu), decide(lambda s: abs(s) <= 1, s_mu))]
    return ExperimentReport("mnist1d_width_lr", "", "Width transfer with Adam: SP against µP",
                            "ResMLP with Adam over a width × LR grid, SP and µP.",
                            transfer_figures(out, stages, width, "width"), claims, len(runs.finished),
                            edge_notes(best, {"sp": "SP", "mup": "µP"}))
