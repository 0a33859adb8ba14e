"""Small helpers shared by the exact and the estimated function-space learning rates."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn


def parameters_named(model: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """The model's parameters called ``names``; an unknown name is a ValueError."""
    params = dict(model.named_parameters())
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ValueError(f"the model has no parameter named {unknown[0]!r}")
    return {n: params[n] for n in names}


def as_floats(values: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Scalar tensors -> Python floats with a single device synchronisation."""
    if not values:
        return {}
    return dict(zip(values, torch.stack([v.detach().double() for v in values.values()]).tolist()))
