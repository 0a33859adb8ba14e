"""Coordinate check: the community's correctness test for µP (and depth-µP).

Train models of several widths (or depths) for a few steps on one fixed batch and record, per layer,
the RMS change of that layer's output on the batch.  Under µP the changes are O(1) in width
(log-log slope ≈ 0); under SP they grow with width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .models import ScaledConv, ScaledLinear
from .optim import build_optimizer

LOGITS = "logits"
FEATURES = "features"  # the readout's input: the last hidden representation


def _layer_outputs(model: nn.Module, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    outputs: dict[str, torch.Tensor] = {}
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o.detach()))
             for name, module in model.named_modules() if isinstance(module, (ScaledLinear, ScaledConv))]
    hooks.append(model.readout.register_forward_hook(lambda m, i, o: outputs.__setitem__(FEATURES, i[0].detach())))
    try:
        with torch.no_grad():
            outputs[LOGITS] = model(inputs).detach()
    finally:
        for h in hooks:
            h.remove()
    return outputs


def output_changes(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: Callable,
                   optimizer: str, lr: float, steps: int) -> dict[str, float]:
    """RMS over the batch and features of each layer's output change after ``steps`` steps."""
    before = _layer_outputs(model, inputs)
    opt = build_optimizer(model, optimizer, lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(inputs), targets).backward()
        opt.step()
    after = _layer_outputs(model, inputs)
    return {k: float((after[k] - before[k]).pow(2).mean().sqrt()) for k in before}


def coord_check(make_model: Callable[[int], nn.Module], scales: Sequence[int], inputs: torch.Tensor,
                targets: torch.Tensor, loss_fn: Callable, *, optimizer: str, lr: float, steps: int = 3,
                seeds: Sequence[int] = (0, 1, 2)) -> dict[str, dict[int, float]]:
    """{layer: {scale: mean RMS change over seeds}} for models ``make_model(scale)``.

    Layers are matched by name, so only layers present at every scale are reported.
    """
    per_scale: dict[int, dict[str, float]] = {}
    for scale in scales:
        runs = []
        for seed in seeds:
            torch.manual_seed(seed)
            runs.append(output_changes(make_model(scale), inputs, targets, loss_fn, optimizer, lr, steps))
        per_scale[scale] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    common = set.intersection(*(set(v) for v in per_scale.values()))
    return {layer: {s: per_scale[s][layer] for s in scales} for layer in sorted(common)}


def log_log_slope(values: dict[int, float]) -> float:
    """Least-squares slope of log(value) against log(scale)."""
    x = np.log(np.array(list(values.keys()), dtype=float))
    y = np.log(np.array(list(values.values()), dtype=float))
    return float(np.polyfit(x, y, 1)[0])
