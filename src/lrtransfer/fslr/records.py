"""Base records: the per-tensor Δ_ℓF(η=1) series of a base run, as plain JSON-able dicts.

    {"meta":   {"model": ..., "width": ..., "depth": ..., "init_scale": ..., "lr": ..., "seed": ...,
                "every": ..., "method": ..., ...},
     "steps":  [0, 100, 200, ...],                     # the training step of each estimate
     "series": {param_name: [value per estimate]}}     # one value per entry of "steps"
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import UserError

PER_RUN_KEYS = ("seed", "run_id")


class BaseRecordError(UserError, ValueError):
    """A base record that is malformed, incompatible with another, or does not fit the target model."""


def new_record(meta: Mapping) -> dict:
    return {"meta": dict(meta), "steps": [], "series": {}}


def append_estimate(record: dict, step: int, values: Mapping[str, float]) -> None:
    """Add the estimates made at ``step``; every estimate must cover the same tensors."""
    if record["steps"] and set(values) != set(record["series"]):
        changed = sorted(set(values) ^ set(record["series"]))[0]
        raise BaseRecordError(f"estimate at step {step}: tensor {changed!r} is not in every estimate of the record")
    record["steps"].append(int(step))
    for name, value in values.items():
        record["series"].setdefault(name, []).append(float(value))


def check_record(record: Mapping, label: str = "base record") -> None:
    missing = [k for k in ("meta", "steps", "series") if k not in record]
    if missing:
        raise BaseRecordError(f"{label}: no {missing[0]!r} entry; not a base record")
    for name, series in record["series"].items():
        if len(series) != len(record["steps"]):
            raise BaseRecordError(f"{label}: tensor {name!r} has {len(series)} values for "
                                  f"{len(record['steps'])} steps")


def save_record(record: Mapping, path: str | Path) -> None:
    check_record(record, str(path))
    Path(path).write_text(json.dumps(record, indent=1))


def load_record(path: str | Path) -> dict:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BaseRecordError(f"base record {path}: cannot be read ({exc})") from exc
    check_record(record, str(path))
    return record


def average_records(records: Sequence[Mapping], per_run_keys: Sequence[str] = PER_RUN_KEYS) -> dict:
    """Elementwise mean over records (seeds) of one base setting.

    The records must agree on the tensors and every meta entry except ``per_run_keys``, which become
    lists in the averaged record's meta, and on their estimate steps up to the shortest record.  A seed
    that diverged stopped recording early: each step is averaged over the records that reach it (so
    periodic FLeRM can follow the survivors), and meta ``seeds_per_step`` says how many those are.
    """
    if not records:
        raise BaseRecordError("no base records to average")
    for i, record in enumerate(records):
        check_record(record, f"base record #{i}")
    first = records[0]
    longest = max(records, key=lambda r: len(r["steps"]))
    for i, record in enumerate(records):
        keys = (set(first["meta"]) | set(record["meta"])) - set(per_run_keys)
        for key in sorted(keys):
            if first["meta"].get(key) != record["meta"].get(key):
                raise BaseRecordError(f"cannot average base records #0 and #{i}: meta {key!r} differs "
                                      f"({first['meta'].get(key)!r} vs {record['meta'].get(key)!r})")
        if record["steps"] != longest["steps"][:len(record["steps"])]:
            raise BaseRecordError(f"cannot average base record #{i} with the others: its estimate steps differ")
        if set(record["series"]) != set(first["series"]):
            name = sorted(set(record["series"]) ^ set(first["series"]))[0]
            raise BaseRecordError(f"cannot average base records #0 and #{i}: tensor {name!r} is only in one")
    meta = {k: v for k, v in first["meta"].items() if k not in per_run_keys}
    meta.update({k: [r["meta"][k] for r in records] for k in per_run_keys if k in first["meta"]})
    counts = [sum(len(r["steps"]) > i for r in records) for i in range(len(longest["steps"]))]
    meta["seeds_per_step"] = counts
    series = {name: [sum(r["series"][name][i] for r in records if len(r["steps"]) > i) / n
                     for i, n in enumerate(counts)] for name in first["series"]}
    return {"meta": meta, "steps": list(longest["steps"]), "series": series}
