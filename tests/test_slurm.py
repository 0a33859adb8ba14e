"""Sweeps through a real Slurm (hydra-submitit-launcher), with an MLflow server as the shared record.

Needs a reachable slurmctld (`make test-slurm` or `scripts/slurm_up.sh` brings one up on localhost).
Skipped otherwise, unless LRTRANSFER_REQUIRE_SLURM=1 (CI), where an unreachable Slurm fails them.
"""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import mlflow_client
from lrtransfer import mlflow_server
from test_mlflow_server import free_port


def slurm_problem() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch is not installed (run scripts/slurm_up.sh or make test-slurm)"
    try:
        socket.create_connection(("127.0.0.1", 6817), timeout=1).close()
    except OSError:
        return "no slurmctld on 127.0.0.1:6817 (run scripts/slurm_up.sh or make test-slurm)"
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    return None if r.returncode == 0 and "idle" in r.stdout + "mix" else f"sinfo: {r.stderr.strip() or r.stdout}"


PROBLEM = slurm_problem()
if PROBLEM and os.environ.get("LRTRANSFER_REQUIRE_SLURM") == "1":
    raise RuntimeError(f"LRTRANSFER_REQUIRE_SLURM=1 but Slurm is not usable: {PROBLEM}")
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM))]

SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=10",
         "hydra.launcher.mem_gb=1", "train.progress=false"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm-mlflow")
    url = mlflow_server.start(root, port=free_port())
    yield url
    mlflow_server.stop(root)


def sweep(server, tmp_path, name, *overrides, wait=True):
    cmd = [sys.executable, "-m", "lrtransfer.train", "-m", *SLURM, "scale=smoke", f"tracking.uri={server}",
           f"tracking.experiment={name}", f"data.cache_dir={tmp_path}/cache", f"hydra.sweep.dir={tmp_path}/{name}",
           *overrides]
    if not wait:
        return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)


def runs_of(server, name):
    client = mlflow_client(server)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    return client, parents, [r for r in runs if r.data.tags.get("sweep") != "true"]


def sacct_states(job_ids):
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
                         capture_output=True, text=True, timeout=30).stdout
    return dict(line.split("|")[:2] for line in out.strip().splitlines())


def test_sweep_of_four_jobs_lands_four_finished_runs(server, tmp_path):
    r = sweep(server, tmp_path, "four", "seed=0,1,2,3")
    assert r.returncode == 0, r.stderr[-3000:]
    _, parents, children = runs_of(server, "four")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert len({c.data.tags["slurm_job_id"] for c in children}) == 4  # one array task each
    assert "4 jobs, 4 FINISHED" in r.stdout


def test_job_that_raised_is_failed_even_when_slurm_says_completed(server, tmp_path):
    r = sweep(server, tmp_path, "failing", "data=mnist1d,cifar10")
    assert r.returncode == 1
    _, _, children = runs_of(server, "failing")
    status = {c.data.tags["data"]: c for c in children}
    assert status["mnist1d"].info.status == "FINISHED" and status["cifar10"].info.status == "FAILED"
    assert "dataset 'cifar10' is not available" in status["cifar10"].data.tags["error"]
    slurm = sacct_states([status["cifar10"].data.tags["slurm_job_id"]])
    assert set(slurm.values()) == {"COMPLETED"}, slurm  # the job itself returned normally
    assert "1 FAILED" in r.stdout and "FAILED" in r.stdout


LONG = ["model.width=16", "model.depth=1", "train.steps=4000", "train.batch_size=16", "train.eval_every=1000",
        "train.final_window=20", "tracking.flush_every=50"]


def test_preempted_job_checkpoints_requeues_and_resumes_the_same_run(server, tmp_path):
    proc = sweep(server, tmp_path, "preempt", *LONG, "seed=5", wait=False)
    client, run = mlflow_client(server), None
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until the job is running and has logged some steps
        exp = client.get_experiment_by_name("preempt")
        runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweep") != "true"] if exp else []
        if runs and "slurm_job_id" in runs[0].data.tags and len(
                client.get_metric_history(runs[0].info.run_id, "train/loss")) >= 200:
            run = runs[0]
            break
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.5)
    assert run is not None, "the job never started logging"
    job = run.data.tags["slurm_job_id"]
    # The signal Slurm sends signal_delay_s before a time limit (or a preemption).
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]

    resumed = client.get_run(run.info.run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.tags["requeued"] == "1"
    assert "requeued" in out  # the summary's column
    ref = sweep(server, tmp_path, "reference", *LONG, "seed=5")
    assert ref.returncode == 0, ref.stderr[-3000:]
    _, _, (reference,) = runs_of(server, "reference")
    steps = lambda r: sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, "train/loss"))
    history = steps(resumed)
    assert [s for s, _ in history] == list(range(4000))  # no duplicated and no missing steps
    assert history == steps(reference)
    for key in ("final/train_loss", "final/eval_loss"):
        assert resumed.data.metrics[key] == reference.data.metrics[key]
