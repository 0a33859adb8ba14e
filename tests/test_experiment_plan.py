"""A stage that runs at an earlier stage's best LR: its LR is read from that stage's finished runs in MLflow."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from lrtransfer.experiment_plan import (BestLRRule, job_config_hashes, resolve_stage, resolved_stages,
                                        stage_config_hashes, stage_job_configs, stages_and_grid)
from lrtransfer.trainer import config_hash


@pytest.fixture
def uri(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the experiment's tracking.uri
    return uri


def record_mup_grid(uri: str, loss, diverged=lambda width, lr: False) -> None:
    """A finished run per job of sc_width's smoke `mup` stage, with the configuration hash its job would have,
    the final fixed-batch loss ``loss(width, lr)`` and the tags the reports read."""
    stages, grid = stages_and_grid("sc_width", "smoke")
    client = MlflowClient(uri)
    exp_id = client.create_experiment("sc_width")
    for _, cfg in stage_job_configs("sc_width", "smoke", {"mup": stages["mup"]}, grid):
        width, lr = cfg.model.width, cfg.optim.lr
        run = client.create_run(exp_id, tags={"scale": "smoke", "stage": "mup", "config_hash": config_hash(cfg),
                                              "width": str(width), "lr": str(lr), "seed": str(cfg.seed),
                                              "diverged": str(diverged(width, lr)).lower()})
        client.log_metric(run.info.run_id, "final/fixed_train_loss", loss(width, lr))
        client.set_terminated(run.info.run_id, "FINISHED")


def test_a_stage_runs_at_the_best_lr_of_the_stage_it_names(uri):
    # smoke grid: widths 16, 32 and LRs 0.25, 0.5; 0.5 is best at both widths
    record_mup_grid(uri, lambda width, lr: 1.0 if lr == 0.5 else 2.0)
    stages, grid = stages_and_grid("sc_width", "smoke")
    resolved = resolved_stages("sc_width", "smoke", stages, grid)
    assert resolved["mup_at_best"] == ["param=mup", "seed=0", "optim.lr=0.5"]
    assert resolved["mup_at_2x_best"] == ["param=mup", "seed=0", "optim.lr=1.0"]
    assert "ntp_at_best" not in resolved  # stage ntp has not run: its LR is not known yet
    # the reports take exactly these jobs: the grids', and the resolved stages' at the LRs named
    hashes = job_config_hashes("sc_width", "smoke")
    at_best = stage_config_hashes("sc_width", "smoke", {"mup_at_2x_best": resolved["mup_at_2x_best"]}, grid)["mup_at_2x_best"]
    assert len(at_best) == 2 and at_best <= hashes


def test_the_best_lr_is_the_one_best_at_the_most_widths_as_the_reports_pick_it(uri):
    # 0.25 best at width 16 only, but 0.5 diverged there, so 0.25 is best at width 32 as well
    record_mup_grid(uri, lambda width, lr: {(16, 0.25): 1.0, (16, 0.5): 9.0, (32, 0.25): 1.5, (32, 0.5): 9.0}[width, lr],
                    diverged=lambda width, lr: lr == 0.5)
    stages, grid = stages_and_grid("sc_width", "smoke")
    assert resolve_stage("sc_width", "smoke", stages["mup_at_best"], {"mup": stages["mup"]}, grid)[-1] == "optim.lr=0.25"


def test_no_best_lr_while_the_stage_has_no_finished_run_or_every_run_diverged(uri):
    stages, grid = stages_and_grid("sc_width", "smoke")
    assert resolve_stage("sc_width", "smoke", stages["mup_at_best"], {"mup": stages["mup"]}, grid) is None
    record_mup_grid(uri, lambda width, lr: 9.0, diverged=lambda width, lr: True)
    assert resolve_stage("sc_width", "smoke", stages["mup_at_best"], {"mup": stages["mup"]}, grid) is None
    assert str(BestLRRule("mup", 2.0)) == "optim.lr = the best LR of stage mup × 2"
