"""The jobs of an experiment: its stages, the grid each one sweeps, and every job's configuration hash.

``conf/experiment/<name>.yaml`` holds a grid (``hydra.sweeper.params``) and ``stages`` that run in
order, each a sweep of the grid with the stage's overrides on top; a comma-separated stage value sweeps
that key instead of the grid's values, a single value pins it.  A stage may instead take its LR from an
earlier stage's results, ``optim.lr: {best_of: <stage>, times: 2}`` (:class:`BestLRRule`): it is resolved
from MLflow when its turn comes.  The hashes let the reports take exactly the runs of the experiment as it
is configured now, not runs that earlier settings left in MLflow.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from .config import compose_experiment, validate
from .errors import ConfigError
from .report.claims import best_by, common_optimum
from .report.runs import final_loss_metric, load_runs
from .trainer import config_hash


@dataclass(frozen=True)
class BestLRRule:
    """A stage's ``optim.lr: {best_of: <earlier stage>, times: <factor>, per: <tag>}``: the LR whose seed-mean
    final loss in that stage is lowest at the most values of ``per`` (width by default), as the reports pick
    "the optimum", times ``times``.  E.g. sc_width measures spectra only at µP's optimum and twice it, which
    its LR-grid stages find first."""

    stage: str
    times: float = 1.0
    per: str = "width"

    def __str__(self) -> str:
        return f"optim.lr = the best LR of stage {self.stage}" + (f" × {self.times:g}" if self.times != 1 else "")


Override = str | BestLRRule
SCALE_TAGS = ("width", "depth", "init_scale")  # numeric tags of every run (trainer.run_tags) a best LR can be taken per


def _lr_rule(stage: str, key: str, value: DictConfig, earlier: list[str]) -> BestLRRule:
    spec, where = OmegaConf.to_container(value), f"stages.{stage}.{key}"
    if key != "optim.lr" or "best_of" not in spec or set(spec) - {"best_of", "times", "per"}:
        raise ConfigError(f"{where}={spec}: a stage's value is a string, or for optim.lr "
                          "{best_of: <an earlier stage>, times: <factor>, per: <tag, e.g. width>}")
    if spec["best_of"] not in earlier:
        raise ConfigError(f"{where}.best_of={spec['best_of']!r}: not an earlier stage of the experiment "
                          f"(earlier: {', '.join(earlier) or 'none'})")
    times = spec.get("times", 1)
    if isinstance(times, bool) or not isinstance(times, (int, float)) or times <= 0:
        raise ConfigError(f"{where}.times={times!r}: must be a positive number")
    per = spec.get("per", "width")
    if per not in SCALE_TAGS:
        raise ConfigError(f"{where}.per={per!r}: the optimum is taken per one of {', '.join(SCALE_TAGS)}")
    return BestLRRule(spec["best_of"], float(times), per)


def stages_and_grid(experiment: str, scale: str) -> tuple[dict[str, list[Override]], dict[str, str]]:
    """({stage name: its overrides}, {grid axis: its comma-separated values}) from one composition;
    an experiment without stages is one sweep named "main"."""
    cfg = compose_experiment(experiment, scale, return_hydra_config=True)
    stages: dict[str, list[Override]] = {}
    for name, params in (cfg.stages or {"main": {}}).items():
        stages[name] = [_lr_rule(name, k, v, list(stages)) if isinstance(v, DictConfig) else f"{k}={v}"
                        for k, v in params.items()]
    grid = {k: str(v) for k, v in (cfg.hydra.sweeper.params or {}).items()}
    return stages, grid


def lr_rule(overrides: list[Override]) -> BestLRRule | None:
    return next((o for o in overrides if isinstance(o, BestLRRule)), None)


def _without_rule(overrides: list[Override]) -> list[str]:
    return [o for o in overrides if isinstance(o, str)]


def planning_stages(stages: dict[str, list[Override]]) -> dict[str, list[str]]:
    """The stages with the grid's LRs standing in for each :class:`BestLRRule`'s: what is validated (and dry-run)
    before anything runs, when those LRs are not known yet."""
    return {stage: _without_rule(overrides) for stage, overrides in stages.items()}


def tracking_target(experiment: str, scale: str) -> tuple[str, str]:
    """(tracking URI, MLflow experiment name) of an experiment, as its runs were configured."""
    cfg = compose_experiment(experiment, scale)
    return cfg.tracking.uri, cfg.tracking.experiment


def best_lr(experiment: str, scale: str, source: list[str], rule: BestLRRule, grid: dict[str, str]) -> float | None:
    """The LR ``rule`` names, read from the finished runs in MLflow of its stage (run with the overrides
    ``source``); None while that stage has no best LR (no finished run, or every run diverged)."""
    hashes = stage_config_hashes(experiment, scale, {rule.stage: source}, grid)[rule.stage]
    runs = load_runs(*tracking_target(experiment, scale), scale, hashes, final_loss_metric(experiment))
    best = common_optimum(best_by(runs.merged, lambda r: r.tag(rule.per)))
    return None if best is None else best * rule.times


def resolve_stage(experiment: str, scale: str, overrides: list[Override], resolved: dict[str, list[str]],
                  grid: dict[str, str]) -> list[str] | None:
    """A stage's overrides with its :class:`BestLRRule`, if any, replaced by the LR it names (``resolved``: the
    earlier stages' overrides, as they ran); None if that LR is not known (see :func:`best_lr`)."""
    rule = lr_rule(overrides)
    if rule is None:
        return list(overrides)
    if rule.stage not in resolved:
        return None
    lr = best_lr(experiment, scale, resolved[rule.stage], rule, grid)
    return None if lr is None else [*_without_rule(overrides), f"optim.lr={lr!r}"]


def resolved_stages(experiment: str, scale: str, stages: dict[str, list[Override]],
                    grid: dict[str, str]) -> dict[str, list[str]]:
    """Every stage that can be resolved now (in order, so one rule may read a stage another rule resolved)."""
    resolved: dict[str, list[str]] = {}
    for stage, overrides in stages.items():
        ready = resolve_stage(experiment, scale, overrides, resolved, grid)
        if ready is not None:
            resolved[stage] = ready
    return resolved


def stage_overrides(stage: str, overrides: list[str]) -> list[str]:
    """What every job of ``stage`` is given besides its grid point (the stage is a tag, so it is hashed)."""
    return [f"++tags.stage={stage}", *overrides]


def _sweep(key: str, values: str) -> list:
    """The values Hydra's sweeper gives ``key``, parsed as it parses them (ints, floats, strings)."""
    override = OverridesParser.create().parse_overrides([f"{key}={values}"])[0]
    return list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]


def stage_job_configs(experiment: str, scale: str, stages: dict[str, list[str]],
                      grid: dict[str, str]) -> Iterator[tuple[str, DictConfig]]:
    """(stage, configuration) of every job of ``experiment``'s ``stages`` and ``grid`` at ``scale`` (as
    :func:`stages_and_grid` returns them), validated: a bad value raises before anything runs, naming it.

    One composition per stage and value of a config-group axis (e.g. ``param=sp,mup``); the other axes
    are set on a copy, as Hydra sets command-line values on the composed configuration.
    """
    for stage, overrides in stages.items():
        pinned = [o for o in overrides if "," not in o]
        axes = {**grid, **dict(o.split("=", 1) for o in overrides if "," in o)}
        for key in {o.split("=", 1)[0] for o in pinned}:
            axes.pop(key, None)
        groups = {k: _sweep(k, v) for k, v in axes.items() if "." not in k}
        values = {k: _sweep(k, v) for k, v in axes.items() if "." in k}
        for group_point in itertools.product(*groups.values()):
            chosen = [f"{k}={v}" for k, v in zip(groups, group_point)]
            base = compose_experiment(experiment, scale, *stage_overrides(stage, pinned), *chosen)
            for point in itertools.product(*values.values()):
                cfg = copy.deepcopy(base)
                for key, value in zip(values, point):
                    OmegaConf.update(cfg, key, value, merge=True)
                validate(cfg)
                yield stage, cfg


def stage_config_hashes(experiment: str, scale: str, stages: dict[str, list[str]],
                        grid: dict[str, str]) -> dict[str, set[str]]:
    """{stage: the configuration hash of every job it launches} (see :func:`stage_job_configs`)."""
    hashes: dict[str, set[str]] = {stage: set() for stage in stages}
    for stage, cfg in stage_job_configs(experiment, scale, stages, grid):
        hashes[stage].add(config_hash(cfg))
    return hashes


def job_config_hashes(experiment: str, scale: str) -> set[str]:
    """The configuration hash of every job that running ``experiment``'s stages at ``scale`` launches (a stage
    whose LR an earlier stage's results name only once those results are in MLflow)."""
    stages, grid = stages_and_grid(experiment, scale)
    return set().union(*stage_config_hashes(experiment, scale, resolved_stages(experiment, scale, stages, grid),
                                            grid).values())
