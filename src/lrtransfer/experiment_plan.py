"""The jobs of an experiment: its stages, the grid each one sweeps, and every job's configuration hash.

``conf/experiment/<name>.yaml`` holds a grid (``hydra.sweeper.params``) and ``stages`` that run in
order, each a sweep of the grid with the stage's overrides on top; a comma-separated stage value sweeps
that key instead of the grid's values, a single value pins it.  The hashes let the reports take exactly
the runs of the experiment as it is configured now, not runs that earlier settings left in MLflow.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from .config import compose_experiment, validate
from .trainer import config_hash


def stages_and_grid(experiment: str, scale: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """({stage name: its override strings}, {grid axis: its comma-separated values}) from one composition;
    an experiment without stages is one sweep named "main"."""
    cfg = compose_experiment(experiment, scale, return_hydra_config=True)
    stages = {name: [f"{k}={v}" for k, v in params.items()] for name, params in (cfg.stages or {"main": {}}).items()}
    grid = {k: str(v) for k, v in (cfg.hydra.sweeper.params or {}).items()}
    return stages, grid


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
    """The configuration hash of every job that running ``experiment``'s stages at ``scale`` launches."""
    return set().union(*stage_config_hashes(experiment, scale, *stages_and_grid(experiment, scale)).values())
