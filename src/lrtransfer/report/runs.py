"""An experiment's runs as the reports see them: pulled from MLflow, one per configuration."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..config import NO_RESIDUAL_BRANCHES
from ..tracking import client_for


@dataclass
class RunRecord:
    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float]
    client: object = field(repr=False)
    _histories: dict = field(default_factory=dict, repr=False)
    loss_metric: str = "final/train_loss"  # what the report calls the run's final loss (see load_runs)
    params: dict[str, str] = field(default_factory=dict, repr=False)  # the run's logged configuration

    @property
    def stage(self) -> str:
        return self.tags.get("stage", self.tags.get("param", "main"))

    def tag(self, key: str) -> float:
        return float(self.tags[key])

    @property
    def lr(self) -> float:
        return self.tag("lr")

    @property
    def diverged(self) -> bool:
        return self.tags.get("diverged") == "true"

    @property
    def final_loss(self) -> float:
        return self.metrics.get(self.loss_metric, math.nan)

    def history(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of a per-step metric, sorted by step; empty arrays if never logged."""
        if key not in self._histories:
            points = sorted((m.step, m.value) for m in self.client.get_metric_history(self.run_id, key))
            self._histories[key] = (np.array([p[0] for p in points], dtype=int),
                                    np.array([p[1] for p in points], dtype=float))
        return self._histories[key]


def aligned(series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(the steps every one of several (steps, values) histories logged, values[history, step] there)."""
    steps = np.array(sorted(set.intersection(*(set(s.tolist()) for s, _ in series))), dtype=int)
    values = [[v[np.searchsorted(s, t)] for t in steps] for s, v in series]
    return steps, np.array(values, dtype=float).reshape(len(series), len(steps))


# Tags that name a configuration apart from its seed: runs equal in all of them are seeds of one configuration.
CONFIGURATION_TAGS = ("stage", "model", "param", "optim", "data", "width", "depth", "lr", "init_scale", "fslr_mode",
                      "norm")


class SeedMean(RunRecord):
    """Several seeds of one configuration seen as one run, as the notes' 2-seed criteria read them.

    The final loss, like every final metric all seeds logged, is the seeds' mean (a diverged seed counts with
    its capped loss); the configuration counts as diverged if any seed diverged; a history is the mean over the
    seeds that did not diverge (all of them if every seed did), at the steps all of those logged.
    """

    def __init__(self, seeds: list[RunRecord]):
        first = seeds[0]
        common = set.intersection(*(set(r.metrics) for r in seeds))
        super().__init__(first.run_id, {k: v for k, v in first.tags.items() if k != "seed"},
                         {k: float(np.mean([r.metrics[k] for r in seeds])) for k in sorted(common)}, first.client,
                         params={k: v for k, v in first.params.items() if k != "seed"})
        self.seeds = seeds

    @property
    def diverged(self) -> bool:
        return any(r.diverged for r in self.seeds)

    @property
    def final_loss(self) -> float:
        return float(np.mean([r.final_loss for r in self.seeds]))

    def history(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        kept = [r for r in self.seeds if not r.diverged] or self.seeds
        steps, values = aligned([r.history(key) for r in kept])
        return steps, values.mean(axis=0)


def configurations(runs: list[RunRecord]) -> list[list[RunRecord]]:
    """The runs grouped by configuration: each group holds the seeds of one configuration."""
    groups: dict[tuple, list[RunRecord]] = {}
    for r in runs:
        groups.setdefault(tuple(r.tags.get(k) for k in CONFIGURATION_TAGS), []).append(r)
    return list(groups.values())


def merge_seeds(runs: list[RunRecord]) -> list[RunRecord]:
    """One record per configuration: a lone run as it is, several seeds as their :class:`SeedMean`."""
    return [rs[0] if len(rs) == 1 else SeedMean(sorted(rs, key=lambda r: _seed_order(r.tags.get("seed", ""))))
            for rs in configurations(runs)]


def single_seed_views(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """{seed: the runs as if only that seed had been run}: configurations run with several seeds keep that
    seed's run (none if it is missing), lone runs stay in every view.  Empty if no configuration has
    several seeds.  Reading the claims on each view shows whether a seed-mean verdict holds seed by seed."""
    groups = configurations(runs)
    seeds = sorted({r.tags.get("seed", "") for g in groups if len(g) > 1 for r in g}, key=_seed_order)
    return {seed: [r for g in groups for r in g if len(g) == 1 or r.tags.get("seed", "") == seed]
            for seed in seeds}


def _seed_order(seed: str) -> tuple:
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


@dataclass
class ExperimentRuns:
    finished: list[RunRecord]
    failed: int  # configurations whose runs all ended FAILED or KILLED (left out of every figure and claim)
    missing: int  # configurations with no run at all
    parent_run_id: str | None  # the latest sweep of this experiment and scale: where the report goes

    @cached_property
    def merged(self) -> list[RunRecord]:
        """What every report reads: one record per configuration, several seeds as their :class:`SeedMean`
        (``finished`` keeps the single runs, which the reports count; single seeds are read alone by
        :func:`single_seed_views`)."""
        return merge_seeds(self.finished)


# Super Consistency picks the best LR by the train loss on a fixed batch at the end of training (criterion A1);
# the FLeRM paper by the mean train loss of the last batches, and so does sc_linear, whose full-batch GD ends at
# machine precision for every stable LR, so that only the loss over the whole run tells LRs apart.
FIXED_BATCH_LOSS = {"sc_width", "sc_width_resmlp", "sc_ntk", "sc_depth", "sc_adam"}


def final_loss_metric(experiment: str) -> str:
    """The metric that is a run's final loss for ``experiment``: what its best LRs are picked by."""
    return "final/fixed_train_loss" if experiment in FIXED_BATCH_LOSS else "final/train_loss"


def load_runs(uri: str, experiment: str, scale: str, hashes: set[str] | None = None,
              loss_metric: str = "final/train_loss") -> ExperimentRuns:
    """Finished runs of ``experiment`` at ``scale``, the latest of each configuration hash; with ``hashes``
    (the experiment's jobs as configured now) only those, so runs of earlier settings are left out.
    ``loss_metric``: the metric each run's ``final_loss`` reads (the FLeRM paper's window mean, or Super
    Consistency's fixed-batch train loss at the end)."""
    client = client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return ExperimentRuns([], 0, len(hashes or ()), None)
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.scale = '{scale}'", max_results=50000,
                              order_by=["attributes.start_time DESC"])
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    jobs = [r for r in runs if r.data.tags.get("sweep") != "true"
            and (hashes is None or r.data.tags.get("config_hash") in hashes)]
    latest: dict[str, RunRecord] = {}
    for r in jobs:
        key = r.data.tags.get("config_hash", r.info.run_id)
        if r.info.status == "FINISHED" and key not in latest:
            latest[key] = RunRecord(r.info.run_id, dict(r.data.tags), dict(r.data.metrics), client,
                                    loss_metric=loss_metric, params=dict(r.data.params))
    failed = {r.data.tags.get("config_hash", r.info.run_id) for r in jobs
              if r.info.status in ("FAILED", "KILLED")} - set(latest)
    missing = len(hashes - set(latest) - failed) if hashes is not None else 0
    return ExperimentRuns(list(latest.values()), len(failed), missing, parents[0].info.run_id if parents else None)


# The configuration keys a report's setup table shows.
SETUP_KEYS = ("model.name", "data.name", "param.name", "param.readout_zero_init", "optim.name", "optim.lr",
              "model.width", "model.depth", "model.layers_per_block", "model.base_width", "model.base_depth",
              "model.branch_scale", "model.branch_mult", "model.norm", "model.norm_affine", "model.init",
              "model.init_scale", "train.steps", "train.batch_size",
              "train.warmup_steps", "seed", "measure.spectra.every", "measure.spectra.batch_size", "fslr.mode")


def _ordered(values: set[str]) -> list[str]:
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def _relevant(key: str, params: list[dict[str, str]]) -> bool:
    """The norm settings only where a Transformer ran, the init style only where a ResMLP ran, the
    residual-branch settings only where a model with residual branches ran, the measurement batch only where
    spectra were measured."""
    if key in ("model.layers_per_block", "model.branch_scale", "model.branch_mult"):
        return any(p.get("model.name", "") not in NO_RESIDUAL_BRANCHES and key in p for p in params)
    if key in ("model.norm", "model.norm_affine"):
        return any(p.get("model.name") == "transformer" for p in params)
    if key == "model.init":
        return any(p.get("model.name") == "resmlp" for p in params)
    if key == "measure.spectra.batch_size":
        return any(p.get("measure.spectra.every", "0") != "0" for p in params)
    return any(key in p for p in params)


def setup_table(runs: list[RunRecord], order: list[str] = ()) -> dict[str, dict[str, str]]:
    """{stage: {config key: its values across the stage's runs}}, read from the runs' logged parameters, so a
    report states the settings of the runs it was built from (smoke, small or paper); stages in ``order`` (the
    order they run in) first, any other by name."""
    table: dict[str, dict[str, str]] = {}
    for stage in sorted({r.stage for r in runs}, key=lambda s: (order.index(s) if s in order else len(order), s)):
        params = [r.params for r in runs if r.stage == stage]
        table[stage] = {key: ", ".join(_ordered({p[key] for p in params if key in p}))
                        for key in SETUP_KEYS if _relevant(key, params)}
    return table


def hardware_note(runs: list[RunRecord]) -> str:
    """Where the runs were recorded, from their tags: "AMD EPYC (AVX512), 1 torch thread: 90 runs".  Their
    last bits depend on it, and chaotic large-LR runs carry those into the claims."""
    counts = Counter((r.tags.get("processor"), r.tags.get("cpu_capability"), r.tags.get("torch_threads"))
                     for r in runs)
    parts = [f"{processor or 'processor not recorded'}{f' ({capability})' if capability else ''}"
             + (f", {threads} torch thread{'s' if threads != '1' else ''}" if threads else "")
             + f": {n} run{'s' if n != 1 else ''}"
             for (processor, capability, threads), n in counts.most_common()]
    return "Recorded on " + "; ".join(parts) + "." if parts else ""
