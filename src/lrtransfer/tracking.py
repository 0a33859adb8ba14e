"""MLflow as the single record: one run per job, a parent run per sweep, metrics sent in batches.

Everything goes through ``MlflowClient`` with explicit run ids (no fluent global state), so one
process can hold a sweep's parent and a job's run at once and nothing is pickled across jobs.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .errors import TrackingUnavailableError

# Progress bars of artifact transfers would interleave with the training progress bars.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

PARENT_RUN_ENV = "LRTRANSFER_PARENT_RUN_ID"
READS_BASE_KEY = "fslr_reads_base_key"  # tag of a FLeRM run: the fslr_base_key of the base records it read
REUSED_TAG_PREFIX = "reused_job."  # + run id, on a sweep's parent run: a run one of its jobs reused
PARAM_BATCH = 100  # MLflow's REST limit on params per request
METRIC_BATCH = 1000


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when a tracking server does not answer (instead of N failed jobs)."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:
                if r.status != 200:
                    raise TrackingUnavailableError(f"tracking.uri={uri}: /health answered HTTP {r.status}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingUnavailableError(
                f"tracking.uri={uri}: MLflow server is not reachable ({reason}); start one with "
                f"`make mlflow-server` or fix tracking.uri") from None
    elif uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    # The database migrations log a page of INFO lines on first use; they are not news to the user.
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    check_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def artifact_location(uri: str, experiment: str) -> str | None:
    """Beside a SQLite database, so that each database keeps its own artifacts (MLflow's default is
    ./mlruns under whatever the working directory is); a server decides for itself."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri[len("sqlite:///"):]).parent / "mlartifacts" / experiment)
    return None


def _require_active(exp, name: str) -> None:
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise TrackingUnavailableError(f"tracking.experiment={name}: this MLflow experiment is deleted; restore it "
                                       "(`mlflow experiments restore`) or choose another name")


def check_experiment(uri: str, name: str) -> None:
    """One line instead of a failed job per run when ``name`` is a deleted experiment (MLflow keeps the name)."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return  # a database yet to be created has no experiments
    _require_active(client_for(uri).get_experiment_by_name(name), name)


def ensure_experiment(client, name: str, uri: str) -> str:
    """Create the database schema and the experiment once (a fresh SQLite DB races otherwise)."""
    exp = client.get_experiment_by_name(name)
    _require_active(exp, name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(uri, name))
    except Exception:  # another process created it between the lookup and the create
        return client.get_experiment_by_name(name).experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay whole (as their string form)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


class RunTracker:
    """One MLflow run: params, tags, artifacts, and buffered per-step metrics.

    When resuming (``run_id`` given), points at or below the last step already stored for a key are
    dropped, so a job replayed from a checkpoint leaves no duplicated and no missing steps.
    """

    def __init__(self, uri: str, experiment: str, *, run_id: str | None = None, run_name: str | None = None,
                 parent_run_id: str | None = None, tags: dict[str, str] | None = None):
        from mlflow.entities import Metric

        self._metric_cls = Metric
        self.client = client_for(uri)
        self.experiment_id = ensure_experiment(self.client, experiment, uri)
        self._buffer: list = []
        self._logged_until: dict[str, int] = {}
        all_tags = {"git_commit": git_commit(), **(tags or {})}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
            self.run_id = run.info.run_id
        else:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            self._logged_until = self._last_logged_steps()
            self.set_tags({"resumed": "true"})
            if "error" in self.tags():  # the interruption it resumes from is no longer the run's outcome
                self.client.delete_tag(run_id, "error")

    def _last_logged_steps(self) -> dict[str, int]:
        keys = self.client.get_run(self.run_id).data.metrics.keys()
        return {k: max(m.step for m in self.client.get_metric_history(self.run_id, k)) for k in keys}

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), PARAM_BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + PARAM_BATCH])

    def tags(self) -> dict[str, str]:
        return self.client.get_run(self.run_id).data.tags

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])  # one transaction

    def log_metric(self, key: str, value: float, step: int) -> None:
        if step <= self._logged_until.get(key, -1):
            return
        value = float(value)
        if not math.isfinite(value):  # MLflow stores NaN/inf poorly across backends; keep a marker
            value = float("nan") if math.isnan(value) else math.copysign(1e308, value)
        self._buffer.append(self._metric_cls(key, value, int(time.time() * 1000), int(step)))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.log_metric(k, v, step)

    def flush(self) -> None:
        for i in range(0, len(self._buffer), METRIC_BATCH):
            self.client.log_batch(self.run_id, metrics=self._buffer[i:i + METRIC_BATCH])
        self._buffer.clear()

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, data, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        """Flush and close the run; always called, so no run is left RUNNING."""
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, status=status)


def find_finished_run(uri: str, experiment: str, config_hash: str):
    """The latest FINISHED run (diverged ones included) of ``experiment`` with this config hash, or None."""
    client = client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                              filter_string=f"tags.config_hash = '{config_hash}' and attributes.status = 'FINISHED'")
    return runs[0] if runs else None


def finished_config_hashes(uri: str, experiment: str) -> set[str]:
    """Config hashes of every FINISHED run (diverged ones included) of ``experiment`` that a rerun may reuse;
    empty if it has none. A FLeRM run that started before a base record it reads finished is left out: its
    LRs came from another record (a base seed added, or the base rerun since)."""
    client = client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return set()
    runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'", max_results=50000)
    newest_record: dict[str, int] = {}
    for r in runs:
        if r.data.tags.get("fslr_mode") == "record" and "fslr_base_key" in r.data.tags:
            key = r.data.tags["fslr_base_key"]
            newest_record[key] = max(newest_record.get(key, 0), r.info.end_time or 0)
    return {r.data.tags["config_hash"] for r in runs if "config_hash" in r.data.tags
            and newest_record.get(r.data.tags.get(READS_BASE_KEY), 0) <= r.info.start_time}


def experiment_ids(client) -> list[str]:
    """Every active experiment's id (all result pages)."""
    ids, token = [], None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            return ids


def child_runs(client, parent_run_id: str) -> list:
    """The job runs of a sweep, in every experiment (``tracking.experiment`` may itself be swept)."""
    return client.search_runs(experiment_ids(client), filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                              max_results=10000, order_by=["attributes.start_time ASC"])


def job_status(run, reused: bool = False) -> str:
    """FINISHED, DIVERGED (finished with tag diverged=true), FAILED, ...; prefixed REUSED for a run a job reused."""
    status = "DIVERGED" if run.info.status == "FINISHED" and run.data.tags.get("diverged") == "true" else run.info.status
    return f"REUSED {status}" if reused else status


def note_reused_run(client, parent_run_id: str, run) -> None:
    """Tell the sweep ``parent_run_id`` that one of its jobs took the finished ``run`` instead of training."""
    client.set_tag(parent_run_id, REUSED_TAG_PREFIX + run.info.run_id, run.info.run_id)


def reused_runs(client, parent_run_id: str) -> list:
    """The finished runs a sweep's jobs reused (see :func:`note_reused_run`)."""
    tags = client.get_run(parent_run_id).data.tags
    return [client.get_run(v) for k, v in sorted(tags.items()) if k.startswith(REUSED_TAG_PREFIX)]
