"""Spectra and function-space LRs measured inside training and recorded in MLflow."""

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import mlflow_client
from lrtransfer.measurements import SpectraHook
from lrtransfer.models import ResMLP
from lrtransfer.optim import build_optimizer
from lrtransfer.spectra import SpectraSettings
from lrtransfer.train import main
from lrtransfer.trainer import run_training


def metric_steps(client, run_id, key):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_spectra_are_logged_every_n_steps_with_an_npz(make_cfg, tracking_uri, tmp_path):
    cfg = make_cfg("param=mup", "optim=sgd", "optim.lr=0.05", "model.width=64", "model.base_width=32",
                   "model.depth=2", "measure.spectra.every=2", "measure.spectra.k=2", "measure.spectra.batch_size=64",
                   "measure.spectra.trace=true", "measure.spectra.trace_probes=12", "measure.spectra.ggn=true",
                   "measure.spectra.ntk=2", "measure.spectra.directional=true")
    run_id = run_training(cfg, tmp_path)["run_id"]
    client = mlflow_client(tracking_uri)
    metrics = client.get_run(run_id).data.metrics
    for key in ("hessian/eig_0", "hessian/eig_1", "hessian/sharpness_rescaled", "hessian/sharpness_rescaled_x_lr",
                "hessian/trace", "ggn/eig_0", "ntk/eig_0", "ntk/eig_1", "hessian/directional", "spectra/hvps",
                "spectra/seconds"):
        assert metric_steps(client, run_id, key) == [0, 2, 4], key
    assert metrics["hessian/eig_0"] >= metrics["hessian/eig_1"]
    assert metrics["hessian/sharpness_rescaled_x_lr"] == pytest.approx(0.05 * metrics["hessian/sharpness_rescaled"])
    # µP at 2x the base width: input, bias and readout LRs are 2 eta0, so D != 1 and the rescaled sharpness differs
    assert metrics["hessian/sharpness_rescaled"] > metrics["hessian/eig_0"]
    npz = np.load(client.download_artifacts(run_id, "spectra.npz", str(tmp_path)))
    assert list(npz["step"]) == [0, 2, 4] and npz["hessian/eig_0"][-1] == pytest.approx(metrics["hessian/eig_0"])
    assert json.loads(str(npz["settings"]))["k"] == 2


def test_adam_preconditioned_sharpness_in_training(make_cfg, tracking_uri, tmp_path):
    cfg = make_cfg("optim=adam", "model.width=32", "model.depth=1", "measure.spectra.every=2",
                   "measure.spectra.batch_size=32", "measure.spectra.preconditioned=true")
    run_id = run_training(cfg, tmp_path)["run_id"]
    client = mlflow_client(tracking_uri)
    assert metric_steps(client, run_id, "adam/precond_sharpness") == [2, 4]  # Adam has no state at step 0
    m = client.get_run(run_id).data.metrics
    assert m["adam/precond_threshold"] == pytest.approx(38 / 1e-3)


@pytest.mark.parametrize("optim", ["adam", "sgd"])
def test_record_then_flerm_at_four_times_the_width(make_cfg, tracking_uri, tmp_path, optim):
    base = ["model.base_width=32", "model.depth=2", "model.base_depth=2", "fslr.every=2", "fslr.warmup_samples=5",
            f"optim={optim}"]
    rec = run_training(make_cfg(*base, "model.width=32", "fslr.mode=record"), tmp_path / "base")
    client = mlflow_client(tracking_uri)
    assert metric_steps(client, rec["run_id"], "fslr/input.weight") == [0, 2, 4]
    record = json.loads(Path(client.download_artifacts(rec["run_id"], "fslr/record.json", str(tmp_path))).read_text())
    assert record["steps"] == [0, 2, 4] and record["meta"]["width"] == 32
    names = set(record["series"])
    assert {"input.weight", "readout.weight", "blocks.1.branch.1.weight"} <= names

    wide = run_training(make_cfg(*base, "model.width=128", "fslr.mode=flerm"), tmp_path / "wide")
    run = client.get_run(wide["run_id"])
    assert run.data.tags["fslr_base"] == "1 base run(s) in experiment 'default'"
    assert metric_steps(client, wide["run_id"], "lr_mult/input.weight") == [0]  # first step only
    # the wider model's hidden tensors move the function more per unit LR, so FLeRM lowers their LRs
    assert run.data.metrics["lr_mult/blocks.0.branch.1.weight"] < 1.0


def test_flerm_takes_only_base_runs_recorded_with_its_own_settings(make_cfg, tracking_uri, tmp_path):
    from lrtransfer.fslr import BaseRecordError
    base = ["model.base_width=32", "model.depth=1", "model.base_depth=1", "fslr.warmup_samples=3", "optim=adam"]
    for batch in (16, 24):  # the same base model recorded at two batch sizes, as two scales would
        run_training(make_cfg(*base, "model.width=32", "fslr.mode=record", f"train.batch_size={batch}"),
                     tmp_path / f"base{batch}")
    wide = run_training(make_cfg(*base, "model.width=64", "fslr.mode=flerm", "train.batch_size=24"), tmp_path / "w")
    client = mlflow_client(tracking_uri)
    assert client.get_run(wide["run_id"]).data.tags["fslr_base"] == "1 base run(s) in experiment 'default'"
    with pytest.raises(BaseRecordError, match="no finished base run"):  # no base at this LR schedule
        run_training(make_cfg(*base, "model.width=64", "fslr.mode=flerm", "train.batch_size=24",
                              "train.warmup_steps=2"), tmp_path / "w2")


def test_a_flerm_run_is_not_reused_once_its_base_record_changed(make_cfg, tracking_uri, tmp_path):
    """A base seed added after a FLeRM run changes the averaged record it would read: a rerun (the job, and
    reproduce's per-stage check) must train it again instead of reusing LRs set from the old record."""
    from lrtransfer.tracking import finished_config_hashes

    base = ["model.base_width=32", "model.depth=1", "model.base_depth=1", "fslr.warmup_samples=3", "optim=adam",
            "reuse=true"]
    run_training(make_cfg(*base, "model.width=32", "fslr.mode=record", "seed=0"), tmp_path / "base0")
    first = run_training(make_cfg(*base, "model.width=64", "fslr.mode=flerm"), tmp_path / "w")
    again = run_training(make_cfg(*base, "model.width=64", "fslr.mode=flerm"), tmp_path / "w")
    assert again["run_id"] == first["run_id"] and again["status"].startswith("REUSED")
    flerm_hash = mlflow_client(tracking_uri).get_run(first["run_id"]).data.tags["config_hash"]
    assert flerm_hash in finished_config_hashes(tracking_uri, "default")

    run_training(make_cfg(*base, "model.width=32", "fslr.mode=record", "seed=1"), tmp_path / "base1")
    assert flerm_hash not in finished_config_hashes(tracking_uri, "default")
    fresh = run_training(make_cfg(*base, "model.width=64", "fslr.mode=flerm"), tmp_path / "w")
    assert fresh["run_id"] != first["run_id"] and fresh["status"] == "FINISHED"
    run = mlflow_client(tracking_uri).get_run(fresh["run_id"])
    assert run.data.tags["fslr_base"] == "2 base run(s) in experiment 'default'"
    assert flerm_hash in finished_config_hashes(tracking_uri, "default")
    assert run_training(make_cfg(*base, "model.width=64", "fslr.mode=flerm"), tmp_path / "w")["run_id"] == \
        fresh["run_id"]


def test_flerm_without_a_base_run_fails_in_one_line(monkeypatch, capsys, tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setattr(sys, "argv", ["lrtransfer-train", "scale=smoke", f"tracking.uri={uri}", "fslr.mode=flerm",
                                      f"data.cache_dir={tmp_path}/cache", f"hydra.run.dir={tmp_path}/run"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: fslr.mode=flerm: no finished base run in experiment 'default'")
    (run,) = mlflow_client(uri).search_runs(["1"])  # recorded, not left RUNNING
    assert run.info.status == "FAILED" and "no finished base run" in run.data.tags["error"]


def test_logged_step_zero_spectra_equal_a_direct_library_call(make_cfg, tracking_uri, tmp_path):
    from lrtransfer.data import load_data
    from lrtransfer.optim import build_optimizer
    from lrtransfer.spectra import top_hessian_eigenvalues, top_ntk_eigenvalues
    from lrtransfer.trainer import build_model, measurement_batch, seed_everything

    cfg = make_cfg("param=mup", "optim=sgd", "optim.lr=0.05", "model.width=64", "model.base_width=32",
                   "model.depth=2", "measure.spectra.every=3", "measure.spectra.k=3", "measure.spectra.batch_size=48",
                   "measure.spectra.ntk=2")
    run_id = run_training(cfg, tmp_path)["run_id"]
    client = mlflow_client(tracking_uri)
    logged = {k: next(m.value for m in client.get_metric_history(run_id, k) if m.step == 0)
              for k in ("hessian/eig_0", "hessian/eig_1", "hessian/eig_2", "hessian/sharpness_rescaled", "ntk/eig_0",
                        "ntk/rescaled_eig_0")}

    seed_everything(cfg.seed)  # the trainer's order: seed, data, model
    data = load_data(cfg.data)
    model = build_model(cfg, data)
    x, y = measurement_batch(cfg, data)
    eigs = top_hessian_eigenvalues(model, data.loss, x, y, k=3)
    d = {g["name"]: g["lr_mult"] for g in build_optimizer(model, "sgd", 0.05).param_groups}
    rescaled = top_hessian_eigenvalues(model, data.loss, x, y, k=1, scaling=d)
    for i in range(3):
        assert logged[f"hessian/eig_{i}"] == pytest.approx(float(eigs[i]), rel=1e-4)
    assert logged["hessian/sharpness_rescaled"] == pytest.approx(float(rescaled[0]), rel=1e-4)
    assert logged["ntk/eig_0"] == pytest.approx(float(top_ntk_eigenvalues(model, x, k=2)[0]), rel=1e-4)
    rescaled_ntk = top_ntk_eigenvalues(model, x, k=2, scaling=d)[0]
    assert logged["ntk/rescaled_eig_0"] == pytest.approx(float(rescaled_ntk), rel=1e-4)
    assert logged["ntk/rescaled_eig_0"] != pytest.approx(logged["ntk/eig_0"], rel=1e-2)  # µP: D is not 1


def test_spectra_hook_skips_a_measurement_at_non_finite_weights():
    """The update before a due step blew the weights up: no crash (the step's NaN loss ends the run as
    diverged), and no record."""
    torch.manual_seed(0)
    model = ResMLP(8, 4, 16, 1)
    batch = (torch.randn(16, 8), torch.randint(0, 4, (16,)))
    hook = SpectraHook(model, F.cross_entropy, batch, SpectraSettings(every=1), build_optimizer(model, "sgd", 0.1),
                       "sgd", 0.1)
    assert "hessian/eig_0" in hook.before_step(0)
    with torch.no_grad():
        model.input.weight[0, 0] = float("inf")
    assert hook.before_step(1) == {}
    assert [r["step"] for r in hook.monitor.records] == [0]


def test_a_resumed_spectra_hook_warm_starts_as_the_uninterrupted_one():
    torch.manual_seed(0)
    model = ResMLP(8, 4, 16, 1)
    batch = (torch.randn(32, 8), torch.randint(0, 4, (32,)))

    def hook():
        settings = SpectraSettings(every=2, tol=1e-3)
        return SpectraHook(model, F.cross_entropy, batch, settings, build_optimizer(model, "sgd", 0.1), "sgd", 0.1)

    uninterrupted = hook()
    uninterrupted.before_step(0)
    saved = torch.load(_roundtrip(uninterrupted.state_dict()), weights_only=False)  # as a checkpoint holds it
    resumed = hook()
    resumed.load_state_dict(saved)
    later, again = uninterrupted.before_step(2), resumed.before_step(2)
    assert again["spectra/hvps"] == later["spectra/hvps"] < hook().before_step(2)["spectra/hvps"]  # warm < cold
    assert again["hessian/eig_0"] == later["hessian/eig_0"]
    assert [r["step"] for r in resumed.monitor.records] == [0, 2]


def _roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("experiment", ["flerm_width", "flerm_depth", "flerm_transformer", "flerm_init_scale",
                                        "cross_flerm_sharpness"])
@pytest.mark.parametrize("scale", ["smoke", "small", "paper"])
def test_every_flerm_job_of_the_suite_finds_a_base_its_experiment_records(experiment, scale):
    """The base key a FLeRM job searches for is one that the experiment's record stage tags its runs with."""
    from lrtransfer.experiment_plan import planning_stages, stage_job_configs, stages_and_grid
    from lrtransfer.flerm_base import base_key
    from lrtransfer.trainer import run_tags
    recorded, wanted = set(), set()
    stages, grid = stages_and_grid(experiment, scale)
    for _, cfg in stage_job_configs(experiment, scale, planning_stages(stages), grid):
        mode = str(cfg.fslr.mode.value)
        if mode == "record":
            recorded.add(run_tags(cfg)["fslr_base_key"])
        elif mode == "flerm":
            wanted.add(base_key(cfg, cfg.model.base_width, cfg.model.base_depth, cfg.fslr.base.init_scale))
    assert wanted and wanted <= recorded


@pytest.mark.parametrize("model, base_size, size", [("simple_convnet", "model.width=8", "model.width=32"),
                                                    ("convnet", "model.depth=3", "model.depth=6")])
def test_convnets_record_then_flerm_with_spectra(make_cfg, tracking_uri, tmp_path, model, base_size, size):
    """The paper's convolutional networks through the whole job: a base record, FLeRM at 4x width or 2x depth
    (each deeper block's base value split over its copies), and the SGD spectra along the way."""
    common = [f"model={model}", "model.width=8", "model.base_width=8", "optim=sgd", "optim.lr=0.05", "fslr.every=2",
              "fslr.warmup_samples=3", "measure.spectra.every=2", "measure.spectra.batch_size=32"]
    if model == "convnet":
        common.append("model.base_depth=3")
    run_training(make_cfg(*common, base_size, "fslr.mode=record"), tmp_path / "base")
    target = run_training(make_cfg(*common, size, "fslr.mode=flerm"), tmp_path / "target")
    client = mlflow_client(tracking_uri)
    run = client.get_run(target["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["fslr_base"] == "1 base run(s) in experiment 'default'"
    scaled = "conv2.weight" if model == "simple_convnet" else "blocks.5.branch.1.weight"
    assert metric_steps(client, target["run_id"], f"lr_mult/{scaled}") == [0]
    assert metric_steps(client, target["run_id"], "hessian/sharpness_rescaled") == [0, 2, 4]


def test_fslr_settings_change_the_config_hash_only_where_fslr_runs(make_cfg):
    """SP and µP runs beside FLeRM ones (fslr.mode=off) are reused when only the FSLR settings change."""
    from lrtransfer.trainer import config_hash

    for mode, changes in (("off", False), ("record", True), ("flerm", True)):
        hashes = {config_hash(make_cfg(f"fslr.mode={mode}", *extra)) for extra in ([], ["fslr.every=20"])}
        assert (len(hashes) == 2) == changes, mode
