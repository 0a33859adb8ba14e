"""Map a base record onto a wider, deeper or differently initialised model.

Width and init scale keep every parameter name, so values copy one to one.  For depth, tensors
outside the residual blocks copy; the residuals of base block b map to the same residuals of the
contiguous target blocks m·b … m·b+m−1 (m = target depth / base depth), each with base value / m,
so that the copies of a block together move the function as much as the base block did
(``split_depth=False``, the paper's ablation, gives every copy the whole base value).

Residual ``blocks.{i}`` belongs to block i // k, where k residuals make one block (1 in the ResMLP,
2 in the Transformer: attention then MLP); k is read off the base record as its residual count /
base depth.  Mapping per block keeps the attention/MLP alternation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from .records import BaseRecordError

RESIDUAL_NAME = re.compile(r"^blocks\.(\d+)\.(.+)$")


def residuals_per_block(base_names: Iterable[str], base_depth: int, label: str) -> int:
    residuals = {int(m[1]) for m in map(RESIDUAL_NAME.match, base_names) if m}
    if len(residuals) % base_depth:
        raise BaseRecordError(f"{label}: {len(residuals)} residual branches do not make {base_depth} blocks")
    return len(residuals) // base_depth or 1


def map_base_record(base_series: Mapping[str, Sequence[float]], target_param_names: Iterable[str],
                    base_depth: int, target_depth: int, label: str = "base record",
                    split_depth: bool = True) -> dict[str, list[float]]:
    """{target name: series} from a base record's series; ``label`` names the record in errors."""
    if base_depth < 1 or target_depth % base_depth:
        raise BaseRecordError(f"{label}: target depth {target_depth} is not an integer multiple of "
                              f"base depth {base_depth}")
    copies = target_depth // base_depth
    per_block = residuals_per_block(base_series, base_depth, label)
    mapped, used = {}, set()
    for name in target_param_names:
        match = RESIDUAL_NAME.match(name)
        if match:
            block, position = divmod(int(match[1]), per_block)
            source = f"blocks.{per_block * (block // copies) + position}.{match[2]}"
            share = copies if split_depth else 1
        else:
            source, share = name, 1
        if source not in base_series:
            raise BaseRecordError(f"{label} has no series for tensor {source!r} (needed by target tensor {name!r})")
        mapped[name] = [value / share for value in base_series[source]]
        used.add(source)
    unused = sorted(set(base_series) - used)
    if unused:
        raise BaseRecordError(f"{label}: tensor {unused[0]!r} has no counterpart in the target model")
    return mapped
