"""Config groups compose, experiments run at smoke scale, bad input ends in one line."""

import sys

import pytest
import torch

from conftest import mlflow_client
from lrtransfer.config import validate
from lrtransfer.data import ArrayData, TokenData, load_data
from lrtransfer.paths import CONF_DIR
from lrtransfer.errors import one_line
from lrtransfer.experiment_plan import (BestLRRule, planning_stages, stage_config_hashes, stage_job_configs,
                                         stages_and_grid)
from lrtransfer.train import main
from lrtransfer.trainer import build_model, run_training, value

GROUPS = {g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml"))
          for g in ("model", "param", "optim", "data", "scale", "experiment")}
DATA_FOR_MODEL = {"resmlp": "mnist1d", "transformer": "shakespeare", "linear": "teacher", "simple_convnet": "mnist1d",
                  "convnet": "mnist1d"}


def test_groups_exist():
    assert GROUPS["model"] == ["convnet", "linear", "resmlp", "simple_convnet", "transformer"]
    assert GROUPS["param"] == ["depth_mup", "mup", "ntp", "sp"]
    assert {"sgd", "adam"} <= set(GROUPS["optim"])
    assert {"mnist1d", "shakespeare", "cifar10", "wikitext103"} <= set(GROUPS["data"])
    assert GROUPS["scale"] == ["paper", "small", "smoke"]


@pytest.mark.parametrize("group,option", [(g, o) for g in ("param", "optim", "data", "scale") for o in GROUPS[g]])
def test_every_group_option_composes(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}")
    assert (cfg.scale if group == "scale" else value(cfg[group].name)) == option


@pytest.mark.parametrize("model", GROUPS["model"])
@pytest.mark.parametrize("param", GROUPS["param"])
def test_every_model_instantiates_under_every_parametrization(make_cfg, model, param):
    cfg = make_cfg(f"model={model}", f"param={param}", f"data={DATA_FOR_MODEL[model]}")
    net = build_model(cfg, load_data(cfg.data))
    assert net.parametrization.name == param and sum(p.numel() for p in net.parameters()) > 0


@pytest.mark.parametrize("experiment", GROUPS["experiment"])
def test_every_experiment_runs_at_smoke_scale(make_cfg, tmp_path, experiment):
    cfg = make_cfg(f"experiment={experiment}", hydra_config=True)
    assert cfg.hydra.sweeper.params, "an experiment file holds its sweep grid"
    cfg = make_cfg(f"experiment={experiment}", "scale=smoke")
    assert run_training(cfg, tmp_path)["status"] in ("FINISHED", "DIVERGED")


@pytest.mark.parametrize("scale", GROUPS["scale"])
@pytest.mark.parametrize("experiment", GROUPS["experiment"])
def test_every_stage_of_every_experiment_composes_at_every_scale(make_cfg, experiment, scale):
    """What `make reproduce` would run: each stage's overrides on the experiment's grid, validated."""
    stages, grid = stages_and_grid(experiment, scale)
    assert grid, "an experiment file holds its sweep grid"
    for stage, overrides in planning_stages(stages).items():
        firsts = {o.split("=")[0]: o.split("=", 1)[1].split(",")[0] for o in overrides}
        args = [f"{k}={v.split(',')[0]}" for k, v in {**grid, **firsts}.items()]
        validate(make_cfg(f"experiment={experiment}", f"scale={scale}", *args))


def paper_plan(experiment):
    """(stages, grid) of the paper-scale plan, the grid's LRs standing in for those an earlier stage will pick."""
    stages, grid = stages_and_grid(experiment, "paper")
    return planning_stages(stages), grid


def _stand_in_data(cfg):
    """Zeros of the shape ``cfg.data`` loads (hub datasets cannot be downloaded here)."""
    name = value(cfg.data.name)
    if name == "cifar10":
        return ArrayData(torch.zeros(2, 3, 32, 32), torch.arange(10), torch.zeros(2, 3, 32, 32), torch.arange(2),
                         "classification")
    if name == "wikitext103":
        return TokenData(torch.zeros(cfg.data.seq_len + 2, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                         256, cfg.data.seq_len)
    return load_data(cfg.data)


@pytest.mark.parametrize("experiment", GROUPS["experiment"])
def test_every_paper_scale_model_builds_for_its_data(experiment):
    """Each distinct model of the paper-scale plan (e.g. sc_width's SimpleConvNet on CIFAR-10 images) is built
    and run on two examples of its dataset's shape."""
    built = set()
    for _, cfg in stage_job_configs(experiment, "paper", *paper_plan(experiment)):
        key = (repr(cfg.model), repr(cfg.param), value(cfg.data.name), cfg.data.seq_len)
        if key in built:
            continue
        built.add(key)
        data = _stand_in_data(cfg)
        net = build_model(cfg, data)
        inputs, _ = data.batch(torch.Generator().manual_seed(0), 2)
        with torch.no_grad():
            out = net(inputs)
        assert out.shape[0] == 2 and out.shape[-1] == (data.vocab_size if data.task == "language" else 10)
    assert built


def test_paper_depth_convnet_has_the_papers_branch_constant():
    """The paper's depth runs multiply each branch by β/√L with β = 3: √3 at the 3-block base, √3/2 at 12 blocks."""
    models = {}
    for _, cfg in stage_job_configs("sc_depth", "paper", *paper_plan("sc_depth")):
        if cfg.tags.stage == "k1" and cfg.model.depth in (3, 12):
            models[cfg.model.depth] = build_model(cfg, _stand_in_data(cfg))
    assert {d: m.blocks[0].branch_multiplier for d, m in models.items()} == pytest.approx({3: 3 ** 0.5, 12: 3 ** 0.5 / 2})


def test_scale_specific_files_change_the_grid():
    (smoke, _), (small, _) = stages_and_grid("sc_width", "smoke"), stages_and_grid("sc_width", "small")
    assert list(smoke) == list(small) == ["mup", "ntp", "sp", "mup_at_best", "mup_at_2x_best", "ntp_at_best"]
    assert smoke["ntp"] != small["ntp"]
    assert small["mup_at_2x_best"] == ["param=mup", BestLRRule("mup", 2.0), "seed=0,1,2,3"]
    assert smoke["mup_at_2x_best"] == ["param=mup", BestLRRule("mup", 2.0), "seed=0"]


@pytest.mark.parametrize("rule, message", [
    ("{best_of: ntp}", "stages.late.optim.lr.best_of='ntp': not an earlier stage of the experiment (earlier: mup)"),
    ("{best_of: mup, times: 0}", "stages.late.optim.lr.times=0: must be a positive number"),
    ("{best_of: mup, times: two}", "stages.late.optim.lr.times='two': must be a positive number"),
    ("{best_of: mup, factor: 2}", "stages.late.optim.lr={'best_of': 'mup', 'factor': 2}: a stage's value is a string"),
    ("{best_of: mup, per: seed}", "stages.late.optim.lr.per='seed': the optimum is taken per one of width, depth, init_scale"),
])
def test_a_bad_best_lr_rule_fails_with_one_line(tmp_path, monkeypatch, rule, message):
    """A stage at an earlier stage's best LR names a stage before it and a positive factor."""
    import shutil
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "experiment" / "bad_rule.yaml").write_text(
        f"# @package _global_\nstages:\n  mup: {{param: mup}}\n  late: {{param: mup, optim.lr: {rule}}}\n"
        "  ntp: {param: ntp}\n")
    monkeypatch.setattr("lrtransfer.paths.CONF_DIR", conf)  # compose_experiment reads it when called
    with pytest.raises(Exception) as bad:
        stages_and_grid("bad_rule", "small")
    assert message in one_line(bad.value)


@pytest.mark.parametrize("stage, message", [(["param=mup", "optim.lr=0.25,0"], "optim.lr=0.0: must be positive"),
                                            (["param=mup", "model.width=16,wide"], "model.width: Value 'wide'")])
def test_planning_validates_every_job(stage, message):
    """reproduce relies on the plan alone to check each job before any sweep starts."""
    _, grid = stages_and_grid("sc_width", "smoke")
    with pytest.raises(Exception) as bad:
        stage_config_hashes("sc_width", "smoke", {"mup": stage}, grid)
    assert message in one_line(bad.value)


BAD = {
    "model.widht=64": "model.widht: Key 'widht' not in 'ModelConfig'",
    "model.width=wide": "model.width: Value 'wide' of type 'str' could not be converted to Integer",
    "model.width=-8": "model.width=-8: must be a positive integer",
    "model.depth=0": "model.depth=0: must be at least 1",
    "optim.lr=0": "optim.lr=0.0: must be positive",
    "optim.lr=-0.1": "optim.lr=-0.1: must be positive",
    "data.target_scale=0": "data.target_scale=0.0: must be positive",
    "param=fancy": "Could not find 'param/fancy'",
    "param.name=fancy": "param.name: Invalid value 'fancy'",
    "model=transformer data=shakespeare model.width=40": "model.width=40: must be divisible by model.head_dim=16",
    "model=simple_convnet model.depth=2": "model.depth=2: must be 1 for model.name=simple_convnet",
    "model=convnet model.depth=4": "model.depth=4: must be a multiple of 3 for model.name=convnet",
    "model.branch_mult=0": "model.branch_mult=0.0: must be positive",
    "model=simple_convnet model.branch_mult=3": "model.branch_mult=3.0: model.name=simple_convnet has no residual branches",
    "model=transformer data=shakespeare model.init=flerm_resmlp":
        "model.init='flerm_resmlp': only model.name=resmlp has it, not transformer",
    "model=linear data=teacher model.branch_scale=none": "model.branch_scale='none': model.name=linear has no residual",
    "tracking.uri=http://127.0.0.1:9": "tracking.uri=http://127.0.0.1:9: MLflow server is not reachable",
    "tracking.uri=htp://host:5000": "tracking.uri='htp://host:5000': must start with one of sqlite:///",
    "tracking.experiment=''": "tracking.experiment='': must be a non-empty name",
    "seed=-1": "seed=-1: must be in [0, 2**32)",
    "train.eval_batch_size=0": "train.eval_batch_size=0: must be at least 1",
    "measure.spectra.tol=-1": "measure.spectra.tol=-1.0: must be positive",
    "measure.spectra.max_iter=0": "measure.spectra.max_iter=0: must be at least measure.spectra.k",
    "measure.spectra.trace_probes=0": "measure.spectra.trace_probes=0: must be at least 1",
    "+foo=1": "foo=1: no such configuration key",
    "+fslr.base.widht=64": "fslr.base.widht=64: no such configuration key",
}


@pytest.mark.parametrize("args", sorted(BAD))
@pytest.mark.parametrize("multirun", [False, True])
def test_bad_input_is_one_line(monkeypatch, capsys, tmp_path, args, multirun):
    argv = ["lrtransfer-train", *(["-m", "seed=0,1"] if multirun else []), "scale=smoke",
            f"tracking.uri=sqlite:///{tmp_path}/m.db", *args.split()]
    if "tracking.uri=" in args:
        argv.remove(f"tracking.uri=sqlite:///{tmp_path}/m.db")
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and BAD[args] in err
    assert not (tmp_path / "m.db").exists(), "nothing may be recorded before the input is valid"


def test_a_deleted_experiment_is_one_line(monkeypatch, capsys, tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    client = mlflow_client(uri)
    client.delete_experiment(client.create_experiment("gone"))
    monkeypatch.setattr(sys, "argv", ["lrtransfer-train", "-m", "seed=0,1", "scale=smoke", f"tracking.uri={uri}",
                                      "tracking.experiment=gone"])
    capsys.readouterr()  # MLflow's own log lines from creating the database above
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "tracking.experiment=gone: this MLflow experiment is deleted" in err


def test_free_form_dicts_take_added_keys(make_cfg):
    from lrtransfer.config import unknown_keys
    assert unknown_keys(make_cfg("+tags.owner=me", "+stages.extra={seed: 1}")) == []
    assert unknown_keys(make_cfg("+model.bar=1", "+seed2=0")) == ["model.bar", "seed2"]


def test_bad_value_inside_a_sweep_axis_is_caught_before_any_job(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["lrtransfer-train", "-m", "scale=smoke", "model.width=32,0,64",
                                      f"tracking.uri=sqlite:///{tmp_path}/m.db"])
    with pytest.raises(SystemExit):
        main()
    assert "model.width=0: must be a positive integer" in capsys.readouterr().err
