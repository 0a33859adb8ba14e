"""An experiment's runs as the reports see them: pulled from MLflow, one per configuration."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..tracking import client_for


@dataclass
class RunRecord:
    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float]
    client: object = field(repr=False)
    _histories: dict = field(default_factory=dict, repr=False)

    @property
    def stage(self) -> str:
        return self.tags.get("stage", self.tags.get("param", "main"))

    def tag(self, key: str) -> float:
        return float(self.tags[key])

    @property
    def lr(self) -> float:
        return self.tag("lr")

    @property
    def diverged(self) -> bool:
        return self.tags.get("diverged") == "true"

    @property
    def final_loss(self) -> float:
        return self.metrics.get("final/train_loss", math.nan)

    def history(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of a per-step metric, sorted by step; empty arrays if never logged."""
        if key not in self._histories:
            points = sorted((m.step, m.value) for m in self.client.get_metric_history(self.run_id, key))
            self._histories[key] = (np.array([p[0] for p in points], dtype=int),
                                    np.array([p[1] for p in points], dtype=float))
        return self._histories[key]


@dataclass
class ExperimentRuns:
    finished: list[RunRecord]
    failed: int  # configurations whose runs all ended FAILED or KILLED (left out of every figure and claim)
    missing: int  # configurations with no run at all
    parent_run_id: str | None  # the latest sweep of this experiment and scale: where the report goes


def load_runs(uri: str, experiment: str, scale: str, hashes: set[str] | None = None) -> ExperimentRuns:
    """Finished runs of ``experiment`` at ``scale``, the latest of each configuration hash; with ``hashes``
    (the experiment's jobs as configured now) only those, so runs of earlier settings are left out."""
    client = client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return ExperimentRuns([], 0, len(hashes or ()), None)
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.scale = '{scale}'", max_results=50000,
                              order_by=["attributes.start_time DESC"])
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    jobs = [r for r in runs if r.data.tags.get("sweep") != "true"
            and (hashes is None or r.data.tags.get("config_hash") in hashes)]
    latest: dict[str, RunRecord] = {}
    for r in jobs:
        key = r.data.tags.get("config_hash", r.info.run_id)
        if r.info.status == "FINISHED" and key not in latest:
            latest[key] = RunRecord(r.info.run_id, dict(r.data.tags), dict(r.data.metrics), client)
    failed = {r.data.tags.get("config_hash", r.info.run_id) for r in jobs
              if r.info.status in ("FAILED", "KILLED")} - set(latest)
    missing = len(hashes - set(latest) - failed) if hashes is not None else 0
    return ExperimentRuns(list(latest.values()), len(failed), missing, parents[0].info.run_id if parents else None)
