"""The training loop end to end against a temporary MLflow database."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import mlflow_client
from lrtransfer.trainer import run_training

ENV = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_short_run_logs_expected_metrics(make_cfg, tracking_uri, tmp_path):
    cfg = make_cfg("train.steps=12", "train.eval_every=5", "tracking.experiment=unit")
    result = run_training(cfg, tmp_path / "job")
    client = mlflow_client(tracking_uri)
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["diverged"] == "false"
    assert [s for s, _ in history(client, run.info.run_id, "train/loss")] == list(range(12))
    assert [s for s, _ in history(client, run.info.run_id, "eval/loss")] == [0, 5, 10]
    train = [v for _, v in history(client, run.info.run_id, "train/loss")]
    assert run.data.metrics["final/train_loss"] == pytest.approx(sum(train[-3:]) / 3)
    assert {"final/eval_loss", "final/diverged"} <= set(run.data.metrics)
    assert run.data.params["model.width"] == "128" and run.data.params["optim.name"] == "adam"
    for tag in ("git_commit", "model", "param", "width", "depth", "lr", "seed"):
        assert tag in run.data.tags
    # the hardware the last bits depend on
    assert run.data.tags["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and run.data.tags["processor"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "config")}
    assert artifacts == {"config/composed.yaml", "config/resolved.yaml"}


def test_final_fixed_batch_train_loss_is_the_final_models_loss_on_the_same_examples(make_cfg, tracking_uri, tmp_path):
    from lrtransfer.data import load_data
    from lrtransfer.trainer import build_model, evaluate, fixed_train_batch
    cfg = make_cfg("train.steps=12", "train.checkpoint_every=12", "train.eval_batch_size=40")
    result = run_training(cfg, tmp_path / "job")
    data = load_data(cfg.data)
    model = build_model(cfg, data)
    (checkpoint,) = (tmp_path / "job" / "checkpoint").glob("*/last.pt")
    model.load_state_dict(torch.load(checkpoint, weights_only=False)["model"])
    fixed = fixed_train_batch(data, 40)
    logged = mlflow_client(tracking_uri).get_run(result["run_id"]).data.metrics["final/fixed_train_loss"]
    assert logged == pytest.approx(evaluate(model, data.loss, *fixed), rel=1e-6)
    assert logged != pytest.approx(evaluate(model, data.loss, *data.eval_batch(40)), rel=1e-6)  # train, not test data
    assert torch.equal(fixed_train_batch(data, 40)[0], fixed[0])  # every run (any seed) is judged on these examples


def test_same_seed_same_history_and_seed_matters(make_cfg, tracking_uri, tmp_path):
    client = mlflow_client(tracking_uri)
    runs = [run_training(make_cfg(f"seed={s}", "train.steps=8"), tmp_path / str(i))["run_id"]
            for i, s in enumerate([3, 3, 4])]
    h = [history(client, r, "train/loss") for r in runs]
    assert h[0] == h[1] and h[0] != h[2]


@pytest.mark.parametrize("overrides", [
    ("model=transformer", "data=shakespeare", "model.width=32", "data.seq_len=16"),
    ("model=linear", "data=teacher", "optim=sgd", "train.batch_size=256"),
    ("param=depth_mup", "optim=sgd", "model.depth=8", "model.layers_per_block=2"),
])
def test_every_model_trains(make_cfg, tmp_path, overrides):
    result = run_training(make_cfg(*overrides), tmp_path)
    assert result["status"] == "FINISHED" and result["steps"] == 6


def test_diverged_run_is_recorded(make_cfg, tracking_uri, tmp_path):
    result = run_training(make_cfg("optim.lr=1e4", "train.steps=50", "train.divergence_loss=10"), tmp_path)
    run = mlflow_client(tracking_uri).get_run(result["run_id"])
    assert result["diverged"] and run.info.status == "FINISHED"
    assert run.data.tags["diverged"] == "true"
    assert run.data.metrics["final/train_loss"] == 10.0 and run.data.metrics["final/diverged"] == 1.0
    assert run.data.metrics["final/fixed_train_loss"] == 10.0


def train_cli(*args, cwd, timeout=240, **popen):
    cmd = [sys.executable, "-m", "lrtransfer.train", *args]
    if popen:
        return subprocess.Popen(cmd, cwd=cwd, env=ENV, **popen)
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def test_sweep_goes_on_past_diverged_and_failed_jobs(tracking_uri, tmp_path):
    r = train_cli("-m", "scale=smoke", f"tracking.uri={tracking_uri}", "tracking.experiment=sweep",
                  f"data.cache_dir={tmp_path}/cache", "optim.lr=0.001,10000", "data=mnist1d,cifar10",
                  f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-2000:]  # a failed job makes the sweep exit non-zero, at the end
    client = mlflow_client(tracking_uri)
    exp = client.get_experiment_by_name("sweep")
    runs = client.search_runs([exp.experiment_id])
    parents = [x for x in runs if x.data.tags.get("sweep") == "true"]
    children = [x for x in runs if x.data.tags.get("sweep") != "true"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    status = sorted((c.data.tags["data"], c.data.tags["lr"], c.info.status, c.data.tags.get("diverged"))
                    for c in children)
    assert status == [("cifar10", "0.001", "FAILED", None), ("cifar10", "10000.0", "FAILED", None),
                      ("mnist1d", "0.001", "FINISHED", "false"), ("mnist1d", "10000.0", "FINISHED", "true")]
    assert "4 jobs" in r.stdout and "1 DIVERGED" in r.stdout and "2 FAILED" in r.stdout
    assert "dataset 'cifar10' is not available" in r.stderr


def test_sweep_summary_counts_jobs_in_every_experiment_and_reused_ones(tracking_uri, tmp_path):
    args = ["-m", "scale=smoke", f"tracking.uri={tracking_uri}", "tracking.experiment=one,two", "reuse=true",
            "train.steps=3", f"data.cache_dir={tmp_path}/cache"]
    first = train_cli(*args, f"hydra.sweep.dir={tmp_path}/first", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "2 jobs, 2 FINISHED" in first.stdout
    again = train_cli(*args, f"hydra.sweep.dir={tmp_path}/again", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 jobs, 2 REUSED FINISHED" in again.stdout
    client = mlflow_client(tracking_uri)
    parents = client.search_runs([client.get_experiment_by_name("default").experiment_id],
                                 order_by=["attributes.start_time DESC"])
    assert parents[0].data.tags["jobs_reused_finished"] == "2"


@pytest.mark.parametrize("sweeper, compositions", [("basic", 4), ("prechecked", 2)])
def test_prechecked_sweeper_composes_each_job_once(sweeper, compositions, tracking_uri, tmp_path, monkeypatch):
    """reproduce launches its prechecked stages with hydra/sweeper=prechecked: one composition per job,
    where Hydra's basic sweeper composes every job twice (to validate the batch, then to launch it)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    from lrtransfer import train

    compose, calls = ConfigLoaderImpl.load_sweep_config, []
    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", lambda *a, **k: calls.append(1) or compose(*a, **k))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    try:
        train.main(["-m", "scale=smoke", f"tracking.uri={tracking_uri}", "tracking.experiment=sweeper",
                    f"data.cache_dir={tmp_path}/cache", "train.steps=3", "optim.lr=0.001,0.002",
                    f"hydra/sweeper={sweeper}", f"hydra.sweep.dir={tmp_path}/sweep"], checked=True)
    except SystemExit as exc:
        assert exc.code in (0, None)
    client = mlflow_client(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("sweeper").experiment_id])
    jobs = sorted((r.data.tags["lr"], r.info.status) for r in runs if r.data.tags.get("sweep") != "true")
    assert jobs == [("0.001", "FINISHED"), ("0.002", "FINISHED")]
    assert len(calls) == compositions


def test_parallel_sweeps_in_one_process_give_each_job_its_own_sweeps_parent(tracking_uri, tmp_path, monkeypatch):
    """reproduce runs its stages one after another in one process; joblib's workers outlive a sweep, so an
    id they inherited from the first sweep's environment would file the second sweep's jobs under it."""
    from lrtransfer import train

    monkeypatch.setattr(sys, "argv", list(sys.argv))
    for sweep, lrs in (("first", "0.001,0.002"), ("second", "0.003,0.004")):
        try:
            train.main(["-m", "scale=smoke", f"tracking.uri={tracking_uri}", "tracking.experiment=parallel",
                        f"data.cache_dir={tmp_path}/cache", "train.steps=3", f"optim.lr={lrs}", "train.progress=false",
                        "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path}/{sweep}"],
                       checked=True)
        except SystemExit as exc:
            assert exc.code in (0, None)
    client = mlflow_client(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("parallel").experiment_id])
    parents = {r.info.run_id: r.data.tags["sweep_dir"].rsplit("/", 1)[-1] for r in runs if r.data.tags.get("sweep") == "true"}
    jobs = sorted((r.data.tags["lr"], parents[r.data.tags["mlflow.parentRunId"]], r.info.status)
                  for r in runs if r.data.tags.get("sweep") != "true")
    assert jobs == [("0.001", "first", "FINISHED"), ("0.002", "first", "FINISHED"),
                    ("0.003", "second", "FINISHED"), ("0.004", "second", "FINISHED")]
    from joblib import cpu_count  # joblib shares the cores among the workers' threads, and the runs say so
    assert {r.data.tags.get("torch_threads") for r in runs if r.data.tags.get("sweep") != "true"} == \
        {str(max(1, cpu_count() // 2))}


@pytest.mark.parametrize("local_jobs, stopped, parent, job_status", [
    (True, False, "FAILED", "FAILED"), (False, False, "FAILED", "RUNNING"), (True, True, "KILLED", "KILLED"),
    (False, True, "KILLED", "RUNNING")])
def test_an_aborted_sweep_closes_the_open_runs_of_jobs_that_cannot_outlive_it(tracking_uri, local_jobs, stopped,
                                                                              parent, job_status):
    """joblib SIGKILLs its workers when the sweep is aborted: their runs would stay RUNNING.  Slurm jobs may
    still be running and closing their runs themselves.  A sweep the user stopped (Ctrl-C, SIGTERM) is KILLED,
    not FAILED, and so are the local jobs it took down."""
    from lrtransfer.sweep import SweepCallback
    from lrtransfer.tracking import RunTracker

    callback = SweepCallback()
    callback.parent, callback.local_jobs = RunTracker(tracking_uri, "aborted", tags={"sweep": "true"}), local_jobs
    job = RunTracker(tracking_uri, "aborted", parent_run_id=callback.parent.run_id)
    callback.finish(aborted=True, stopped=stopped)
    client = mlflow_client(tracking_uri)
    assert client.get_run(callback.parent.run_id).info.status == parent
    job_run = client.get_run(job.run_id)
    assert job_run.info.status == job_status
    if job_status != "RUNNING":
        assert job_run.data.tags["error"] == ("the sweep was stopped (Ctrl-C or SIGTERM) while this job ran" if stopped
                                              else "the job ended without closing its run (killed?)")


def wait_for_checkpoint(job_dir: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not list(job_dir.glob("checkpoint/*/last.pt")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)


def test_jobs_sharing_a_checkpoint_dir_resume_only_their_own_runs(make_cfg, tracking_uri, tmp_path):
    """A checkpoint of another configuration in the same directory is not this job's: it starts its own run."""
    shared = [f"train.checkpoint_dir={tmp_path}/ckpt", "train.checkpoint_every=2", "train.steps=6"]
    first = run_training(make_cfg("optim.lr=0.001", *shared), tmp_path / "a")
    second = run_training(make_cfg("optim.lr=0.002", *shared), tmp_path / "b")
    client = mlflow_client(tracking_uri)
    assert first["run_id"] != second["run_id"] and second["steps"] == 6
    assert "resumed" not in client.get_run(second["run_id"]).data.tags
    again = run_training(make_cfg("optim.lr=0.001", *shared), tmp_path / "c")  # the same configuration: resumed
    assert again["run_id"] == first["run_id"]
    assert len(list((tmp_path / "ckpt").glob("*/last.pt"))) == 2


def test_sigterm_ends_the_run_killed_and_a_rerun_resumes_it(tracking_uri, tmp_path):
    """SIGTERM's default action would kill the process with its run still RUNNING."""
    common = ["scale=smoke", "model.width=16", "model.depth=1", "train.steps=3000", "train.batch_size=16",
              "train.checkpoint_every=200", f"data.cache_dir={tmp_path}/cache", f"tracking.uri={tracking_uri}",
              f"hydra.run.dir={tmp_path}/job"]
    job = train_cli(*common, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_checkpoint(tmp_path / "job", job)
    assert job.poll() is None, "the run finished before it could be stopped; make it longer"
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=60) != 0
    client = mlflow_client(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("default").experiment_id])
    assert run.info.status == "KILLED" and run.data.tags["error"].startswith("Terminated")
    r = train_cli(*common, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    resumed = client.get_run(run.info.run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.tags["resumed"] == "true"
    assert "error" not in resumed.data.tags  # the interruption is no longer the run's outcome


def test_a_combination_rejected_inside_a_sweep_is_recorded_failed(tracking_uri, tmp_path):
    """The precheck varies one axis at a time; a bad combination of two is found in its job and kept on record."""
    r = train_cli("-m", "scale=smoke", f"tracking.uri={tracking_uri}", "tracking.experiment=combo",
                  f"data.cache_dir={tmp_path}/cache", "data.n_train=336,256", "train.batch_size=32,300",
                  "train.steps=2", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "data.n_train=256: must be at least train.batch_size=300" in r.stderr
    client = mlflow_client(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("combo").experiment_id])
    jobs = sorted((x.info.status, x.data.tags.get("error", "")[:40]) for x in runs if x.data.tags.get("sweep") != "true")
    assert [s for s, _ in jobs] == ["FAILED", "FINISHED", "FINISHED", "FINISHED"]
    assert jobs[0][1].startswith("error: data.n_train=256")


def test_resume_after_kill_continues_the_same_run(tracking_uri, tmp_path):
    common = ["scale=smoke", "model.width=16", "model.depth=1", "train.steps=3000", "train.batch_size=16",
              "train.eval_every=500", "train.final_window=20", "train.checkpoint_every=200",
              "tracking.flush_every=50", f"data.cache_dir={tmp_path}/cache"]
    killed = train_cli(*common, f"tracking.uri={tracking_uri}", f"hydra.run.dir={tmp_path}/job", cwd=tmp_path,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_checkpoint(tmp_path / "job", killed)
    assert killed.poll() is None, "the run finished before it could be killed; make it longer"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    r = train_cli(*common, f"tracking.uri={tracking_uri}", f"hydra.run.dir={tmp_path}/job", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    ref_uri = f"sqlite:///{tmp_path}/ref.db"
    ref = train_cli(*common, f"tracking.uri={ref_uri}", f"hydra.run.dir={tmp_path}/ref", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-2000:]

    client, ref_client = mlflow_client(tracking_uri), mlflow_client(ref_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("default").experiment_id])
    (ref_run,) = ref_client.search_runs([ref_client.get_experiment_by_name("default").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags.get("resumed") == "true"
    resumed, uninterrupted = history(client, run.info.run_id, "train/loss"), history(
        ref_client, ref_run.info.run_id, "train/loss")
    assert [s for s, _ in resumed] == list(range(3000))  # no duplicated and no missing steps
    assert resumed == uninterrupted
    assert run.data.metrics["final/train_loss"] == ref_run.data.metrics["final/train_loss"]
    assert run.data.metrics["final/eval_loss"] == ref_run.data.metrics["final/eval_loss"]
    saved = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, "config/resolved.yaml",
                                                          str(tmp_path))).read_text())
    assert saved["train"]["steps"] == 3000


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_run_with_measurements(make_cfg, tracking_uri, tmp_path):
    cfg = make_cfg("device=cuda", "model.width=64", "model.depth=2", "measure.spectra.every=3",
                   "measure.spectra.batch_size=32", "fslr.mode=record", "fslr.every=3", "fslr.warmup_samples=3")
    result = run_training(cfg, tmp_path)
    run = mlflow_client(tracking_uri).get_run(result["run_id"])
    assert result["status"] == "FINISHED" and run.data.tags["device"].startswith("cuda")
    assert "hessian/eig_0" in run.data.metrics and "fslr/input.weight" in run.data.metrics


def test_config_hash_sees_what_changes_results_only(make_cfg, tmp_path):
    from lrtransfer.trainer import config_hash

    base = config_hash(make_cfg())
    assert config_hash(make_cfg("train.progress=true", "tracking.experiment=other", "reuse=true")) == base
    assert config_hash(make_cfg("optim.lr=0.5")) != base
    assert config_hash(make_cfg("++tags.stage=flerm")) != base


def test_reuse_returns_the_finished_run_instead_of_training(make_cfg, tmp_path):
    first = run_training(make_cfg("reuse=true"), tmp_path / "a")
    again = run_training(make_cfg("reuse=true"), tmp_path / "b")
    assert again["run_id"] == first["run_id"] and again["status"].startswith("REUSED")
    assert again["final/train_loss"] == pytest.approx(first["final/train_loss"])
    fresh = run_training(make_cfg("reuse=false"), tmp_path / "c")
    assert fresh["run_id"] != first["run_id"]


@pytest.mark.parametrize("when", ["start", "end"])
def test_a_sweep_that_cannot_be_recorded_fails_in_one_line(monkeypatch, capsys, tracking_uri, tmp_path, when):
    """Hydra only warns when a callback raises; the sweep must fail instead, and close what it opened."""
    from lrtransfer import sweep
    from lrtransfer.train import main

    def gone(*args, **kwargs):
        raise RuntimeError("database gone")

    monkeypatch.setattr(sweep, "RunTracker" if when == "start" else "child_runs", gone)
    monkeypatch.setattr(sys, "argv", ["lrtransfer-train", "-m", "seed=0,1", "scale=smoke", "train.steps=2",
                                      f"tracking.uri={tracking_uri}", f"data.cache_dir={tmp_path}/cache",
                                      f"hydra.sweep.dir={tmp_path}/sweep"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    what = "cannot record the sweep in MLflow" if when == "start" else "the sweep's record in MLflow is incomplete"
    assert err == [f"error: {what}: database gone"]
    client = mlflow_client(tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs if r.data.tags.get("sweep") == "true"] == ([] if when == "start" else ["FAILED"])
    assert len([r for r in runs if r.data.tags.get("sweep") != "true"]) == (0 if when == "start" else 2)


def test_a_sigterm_that_a_finalizer_swallowed_still_ends_the_block():
    """Python drops an exception raised in a finalizer or weakref callback ("Exception ignored in ..."); the
    suite saw its SIGTERM vanish that way between two stages. The flag behind the raise survives it."""
    import gc
    import weakref

    from lrtransfer.preemption import Terminated, raise_if_terminated, terminate_as_exit

    class Target:
        pass

    with pytest.raises(Terminated) as caught:
        with terminate_as_exit():
            target = Target()
            weakref.finalize(target, os.kill, os.getpid(), signal.SIGTERM)  # the handler raises in the finalizer
            del target
            gc.collect()
            caught_here = True  # still running: the finalizer's raise was swallowed
    assert caught_here and caught.value.code == 128 + signal.SIGTERM
    raise_if_terminated()  # the flag is cleared with the block: nothing left to raise
