"""`make reproduce`: run each experiment's stages as sweeps, then build the reports from MLflow.

Usage: python -m lrtransfer.reproduce --scale small --launcher parallel --experiments all

An experiment's ``stages`` (conf/experiment/<name>.yaml) run in order, each a Hydra multirun over the
experiment's grid with the stage's overrides on top, so FLeRM's base records exist before the runs
that read them, and a stage that runs at an earlier stage's best LR finds it in MLflow.  Jobs run with
``reuse=true``: a rerun takes finished runs from MLflow instead of training them again, and a stage whose
every job (by configuration hash) has a finished run is not launched at all.  Every job of every experiment
is composed and validated before anything runs (with the grid's LRs standing in for the ones an earlier
stage's results will name).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from . import train
from .config import register_configs
from .errors import one_line
from .experiment_plan import (lr_rule, planning_stages, resolve_stage, stage_config_hashes, stage_overrides,
                              stages_and_grid, tracking_target)
from .paths import CONF_DIR, PROJECT_DIR
from .precheck import first_value, precheck
from .preemption import Terminated, raise_if_terminated, terminate_as_exit
from .report.__main__ import SUITE, build_reports
from .tracking import finished_config_hashes


def check_launch(first_stage_argv: list[str]) -> None:
    """Hydra's side of an experiment's sweeps (launcher, sweeper) and the tracking server, checked on the
    first job of its first stage; every job's own configuration is validated by ``stage_config_hashes``."""
    precheck([first_value(a) for a in first_stage_argv if a != "-m"])


def stage_argv(experiment: str, scale: str, launcher: str, stage: str, overrides: list[str],
               sweep_dir: Path, jobs: int | None = None) -> list[str]:
    # Every job was composed and validated while planning: the prechecked sweeper does not compose
    # each job a second time before launching it.
    argv = ["-m", f"experiment={experiment}", f"scale={scale}", "reuse=true", f"hydra.sweep.dir={sweep_dir}",
            "hydra/sweeper=prechecked", *stage_overrides(stage, overrides)]
    if launcher != "local":  # e.g. slurm = conf/hydra/launcher/slurm.yaml with the cluster profile
        argv.append(f"hydra/launcher={launcher}")
    if jobs is not None:
        argv.append(f"hydra.launcher.n_jobs={jobs}")
    return argv


def run_stage(argv: list[str]) -> bool:
    """One stage's sweep, in this process (imports and MLflow set-up are paid once, not per stage);
    -> whether it failed. A failed stage is reported and the rest go on."""
    try:
        train.main(argv, checked=True)
    except Terminated:
        raise  # SIGTERM stops the suite, not just the job it hit
    except SystemExit as exc:
        return exc.code not in (0, None)
    except Exception as exc:  # the launcher itself failed (e.g. Slurm unreachable)
        print(f"error: stage failed: {one_line(exc)}", file=sys.stderr)
        return True
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", default="small", choices=["smoke", "small", "paper"])
    ap.add_argument("--launcher", default="parallel",
                    help="parallel (jobs in worker processes, one per core), local (in-process, one job at a time), "
                         "slurm (conf/hydra/launcher/slurm.yaml), submitit_local, ...")
    ap.add_argument("--jobs", type=int, help="parallel launcher: jobs at a time (default: one per core, or "
                                             "one at a time where CUDA is available: the jobs would share one GPU)")
    ap.add_argument("--experiments", default="all", help=f"comma-separated, or all: {','.join(SUITE)}")
    ap.add_argument("--outputs", type=Path, default=PROJECT_DIR / "outputs", help="where the sweeps' folders go")
    ap.add_argument("--reports", type=Path, default=PROJECT_DIR / "reports")
    args = ap.parse_args()
    os.chdir(PROJECT_DIR)  # the default tracking URI is relative to the working directory
    register_configs()
    if args.jobs is not None and (args.launcher != "parallel" or args.jobs < 1):
        print(f"error: --jobs={args.jobs}: a positive number of jobs at a time, for --launcher parallel only",
              file=sys.stderr)
        return 2
    if args.jobs is None and args.launcher == "parallel" and torch.cuda.is_available():
        args.jobs = 1
    experiments = SUITE if args.experiments == "all" else args.experiments.split(",")
    unknown = [e for e in experiments if not (CONF_DIR / "experiment" / f"{e}.yaml").exists()]
    if unknown:
        print(f"error: experiment={unknown[0]!r} has no file conf/experiment/{unknown[0]}.yaml", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    plan, planned = [], {}
    try:
        for experiment in experiments:
            stages, grid = stages_and_grid(experiment, args.scale)
            folder = args.outputs / "multirun" / f"{experiment}-{args.scale}-{stamp}"
            first, overrides = next(iter(stages.items()))
            check_launch(stage_argv(experiment, args.scale, args.launcher, first, overrides, folder / first, args.jobs))
            hashes = stage_config_hashes(experiment, args.scale, planning_stages(stages), grid)  # validates every job
            planned[experiment] = set()
            target = tracking_target(experiment, args.scale)
            plan += [(experiment, stage, overrides, grid, hashes[stage], target, folder / stage)
                     for stage, overrides in stages.items()]
    except Exception as exc:  # composition and validation errors are the user's input
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2

    status, started, resolved = 0, time.time(), {e: {} for e in experiments}
    for i, (experiment, stage, overrides, grid, hashes, target, folder) in enumerate(plan, 1):
        raise_if_terminated()
        print(f"\n== [{i}/{len(plan)}] {experiment}: stage {stage} ({time.time() - started:.0f} s elapsed)", flush=True)
        rule = lr_rule(overrides)
        if rule is not None:
            overrides = resolve_stage(experiment, args.scale, overrides, resolved[experiment], grid)
            if overrides is None:
                print(f"error: stage {stage} skipped: stage {rule.stage} has no best LR (no finished run, or every "
                      "run diverged)", file=sys.stderr, flush=True)
                status = 1
                continue
            hashes = stage_config_hashes(experiment, args.scale, {stage: overrides}, grid)[stage]
            print(f"{rule} = {overrides[-1].split('=', 1)[1]}", flush=True)
        resolved[experiment][stage] = overrides
        planned[experiment] |= hashes
        if hashes <= finished_config_hashes(*target):
            print(f"all {len(hashes)} jobs REUSED: MLflow has a finished run of each configuration", flush=True)
            continue
        argv = stage_argv(experiment, args.scale, args.launcher, stage, overrides, folder, args.jobs)
        print("$ python -m lrtransfer.train " + " ".join(argv), flush=True)
        status |= run_stage(argv)
    raise_if_terminated()
    print(f"\nsweeps finished in {time.time() - started:.0f} s; building reports", flush=True)
    failed_claims = build_reports(experiments, args.scale, args.reports, planned)
    print(f"\nreproduce finished in {time.time() - started:.0f} s; reports in {args.reports / 'index.html'}")
    return 1 if status else 0 if args.scale == "smoke" or not failed_claims else 3


if __name__ == "__main__":
    try:
        with terminate_as_exit():  # SIGTERM anywhere ends in Terminated: runs and sweeps are closed on the way out
            sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C: the runs and sweeps were closed on the way out, as for SIGTERM
        print("\ninterrupted: finished runs stay in MLflow and a rerun reuses them; the interrupted ones are "
              "recorded as KILLED", file=sys.stderr)
        sys.exit(130)
