"""Sharpness of the Adam-preconditioned Hessian and its edge-of-stability threshold (Cohen et al. 2022).

Adam's step is θ ← θ − η m̂/(√v̂ + ε) = θ − η P⁻¹m with P = (1 − β1^t)·diag(√v̂_t + ε).  Linearised, with
momentum β1, it is stable while λ_max(P⁻¹H) < (2 + 2β1)/((1 − β1)·η)  (38/η for β1 = 0.9).

Per-tensor learning rates η_g (µP, per-layer multipliers, FLeRM) belong in the preconditioner: the step
is η_ref·P̃⁻¹m with P̃ = P·η_ref/η_g, so λ_max(P̃⁻¹H) is compared with the threshold at the reference
LR η_ref.  Their ratio does not depend on the choice of η_ref; the default is the base LR (η_g / lr_mult
of this project's optimizers, i.e. η0 × the schedule factor), else the largest group LR.
AdamW's decoupled weight decay is not part of P (it only shrinks the linearised step by 1 − ηλ).
"""

from __future__ import annotations

import torch
from torch import nn

from .curvature import Curvature, LossFn, curvature
from .eigensolvers import top_eigenpairs
from .operator import SpectraStats


def _reference_lr(groups: list[dict]) -> float:
    """η0 × schedule read back as lr / lr_mult from this project's per-tensor groups, else the largest LR."""
    if all("lr_mult" in g for g in groups):
        base = [g["lr"] / g["lr_mult"] for g in groups if g["lr_mult"] > 0]
        if base:
            return max(base)
    return max(g["lr"] for g in groups)


def adam_preconditioner(curv: Curvature, optimizer: torch.optim.Optimizer,
                        reference_lr: float | None = None) -> tuple[torch.Tensor, float]:
    """(flat diagonal of P̃⁻¹, threshold (2 + 2β1)/((1 − β1)·η_ref)) from an Adam/AdamW optimizer's state."""
    if any("betas" not in g for g in optimizer.param_groups):
        raise ValueError(f"preconditioned sharpness needs Adam or AdamW, not {type(optimizer).__name__}")
    groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    betas1 = {g["betas"][0] for g in optimizer.param_groups}
    if len(betas1) != 1:
        raise ValueError(f"all parameter groups must share β1 for one stability threshold, got {sorted(betas1)}")
    beta1 = betas1.pop()
    eta_ref = _reference_lr(optimizer.param_groups) if reference_lr is None else reference_lr
    inverse = []
    for name, p in zip(curv.names, curv.params):
        state = optimizer.state.get(p, {})
        if id(p) not in groups or "exp_avg_sq" not in state:
            raise ValueError(f"parameter {name!r} has no Adam second-moment state; take an optimizer step first")
        g = groups[id(p)]
        t = float(state["step"])
        beta2 = g["betas"][1]
        v = state["max_exp_avg_sq"] if g.get("amsgrad") else state["exp_avg_sq"]
        p_diag = (1 - beta1**t) * ((v / (1 - beta2**t)).sqrt() + g["eps"])
        inverse.append((g["lr"] / eta_ref) / p_diag)
    threshold = (2 + 2 * beta1) / ((1 - beta1) * eta_ref)
    return curv.flatten(inverse).to(curv.dtype), threshold


def preconditioned_sharpness(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor,
                             optimizer: torch.optim.Optimizer, reference_lr: float | None = None,
                             tol: float | None = None, max_iter: int | None = None, seed: int = 0,
                             stats: SpectraStats | None = None) -> tuple[float, float]:
    """(λ_max(P̃⁻¹H), (2 + 2β1)/((1 − β1)·η_ref)) for an Adam/AdamW ``optimizer`` that has taken a step.

    P̃ is built from the optimizer's second-moment state and per-group LRs as described in this
    module's docstring; the threshold refers to ``reference_lr`` (default: the base LR).  Adam is at
    its edge of stability when the first number reaches the second.
    """
    with curvature(model, inputs, loss_fn, targets, stats) as curv:
        inverse, threshold = adam_preconditioner(curv, optimizer, reference_lr)
        # λ(P̃⁻¹H) = λ(P̃^-½ H P̃^-½): the symmetric form lets Lanczos run on it.
        sharpness = top_eigenpairs(curv.hessian(inverse.sqrt()), 1, "lanczos", tol, max_iter, None, seed).values
    return sharpness[0].item(), threshold
