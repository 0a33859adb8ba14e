"""``python -m lrtransfer.report``: build every experiment's report from MLflow, and the index.

Each report (figures, index.html, claims.json) goes to ``reports/<experiment>/`` and, as artifacts
under ``report/``, to the experiment's latest sweep parent run, so it can be browsed in the MLflow UI.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..experiment_plan import job_config_hashes, stages_and_grid, tracking_target
from ..paths import PROJECT_DIR
from ..tracking import client_for
from . import cross, flerm
from . import super_consistency as sc
from .html import Claim, ExperimentReport, read_report, write_experiment_report, write_index
from .runs import ExperimentRuns, final_loss_metric, hardware_note, load_runs, setup_table, single_seed_views

Builder = Callable[[ExperimentRuns, Path], ExperimentReport]
EXPERIMENTS: dict[str, Builder] = {
    "sc_width": sc.sc_width,
    "sc_ntk": sc.sc_ntk,
    "sc_linear": sc.sc_linear,
    "sc_depth": sc.sc_depth,
    "sc_adam": sc.sc_adam,
    "flerm_width": flerm.flerm_width,
    "flerm_depth": flerm.flerm_depth,
    "flerm_transformer": flerm.flerm_transformer,
    "flerm_init_scale": flerm.flerm_init_scale,
    "fslr_dynamics": flerm.fslr_dynamics,
    "cross_flerm_sharpness": cross.cross_flerm_sharpness,
    "cross_mup_fslr": cross.cross_mup_fslr,
    "mnist1d_width_lr": flerm.mnist1d_width_lr,
    "sc_width_resmlp": sc.sc_width_resmlp,
}
# What `make reproduce` runs, in this order: both papers' figures and the two joining experiments (the others
# are opt-in, by EXPERIMENTS=...).
SUITE = [name for name in EXPERIMENTS if name not in ("mnist1d_width_lr", "sc_width_resmlp")]


def build_report(experiment: str, scale: str, root: Path, hashes: set[str] | None = None) -> ExperimentReport:
    """``hashes``: the experiment's planned job config hashes, if the caller has them already."""
    uri, name = tracking_target(experiment, scale)
    runs = load_runs(uri, name, scale, job_config_hashes(experiment, scale) if hashes is None else hashes,
                     final_loss_metric(experiment))
    out = root / experiment
    out.mkdir(parents=True, exist_ok=True)
    report = EXPERIMENTS[experiment](runs, out)
    report.scale, report.setup = scale, setup_table(runs.finished, list(stages_and_grid(experiment, scale)[0]))
    read_each_seed_alone(report, EXPERIMENTS[experiment], runs)
    if runs.finished:
        report.notes.append(hardware_note(runs.finished))
    if runs.failed:
        report.notes.append(f"{runs.failed} configuration(s) only have runs that FAILED or were killed; "
                            "they are left out (see MLflow).")
    if runs.missing:
        report.notes.append(f"{runs.missing} configuration(s) of the experiment have no run in MLflow yet.")
    write_experiment_report(report, out)
    if runs.parent_run_id:
        client_for(uri).log_artifacts(runs.parent_run_id, str(out), "report")
    return report


def read_each_seed_alone(report: ExperimentReport, builder: Builder, runs: ExperimentRuns) -> None:
    """Fill ``by_seed`` of each claim that reads a seed mean: its verdict on every seed's runs alone.  A claim
    whose metric and measured value come out the same on every seed alone reads no multi-seed configuration
    and keeps it empty; a seed that the claim's configurations did not run (its view has none of them: e.g.
    sc_width's LR grids run seeds 0-1, its sharpness stages 0-3) is left out.  (The views' figures are drawn
    and thrown away.)"""
    views: dict[str, list[Claim]] = {}
    for seed, view in single_seed_views(runs.finished).items():
        with tempfile.TemporaryDirectory() as scratch:
            views[seed] = builder(replace(runs, finished=view), Path(scratch)).claims
    for i, claim in enumerate(report.claims):
        # claims of one name pair up in order (the i-th of that name in the report with the i-th in a view)
        nth = sum(c.claim == claim.claim for c in report.claims[:i])
        alone = {seed: ([c for c in claims if c.claim == claim.claim][nth:] or [None])[0]
                 for seed, claims in views.items()}
        if claim.status != "MISSING":
            alone = {seed: c for seed, c in alone.items() if c is None or c.status != "MISSING"}
        if any(c is None or (c.metric, c.measured) != (claim.metric, claim.measured) for c in alone.values()):
            claim.by_seed = {seed: c.status if c else "MISSING" for seed, c in alone.items()}


def earlier_reports(root: Path, scale: str, skip: set[str]) -> list[ExperimentReport]:
    """Reports of other experiments already under ``root`` at this scale, so a partial rebuild keeps
    the index complete."""
    found = [read_report(p) for p in sorted(root.glob("*/claims.json")) if p.parent.name not in skip]
    return [r for r in found if r.scale == scale and r.experiment in EXPERIMENTS]


def build_reports(experiments: list[str], scale: str, root: Path,
                  planned: dict[str, set[str]] | None = None) -> int:
    """Write every report and the index, print the claims; returns the number of hard claims that did not
    pass (FAIL, or UNDETERMINED because an optimum lies on the edge of its LR grid).

    ``planned``: {experiment: its planned job config hashes}, where the caller computed them already."""
    reports = []
    for experiment in experiments:
        if experiment not in EXPERIMENTS:
            print(f"warning: no report for experiment={experiment!r}", file=sys.stderr)
            continue
        reports.append(build_report(experiment, scale, root, (planned or {}).get(experiment)))
    indexed = reports + earlier_reports(root, scale, {r.experiment for r in reports})
    write_index(sorted(indexed, key=lambda r: list(EXPERIMENTS).index(r.experiment)), root)
    print(f"\nclaims at scale={scale}:")
    failures = 0
    for report in reports:
        for c in report.claims:
            seeds = f" [each seed alone: {c.seed_note}]" if c.by_seed else ""
            print(f"  {c.status:<12} {report.experiment:<22} {c.claim}: {c.measured} (want {c.threshold}){seeds}")
            failures += c.status in ("FAIL", "UNDETERMINED") and not c.soft
    print("summary: " + ", ".join(f"{k} {sum(r.summary[k] for r in reports)}" for k in reports[0].summary)
          if reports else "summary: no reports")
    seeded = [(r.experiment, c) for r in reports for c in r.claims if c.by_seed]
    if seeded:
        fragile = [f"{e} {c.claim.split(':')[0]}" for e, c in seeded
                   if any(_verdict(s) != _verdict(c.status) for s in c.by_seed.values())]
        print(f"seed means: {len(seeded) - len(fragile)} of {len(seeded)} verdicts read on seed means hold on "
              f"every seed alone" + (f"; not {', '.join(fragile)}" if fragile else ""))
    return failures


def _verdict(status: str) -> str:
    """PASS or FAIL regardless of softness (MISSING and UNDETERMINED stand as they are)."""
    return status.removeprefix("SOFT-")


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m lrtransfer.report", description=__doc__)
    ap.add_argument("--experiments", default="all", help=f"comma-separated, or all: {','.join(SUITE)}")
    ap.add_argument("--scale", default="small", choices=["smoke", "small", "paper"])
    ap.add_argument("--out", type=Path, default=PROJECT_DIR / "reports")
    args = ap.parse_args()
    os.chdir(PROJECT_DIR)  # the default tracking URI is relative to the working directory
    experiments = SUITE if args.experiments == "all" else args.experiments.split(",")
    unknown = [e for e in experiments if e not in EXPERIMENTS]
    if unknown:
        print(f"error: --experiments: no report for {unknown[0]!r}; choose from {', '.join(EXPERIMENTS)}", file=sys.stderr)
        return 2
    build_reports(experiments, args.scale, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
