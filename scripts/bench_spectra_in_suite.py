"""The cost of the spectra measurements inside `make reproduce`'s own runs, read from MLflow.

For every finished run of the experiments that measure spectra during training: the seconds its measurements
took (the sum of ``spectra/seconds``) against the rest of its wall time (training, building the model, logging),
as a percentage, and the Hessian-vector products per measurement; the median over the LRs and seeds of each
stage and width (or depth).  Issue 3's target is ≤ 25%.  Both times come from the same run, so the ratio holds
whatever machine and launcher recorded it; the runs' tags say which (``processor``, ``torch_threads``).

Usage: python scripts/bench_spectra_in_suite.py [--scale small] [--experiments sc_width,...]
"""

from __future__ import annotations

import argparse
import statistics

from lrtransfer.experiment_plan import job_config_hashes, tracking_target
from lrtransfer.report.runs import RunRecord, final_loss_metric, load_runs

# The experiments with spectra measured during training (the suite's, and the opt-in ResMLP variant of sc_width),
# and the tag their runs are scaled by.
MEASURED = {"sc_width": "width", "sc_ntk": "width", "sc_depth": "depth", "sc_adam": "width",
            "cross_flerm_sharpness": "width", "sc_width_resmlp": "width"}


def run_costs(r: RunRecord) -> tuple[float, float, float] | None:
    """(seconds measuring, seconds otherwise, products per measurement) of one run, None if it measured nothing."""
    seconds, hvps = r.history("spectra/seconds")[1], r.history("spectra/hvps")[1]
    if not len(seconds):
        return None
    info = r.client.get_run(r.run_id).info
    wall = (info.end_time - info.start_time) / 1000
    return seconds.sum(), wall - seconds.sum(), hvps.mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small")
    parser.add_argument("--experiments", default=",".join(MEASURED))
    args = parser.parse_args()
    print("| experiment | stage | scale | runs | measuring / rest of the run (median) | range | HVPs per measurement |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for experiment in args.experiments.split(","):
        uri, name = tracking_target(experiment, args.scale)
        runs = load_runs(uri, name, args.scale, job_config_hashes(experiment, args.scale), final_loss_metric(experiment))
        groups: dict[tuple[str, float], list[tuple[float, float, float]]] = {}
        for r in runs.finished:
            costs = run_costs(r)
            if costs is not None:
                groups.setdefault((r.stage, r.tag(MEASURED[experiment])), []).append(costs)
        for (stage, scale), costs in sorted(groups.items()):
            shares = [100 * measuring / rest for measuring, rest, _ in costs]
            print(f"| {experiment} | {stage} | {MEASURED[experiment]} {scale:g} | {len(costs)} | "
                  f"{statistics.median(shares):.0f}% | {min(shares):.0f}–{max(shares):.0f}% | "
                  f"{statistics.median(h for _, _, h in costs):.1f} |")


if __name__ == "__main__":
    main()
