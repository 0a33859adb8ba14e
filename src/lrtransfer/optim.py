"""Optimizers with one parameter group per tensor, and the LR schedule.

Every group holds one tensor and carries ``name`` (the parameter's qualified name) and ``lr_mult``
(its parametrization LR multiplier, later overwritten per tensor by FLeRM).  The group's ``lr`` is
always ``base_lr · lr_mult · schedule(step)``; :func:`set_learning_rates` is the one place that
writes it, so schedules, parametrizations and FLeRM compose by multiplication.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine")


def build_optimizer(model: torch.nn.Module, name: str, lr: float, *, momentum: float = 0.0,
                    weight_decay: float = 0.0, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                    lr_mults: dict[str, float] | None = None) -> torch.optim.Optimizer:
    """Build SGD / Adam / AdamW over ``model`` with per-tensor groups.

    ``lr_mults`` defaults to the model's parametrization (``param_specs()``); a tensor without a spec
    gets multiplier 1.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optim.name={name!r} is not one of {', '.join(OPTIMIZERS)}")
    if lr_mults is None:
        specs = model.param_specs() if hasattr(model, "param_specs") else {}
        kind = "sgd" if name == "sgd" else "adam"
        lr_mults = {n: s.lr_mult(kind) for n, s in specs.items()}
    groups = [{"params": [p], "name": n, "lr_mult": lr_mults.get(n, 1.0), "lr": lr * lr_mults.get(n, 1.0)}
              for n, p in model.named_parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


def schedule_factor(step: int, total_steps: int, warmup_steps: int = 0, schedule: str = "constant") -> float:
    """Multiplier of the base LR at ``step`` (0-based): linear warmup, then constant or cosine to 0."""
    if schedule not in SCHEDULES:
        raise ValueError(f"train.schedule={schedule!r} is not one of {', '.join(SCHEDULES)}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_learning_rates(optimizer: torch.optim.Optimizer, base_lr: float, factor: float = 1.0) -> None:
    for group in optimizer.param_groups:
        group["lr"] = base_lr * group["lr_mult"] * factor


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    return {g["name"]: g["lr"] for g in optimizer.param_groups}
