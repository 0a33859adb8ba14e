"""Where FLeRM's base record comes from: an explicit file or run, or the base model's runs in MLflow.

The base model is the target's configuration at ``model.base_width``, ``model.base_depth`` and
``fslr.base.init_scale``, trained with ``fslr.mode=record`` at the same base LR, parametrization and
optimizer. Records of every matching finished run (one per seed) are averaged elementwise.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from .fslr import BaseRecordError, average_records, check_record, load_record, map_base_record

RECORD_ARTIFACT = "fslr/record.json"


def base_run_filter(cfg, value) -> str:
    m = cfg.model
    tags = {"fslr_mode": "record", "model": value(m.name), "param": value(cfg.param.name),
            "optim": value(cfg.optim.name), "lr": str(cfg.optim.lr), "width": str(m.base_width),
            "depth": str(m.base_depth), "init_scale": str(float(cfg.fslr.base.init_scale)),
            "data": value(cfg.data.name)}
    if value(m.name) == "transformer":
        tags["norm"] = value(m.norm)
    return " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items()) + " and attributes.status = 'FINISHED'"


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
    name = base.experiment or cfg.tracking.experiment
    exp = client.get_experiment_by_name(name)
    query = base_run_filter(cfg, value)
    runs = client.search_runs([exp.experiment_id], filter_string=query, max_results=1000) if exp else []
    if not runs:
        raise BaseRecordError(
            f"fslr.mode=flerm: no finished base run in experiment {name!r} with model={value(cfg.model.name)} "
            f"width={cfg.model.base_width} depth={cfg.model.base_depth} lr={cfg.optim.lr} "
            f"init_scale={cfg.fslr.base.init_scale}; run it first with fslr.mode=record model.width="
            f"{cfg.model.base_width} model.depth={cfg.model.base_depth}, or set fslr.base.run_id / fslr.base.path")
    records = [_run_record(client, r.info.run_id) for r in runs]
    return average_records(records), f"{len(records)} base run(s) in experiment {name!r}"


def mapped_base_series(cfg, client, value, target_names) -> tuple[dict[str, list[float]], str]:
    record, source = find_base_record(cfg, client, value)
    base_depth = int(record["meta"].get("depth", cfg.model.base_depth))
    return map_base_record(record["series"], target_names, base_depth, cfg.model.depth, label=source,
                           split_depth=cfg.fslr.split_depth), source
