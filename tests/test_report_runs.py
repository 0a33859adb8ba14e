"""The runs a report is built from: the latest finished run of each configuration it plans, nothing else."""

from __future__ import annotations

import time

from mlflow.tracking import MlflowClient

from lrtransfer.report.__main__ import read_each_seed_alone
from lrtransfer.report.flerm import flerm_width
from lrtransfer.report.claims import verdict
from lrtransfer.report.html import ExperimentReport
from lrtransfer.report.runs import (ExperimentRuns, RunRecord, SeedMean, hardware_note, load_runs, merge_seeds,
                                    setup_table, single_seed_views)


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


def test_seeds_of_one_configuration_are_read_as_their_mean(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("exp", artifact_location=str(tmp_path / "artifacts"))
    config = dict(stage="mup", width="32", lr="0.5")

    def run(seed, diverged, loss, sharpness, **tags):
        tags = {**config, **tags, "seed": str(seed), "diverged": "true" if diverged else "false"}
        run_id = make_run(client, exp_id, "FINISHED", **tags, config_hash=str(sorted(tags.items())))
        client.log_metric(run_id, "final/train_loss", loss)
        for step, value in sharpness:
            client.log_metric(run_id, "sharp", value, step=step)

    run(0, False, 1.0, [(0, 1.0), (10, 3.0), (20, 5.0)])
    run(1, False, 2.0, [(0, 2.0), (10, 5.0)])  # measured one checkpoint fewer
    run(0, False, 1.0, [(0, 1.0), (10, 2.0)], lr="1.0")
    run(1, True, 10.0, [(0, 9.0)], lr="1.0")  # a diverged seed: its capped loss counts, its curve does not
    run(0, False, 4.0, [(0, 4.0)], width="64")  # a lone seed stays itself

    merged = {(r.tag("width"), r.lr): r for r in load_runs(uri, "exp", "small").merged}
    assert sorted(merged) == [(32, 0.5), (32, 1.0), (64, 0.5)]
    two, diverging, lone = merged[(32, 0.5)], merged[(32, 1.0)], merged[(64, 0.5)]
    assert isinstance(two, SeedMean) and "seed" not in two.tags and two.stage == "mup"
    assert (two.final_loss, two.diverged) == (1.5, False) and two.metrics == {"final/train_loss": 1.5, "sharp": 5.0}
    steps, values = two.history("sharp")
    assert steps.tolist() == [0, 10] and values.tolist() == [1.5, 4.0]
    assert (diverging.final_loss, diverging.diverged) == (5.5, True)
    assert diverging.history("sharp")[1].tolist() == [1.0, 2.0]
    assert not isinstance(lone, SeedMean) and lone.final_loss == 4.0


def test_final_loss_reads_the_metric_the_report_asks_for(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("exp", artifact_location=str(tmp_path / "artifacts"))
    for seed, (window, fixed) in enumerate([(1.0, 3.0), (2.0, 5.0)]):
        run_id = make_run(client, exp_id, "FINISHED", stage="mup", width="32", lr="0.5", seed=str(seed),
                          config_hash=str(seed))
        client.log_metric(run_id, "final/train_loss", window)
        client.log_metric(run_id, "final/fixed_train_loss", fixed)
    assert merge_seeds(load_runs(uri, "exp", "small").finished)[0].final_loss == 1.5
    fixed_runs = load_runs(uri, "exp", "small", loss_metric="final/fixed_train_loss").finished
    assert sorted(r.final_loss for r in fixed_runs) == [3.0, 5.0] and merge_seeds(fixed_runs)[0].final_loss == 4.0


def test_experiment_ids_reads_every_page(tmp_path):
    from lrtransfer.tracking import experiment_ids
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    made = {client.create_experiment(f"e{i}", artifact_location=str(tmp_path / f"a{i}")) for i in range(3)}

    class OnePerPage:  # MLflow's own paging, one experiment a page
        def search_experiments(self, max_results, page_token):
            return client.search_experiments(max_results=1, page_token=page_token)

    ids = experiment_ids(OnePerPage())
    assert made < set(ids) and len(ids) == len(set(ids)) == 4  # and "Default"


def test_setup_table_states_each_stages_logged_settings(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("exp", artifact_location=str(tmp_path / "artifacts"))
    for stage, width, every, lr in (("mup", "128", "64", "0.5"), ("mup", "32", "64", "0.25"), ("sp", "32", "0", "2.0"),
                                    ("mup", "512", "64", "0.25"), ("resmlp", "32", "0", "2.0")):
        run_id = make_run(client, exp_id, "FINISHED", stage=stage, config_hash=f"{stage}{width}{lr}")
        model = "resmlp" if stage == "resmlp" else "simple_convnet"
        for key, value in (("model.name", model), ("model.width", width), ("optim.lr", lr),
                           ("measure.spectra.every", every), ("measure.spectra.batch_size", "256"),
                           ("model.branch_mult", "1.0"), ("model.init", "abc")):
            client.log_param(run_id, key, value)
    table = setup_table(load_runs(uri, "exp", "small").finished, ["sp", "mup"])
    assert list(table) == ["sp", "mup", "resmlp"]  # the stages in the order given, then the others by name
    assert table["mup"] == {"model.name": "simple_convnet", "optim.lr": "0.25, 0.5", "model.width": "32, 128, 512",
                            "measure.spectra.every": "64", "measure.spectra.batch_size": "256"}
    assert "measure.spectra.batch_size" not in table["sp"]  # no spectra measured there
    # a SimpleConvNet has no residual branches: model.branch_mult (logged, as every key is) is left out; a ResMLP's stays
    assert "model.branch_mult" not in table["sp"] and table["resmlp"]["model.branch_mult"] == "1.0"
    assert "model.init" not in table["sp"] and table["resmlp"]["model.init"] == "abc"  # a ResMLP's init style only


def record(seed, lr, loss, **tags):
    return RunRecord(f"{seed}-{lr}-{tags}", {"stage": "mup", "width": "32", "lr": str(lr), "seed": str(seed), **tags},
                     {"final/train_loss": loss}, client=None)


def test_single_seed_views_keep_each_seed_of_a_seeded_configuration_and_every_lone_run():
    runs = [record(0, 0.5, 1.0), record(1, 0.5, 2.0), record(10, 0.5, 2.5), record(1, 1.0, 3.0),
            record(0, 0.5, 4.0, stage="sp")]  # lr 1.0 ran seed 1 only: a lone run, in every view
    views = single_seed_views(runs)
    assert list(views) == ["0", "1", "10"]  # numeric order
    assert [r.final_loss for r in views["0"]] == [1.0, 3.0, 4.0]
    assert [r.final_loss for r in views["1"]] == [2.0, 3.0, 4.0]
    assert [r.final_loss for r in views["10"]] == [2.5, 3.0, 4.0]
    assert single_seed_views([record(0, 0.5, 1.0), record(0, 1.0, 2.0)]) == {}


def mean_loss_builder(runs: ExperimentRuns, out) -> ExperimentReport:
    """Claims like the reports': one on the seed mean of the µP runs, one on the lone SP run only."""
    mup = [r.final_loss for r in runs.merged if r.stage == "mup"]  # each seed view merges afresh
    sp = [r.final_loss for r in runs.finished if r.stage == "sp"]
    return ExperimentReport("x", "small", "t", "d", [], [
        verdict("mean", "µP loss", "≤ 2", f"{sum(mup) / len(mup):.3g}", sum(mup) / len(mup) <= 2),
        verdict("sp", "SP loss", "≤ 5", f"{sp[0]:.3g}", sp[0] <= 5, soft=True)], len(runs.finished))


def test_each_seed_alone_marks_verdicts_that_rest_on_the_seed_mean():
    runs = ExperimentRuns([record(0, 0.5, 1.0), record(1, 0.5, 2.5), record(0, 0.5, 4.0, stage="sp")], 0, 0, None)
    report = mean_loss_builder(runs, None)
    read_each_seed_alone(report, mean_loss_builder, runs)
    mean, sp = report.claims
    assert (mean.status, mean.measured) == ("PASS", "1.75")
    assert mean.by_seed == {"0": "PASS", "1": "FAIL"} and mean.seed_note == "seed 0 PASS, seed 1 FAIL"
    assert sp.by_seed == {}  # reads no seeded configuration: the same on every seed alone
    lone = ExperimentRuns([record(0, 0.5, 1.0), record(0, 0.5, 4.0, stage="sp")], 0, 0, None)
    unseeded = mean_loss_builder(lone, None)
    read_each_seed_alone(unseeded, mean_loss_builder, lone)
    assert all(c.by_seed == {} for c in unseeded.claims)


def two_stage_builder(runs: ExperimentRuns, out) -> ExperimentReport:
    """A claim on each stage's seed mean, MISSING where the stage has no runs (as the reports' claims are)."""
    claims = []
    for stage in ("grid", "sharp"):
        losses = [r.final_loss for r in runs.merged if r.stage == stage]
        mean = sum(losses) / len(losses) if losses else None
        claims.append(verdict(stage, "loss", "≤ 2", f"{mean}", None if mean is None else mean <= 2))
    return ExperimentReport("x", "small", "t", "d", [], claims, len(runs.finished))


def test_each_seed_alone_leaves_out_the_seeds_a_claims_stage_did_not_run():
    """sc_width's LR grid runs seeds 0-1 and its sharpness stages 0-3: the grid's claims are read on seeds 0 and
    1 alone, not reported MISSING on seeds 2 and 3."""
    runs = ExperimentRuns([record(0, 0.5, 1.0, stage="grid"), record(1, 0.5, 2.5, stage="grid")]
                          + [record(s, 0.5, 1.0 + s, stage="sharp") for s in range(4)], 0, 0, None)
    report = two_stage_builder(runs, None)
    read_each_seed_alone(report, two_stage_builder, runs)
    grid, sharp = report.claims
    assert grid.by_seed == {"0": "PASS", "1": "FAIL"}
    assert sharp.by_seed == {"0": "PASS", "1": "PASS", "2": "FAIL", "3": "FAIL"}


def test_hardware_note_counts_the_runs_per_machine():
    runs = [record(s, 0.5, 1.0, processor="AMD EPYC", cpu_capability="AVX512", torch_threads="1") for s in range(3)]
    runs += [record(9, 0.5, 1.0, processor="NVIDIA H100", torch_threads="2"), record(8, 0.5, 1.0)]
    assert hardware_note(runs) == ("Recorded on AMD EPYC (AVX512), 1 torch thread: 3 runs; NVIDIA H100, 2 torch "
                                   "threads: 1 run; processor not recorded: 1 run.")
    assert hardware_note([]) == ""


def test_flerm_width_reads_every_stage_as_seed_means(tmp_path):
    """At width 128 FLeRM's best single run is at LR 1 (seed 0), its best seed mean at LR 2: the claims must read
    the means, so FLeRM at the base model's best LR (1) is 0.04 above that width's best, not 0."""
    losses = {("base", 32, 1): (0.8, 0.8), ("base", 32, 2): (0.9, 0.9),
              ("flerm", 32, 1): (0.8, 0.8), ("flerm", 32, 2): (0.9, 0.9),
              ("flerm", 128, 1): (0.50, 0.70), ("flerm", 128, 2): (0.55, 0.57),
              ("sp", 32, 1): (0.8, 0.8), ("sp", 32, 2): (0.9, 0.9),
              ("sp", 128, 1): (0.6, 0.6), ("sp", 128, 2): (0.7, 0.7)}
    runs = [record(seed, lr, loss[seed], stage=stage, width=str(w))
            for (stage, w, lr), loss in losses.items() for seed in (0, 1)]
    report = flerm_width(ExperimentRuns(runs, 0, 0, None), tmp_path)
    claims = {c.claim: c for c in report.claims}
    gap = claims["B: FLeRM at the base model's best LR is near each width's best"]
    assert gap.measured.endswith("32: +0, 128: +0.04") and gap.status == "FAIL"
    assert claims["B: FLeRM best LR stays put"].measured.startswith("+1,")
