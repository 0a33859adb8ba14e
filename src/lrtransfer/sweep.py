"""Hydra callback: a parent MLflow run per multirun sweep, and a per-job summary at the end.

``on_multirun_start`` runs on the submitting side before any job: it creates the database and the
experiment (avoiding SQLite's first-use race) and the parent run, whose id reaches the jobs through
an environment variable (inherited by in-process, submitit-local and Slurm jobs alike, and set per job
for the parallel launcher's long-lived workers).
"""

from __future__ import annotations

import os
import sys

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

from .config import register_configs
from .errors import one_line
from .tracking import PARENT_RUN_ENV, RunTracker, child_runs, job_status, reused_runs


def summary_table(jobs: list[tuple[object, str]]) -> str:
    """One row per (run, status) of a sweep's jobs."""
    rows = [("run", "status", "requeued", "final/train_loss", "slurm job", "run_id")]
    for r, status in jobs:
        loss = r.data.metrics.get("final/train_loss")
        rows.append((r.info.run_name, status, r.data.tags.get("requeued", "0"),
                     "-" if loss is None else f"{loss:.4g}", r.data.tags.get("slurm_job_id", "-"), r.info.run_id))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def close_orphans(client, runs, stopped: bool = False) -> None:
    """Runs still open when the launcher has returned belong to jobs that died without Python
    cleanup (killed, out of memory, node failure): record them as FAILED rather than leave them open.
    ``stopped``: the user stopped the sweep (Ctrl-C, SIGTERM), which took its local jobs down: KILLED."""
    reason = ("the sweep was stopped (Ctrl-C or SIGTERM) while this job ran" if stopped
              else "the job ended without closing its run (killed?)")
    for r in runs:
        if r.info.status in ("RUNNING", "SCHEDULED"):
            client.set_tag(r.info.run_id, "error", reason)
            client.set_terminated(r.info.run_id, status="KILLED" if stopped else "FAILED")


_open_sweeps: list["SweepCallback"] = []


def close_open_sweeps(stopped: bool = False) -> None:
    """Close parents whose sweep ended without ``on_multirun_end`` (the launcher raised; ``stopped``: because
    the user stopped it)."""
    while _open_sweeps:
        _open_sweeps.pop().finish(aborted=True, stopped=stopped)


# Launchers whose jobs cannot outlive the sweep: in-process, and joblib's workers, which it kills (SIGKILL)
# when the sweep is aborted. Cluster jobs can.
LOCAL_LAUNCHERS = ("BasicLauncher", "JoblibLauncher")


class SweepCallback(Callback):
    def __init__(self) -> None:
        register_configs()
        self.parent: RunTracker | None = None
        self.local_jobs = False

    # Hydra turns a callback's exception into a warning and goes on (launching every job without a parent
    # run, or exiting 0 with the parent open); SystemExit gets through, so failures end the sweep in one line.
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            self._start(config)
        except Exception as exc:
            print(f"error: cannot record the sweep in MLflow: {one_line(exc)}", file=sys.stderr)
            sys.exit(1)

    def _start(self, config: DictConfig) -> None:
        if config.tracking.parent_run_id:
            os.environ[PARENT_RUN_ENV] = config.tracking.parent_run_id
            return
        sweep_dir = config.hydra.sweep.dir
        self.local_jobs = str(config.hydra.launcher._target_).endswith(LOCAL_LAUNCHERS)
        self.parent = RunTracker(config.tracking.uri, config.tracking.experiment,
                                 run_name=f"sweep-{os.path.basename(str(sweep_dir))}",
                                 tags={"sweep": "true", "sweep_dir": str(sweep_dir), "scale": str(config.scale),
                                       "overrides": " ".join(config.hydra.overrides.task)})
        os.environ[PARENT_RUN_ENV] = self.parent.run_id
        # Worker processes that outlive one sweep (hydra/launcher=parallel, joblib's) keep the environment
        # they started with; Hydra sets hydra.job.env_set around each job, so every job gets its own sweep's id.
        with read_write(config.hydra.overrides):
            config.hydra.overrides.hydra.append(f"++hydra.job.env_set.{PARENT_RUN_ENV}='{self.parent.run_id}'")
        _open_sweeps.append(self)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.parent is None:
            return
        _open_sweeps.remove(self)
        try:
            self.finish()
        except Exception as exc:
            try:
                self.parent.finish("FAILED")
            except Exception:
                pass  # MLflow itself is gone; the message below says so
            print(f"error: the sweep's record in MLflow is incomplete: {one_line(exc)}", file=sys.stderr)
            sys.exit(1)

    def finish(self, aborted: bool = False, stopped: bool = False) -> None:
        """Close orphaned job runs and the parent, tag job counts, print the per-job summary.

        ``aborted``: the launcher raised. Cluster jobs may still be running, so their runs are left be; the
        runs of local jobs (killed with the launcher) are closed. ``stopped``: by Ctrl-C or SIGTERM, so the
        parent and those runs end KILLED, not FAILED."""
        if not aborted or self.local_jobs:
            close_orphans(self.parent.client, child_runs(self.parent.client, self.parent.run_id), stopped)
        client = self.parent.client
        jobs = [(r, job_status(r)) for r in child_runs(client, self.parent.run_id)]
        jobs += [(r, job_status(r, reused=True)) for r in reused_runs(client, self.parent.run_id)]
        counts: dict[str, int] = {}
        for _, status in jobs:
            counts[status] = counts.get(status, 0) + 1
        self.parent.set_tags({f"jobs_{k.lower().replace(' ', '_')}": v for k, v in counts.items()})
        self.parent.finish("KILLED" if stopped else "FAILED" if aborted else "FINISHED")
        os.environ.pop(PARENT_RUN_ENV, None)
        print(f"\nsweep {self.parent.run_id}: {len(jobs)} jobs, "
              + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        print(summary_table(jobs))
        failed = counts.get("FAILED", 0) + counts.get("KILLED", 0)
        if failed and not aborted:
            print(f"error: {failed} job(s) did not finish; see the runs above", file=sys.stderr)
            sys.exit(1)
