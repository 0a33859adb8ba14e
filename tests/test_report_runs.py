"""The runs a report is built from: the latest finished run of each configuration it plans, nothing else."""

from __future__ import annotations

import time

from mlflow.tracking import MlflowClient

from lrtransfer.report.runs import load_runs


def make_run(client, exp_id, status, **tags):
    run = client.create_run(exp_id, tags={"scale": "small", **tags})
    client.set_terminated(run.info.run_id, status)
    time.sleep(0.01)  # distinct start times: "latest" is by start time
    return run.info.run_id


def test_only_planned_configurations_latest_run_each(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("exp", artifact_location=str(tmp_path / "artifacts"))
    parent = make_run(client, exp_id, "FINISHED", sweep="true")
    make_run(client, exp_id, "FINISHED", config_hash="a")
    newer = make_run(client, exp_id, "FINISHED", config_hash="a")
    make_run(client, exp_id, "FINISHED", config_hash="stale")  # earlier settings of the experiment
    make_run(client, exp_id, "FAILED", config_hash="c")
    make_run(client, exp_id, "FINISHED", config_hash="b", scale="smoke")  # another scale

    runs = load_runs(uri, "exp", "small", {"a", "b", "c", "d"})
    assert [r.run_id for r in runs.finished] == [newer]
    assert (runs.failed, runs.missing, runs.parent_run_id) == (1, 2, parent)  # c failed; b (at small) and d never ran

    unplanned = load_runs(uri, "exp", "small")
    assert {r.tags["config_hash"] for r in unplanned.finished} == {"a", "stale"}
    assert load_runs(uri, "nothing", "small", {"a"}).missing == 1
