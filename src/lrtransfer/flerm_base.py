"""Where FLeRM's base record comes from: an explicit file or run, or the base model's runs in MLflow.

The base model is the target's configuration at ``model.base_width``, ``model.base_depth`` and
``fslr.base.init_scale``, trained with ``fslr.mode=record``: the same model otherwise, parametrization,
optimizer and base LR, data, batch size, LR schedule and FSLR estimator.  Record runs carry that as the tag
``fslr_base_key`` (:func:`base_key`), so a base recorded with other settings (another scale's batch size,
say, in the same MLflow experiment) is never taken.  Records of every matching finished run (one per seed)
are averaged elementwise.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from .config import fingerprint
from .fslr import BaseRecordError, average_records, check_record, load_record, map_base_record

RECORD_ARTIFACT = "fslr/record.json"


# What a base record does not depend on: where things are stored, how the run is measured and logged,
# its seed (records of all seeds are averaged), and how long it trains (a target reads the steps it needs).
_NOT_IN_BASE_KEY = ("tracking", "reuse", "stages", "device", "tags", "seed", "scale", "measure")
_TRAIN_IN_BASE_KEY = ("batch_size", "warmup_steps", "schedule")
_FSLR_IN_BASE_KEY = ("method", "warmup_samples", "beta", "every")  # every: the record's step spacing


def base_key(cfg, width: int, depth: int, init_scale: float) -> str:
    """Fingerprint of the record run ``cfg`` would be at ``width``, ``depth`` and ``init_scale``: the tag a
    record run carries for its own sizes, and the one a FLeRM target looks for at its base sizes."""
    c = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for key in _NOT_IN_BASE_KEY:
        c.pop(key, None)
    c["model"].update(width=int(width), depth=int(depth), init_scale=float(init_scale))
    c["data"] = {k: v for k, v in c["data"].items() if k not in ("path", "cache_dir")}
    c["train"] = {k: c["train"][k] for k in _TRAIN_IN_BASE_KEY}
    c["fslr"] = {k: c["fslr"][k] for k in _FSLR_IN_BASE_KEY}
    return fingerprint(c)


def target_base_key(cfg) -> str:
    """The base key a FLeRM target at ``cfg`` searches for (its base sizes and init scale)."""
    return base_key(cfg, cfg.model.base_width, cfg.model.base_depth, cfg.fslr.base.init_scale)


def base_run_filter(cfg) -> str:
    return (f"tags.fslr_mode = 'record' and tags.fslr_base_key = '{target_base_key(cfg)}' "
            "and attributes.status = 'FINISHED'")


def searched_base(cfg) -> bool:
    """Whether the base record is found in MLflow by the base model's settings (not a given file or run)."""
    return not (cfg.fslr.base.path or cfg.fslr.base.run_id)


def base_runs(cfg, client) -> tuple[list, str]:
    """(every finished record run of this target's base model, the experiment searched)."""
    name = cfg.fslr.base.experiment or cfg.tracking.experiment
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], filter_string=base_run_filter(cfg), max_results=1000) if exp else []
    return runs, name


def base_changed_since(cfg, client, run) -> bool:
    """Whether a base record that a FLeRM target at ``cfg`` would read now finished after ``run`` started
    (a seed added, or the base rerun): ``run``'s LRs came from another record, so it is not a result to reuse."""
    return searched_base(cfg) and any(r.info.end_time > run.info.start_time for r in base_runs(cfg, client)[0])


def _run_record(client, run_id: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, RECORD_ARTIFACT, tmp)
        except Exception as exc:
            raise BaseRecordError(f"fslr.base.run_id={run_id}: no {RECORD_ARTIFACT} artifact ({type(exc).__name__})") from None
        record = json.loads(Path(path).read_text())
    check_record(record, f"base run {run_id}")
    return record


def find_base_record(cfg, client, value) -> tuple[dict, str]:
    """-> (averaged base record, a description of where it came from)."""
    base = cfg.fslr.base
    if base.path:
        return load_record(base.path), f"file {base.path}"
    if base.run_id:
        return _run_record(client, base.run_id), f"run {base.run_id}"
    runs, name = base_runs(cfg, client)
    if not runs:
        raise BaseRecordError(
            f"fslr.mode=flerm: no finished base run in experiment {name!r} with model={value(cfg.model.name)} "
            f"width={cfg.model.base_width} depth={cfg.model.base_depth} lr={cfg.optim.lr} "
            f"init_scale={cfg.fslr.base.init_scale} and this run's other settings (data, optimizer, batch size, "
            f"schedule, FSLR estimator); run it first with fslr.mode=record model.width={cfg.model.base_width} "
            f"model.depth={cfg.model.base_depth}, or set fslr.base.run_id / fslr.base.path")
    records = [_run_record(client, r.info.run_id) for r in runs]
    return average_records(records), f"{len(records)} base run(s) in experiment {name!r}"


def mapped_base_series(cfg, client, value, target_names) -> tuple[dict[str, list[float]], str]:
    record, source = find_base_record(cfg, client, value)
    base_depth = int(record["meta"].get("depth", cfg.model.base_depth))
    return map_base_record(record["series"], target_names, base_depth, cfg.model.depth, label=source,
                           split_depth=cfg.fslr.split_depth), source
