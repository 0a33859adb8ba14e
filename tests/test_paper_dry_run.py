"""Every stage of every paper-scale plan through the real trainer before any GPU time is spent on it: the first
job of each stage (every grid axis at its first value), its sizes shrunk to two steps on a few examples, on
stand-in data of the papers' shapes (CIFAR-10 images and WikiText-103 text written locally as parquet), in stage
order, so each FLeRM stage must find the base record its own base stage wrote."""

import datasets
import pytest
from omegaconf import OmegaConf

from conftest import mlflow_client
from lrtransfer.experiment_plan import planning_stages, stage_job_configs, stages_and_grid
from lrtransfer.report.__main__ import SUITE
from lrtransfer.trainer import run_training, value
from test_data import write_cifar_like

# Everything a job's cost grows with; the rest (model, widths, depths, parametrization, optimizer, spectra
# methods and k, FSLR estimator) stays as the paper scale sets it.
SHRINK = {"train.steps": 2, "train.batch_size": 2, "train.eval_batch_size": 4, "train.warmup_steps": 1,
          "train.final_window": 1, "measure.spectra.batch_size": 4, "fslr.warmup_samples": 2}
PERIODS = ("train.eval_every", "measure.spectra.every", "fslr.every")  # every step where on; off stays off
DATA_SIZES = {"cifar10": (16, 4), "wikitext103": (4096, 1024)}  # (n_train, n_test): images, or byte tokens


@pytest.fixture(scope="module")
def stand_in_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_data")
    write_cifar_like(root / "cifar10", DATA_SIZES["cifar10"][0])
    for split in ("train", "test"):
        text = [f" = Section {i} = \n" + "Plays the part, and speaks the words of the play.\n" * 8 for i in range(40)]
        datasets.Dataset.from_dict({"text": text}).to_parquet(str(root / "wikitext103" / f"{split}.parquet"))
    return root


def shrunk(cfg, data_root, tracking_uri, tmp_path):
    for key, v in SHRINK.items():
        OmegaConf.update(cfg, key, v, merge=True)
    for key in PERIODS:
        if OmegaConf.select(cfg, key):
            OmegaConf.update(cfg, key, 1, merge=True)
    name = value(cfg.data.name)
    if name in DATA_SIZES:
        cfg.data.path = str(data_root / name)
        cfg.data.n_train, cfg.data.n_test = DATA_SIZES[name]
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.tracking.uri = tracking_uri
    cfg.train.checkpoint_dir = str(tmp_path / "checkpoints")
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("experiment", SUITE)
def test_first_job_of_every_paper_stage_runs(experiment, stand_in_data, tracking_uri, tmp_path):
    stages, grid = stages_and_grid(experiment, "paper")
    client = mlflow_client(tracking_uri)
    for stage, overrides in planning_stages(stages).items():  # a stage at an earlier one's best LR: the grid's first
        _, cfg = next(stage_job_configs(experiment, "paper", {stage: overrides}, grid))
        result = run_training(shrunk(cfg, stand_in_data, tracking_uri, tmp_path), tmp_path / stage)
        run = client.get_run(result["run_id"])
        assert run.info.status == "FINISHED", f"{experiment}/{stage}: {run.info.status}"
        if cfg.measure.spectra.every:
            assert f"hessian/eig_{cfg.measure.spectra.k - 1}" in run.data.metrics, f"{experiment}/{stage}"
        if value(cfg.fslr.mode) == "flerm":
            assert run.data.tags["fslr_base"].startswith("1 base run(s)"), f"{experiment}/{stage}"
