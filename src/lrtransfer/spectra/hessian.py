"""Hessian spectra of a loss: top eigenvalues (optionally of the rescaled D^½ H D^½), trace, directional sharpness."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .curvature import LossFn, curvature
from .eigensolvers import EigenResult, top_eigenpairs
from .operator import SpectraStats
from .trace import estimate_trace

Scaling = Mapping[str, float | torch.Tensor]


def top_hessian_eigenvalues(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor,
                            k: int = 1, method: str = "lanczos", tol: float | None = None,
                            max_iter: int | None = None, init: torch.Tensor | None = None,
                            scaling: Scaling | None = None, return_vectors: bool = False, seed: int = 0,
                            stats: SpectraStats | None = None) -> torch.Tensor | EigenResult:
    """The k largest (algebraic) eigenvalues of the Hessian of ``loss_fn(model(inputs), targets)``, descending.

    The model is evaluated in eval mode at its current weights; its mode, weights and ``.grad`` are left
    as they were.  Hessian-vector products use double backward on one retained graph.

    Args:
        method: ``"lanczos"`` (full re-orthogonalisation; accurate, the default) or ``"power"`` (deflated
            power iteration with PyHessian's stopping rule and defaults: tol 1e-3 on the relative change
            of the Rayleigh quotient, at most 100 products per eigenvalue; finds the largest-magnitude
            eigenvalues).
        tol, max_iter: see :func:`lrtransfer.spectra.eigensolvers.top_eigenpairs` (Lanczos default: residual
            ≤ √eps·|λ_max|, at most 100 products; Lanczos stores one vector of parameter size per product).
        init: warm start, (m, n_params) flat vectors such as the ``vectors`` of a previous call.
        scaling: {parameter name: D (float, or tensor broadcastable to the parameter)} for every trainable
            parameter; the operator becomes D^½ H D^½.  With D = each parameter's SGD learning rate divided
            by the base LR η0 (the optimizer group's ``lr_mult``), its top eigenvalue is the rescaled
            sharpness that gradient descent's edge of stability compares with 2/η0.
        return_vectors: return ``EigenResult(values, vectors)`` with orthonormal flat eigenvectors (k, n_params),
            in the coordinates of the (scaled) operator and the order of ``model.named_parameters()``.
        seed: seed of the random start vector (a private generator; the global RNG is not touched).
        stats: a :class:`SpectraStats` whose ``hvps`` is increased by the products used.
    """
    with curvature(model, inputs, loss_fn, targets, stats) as curv:
        scaling_sqrt = curv.flatten_named(scaling).sqrt() if scaling is not None else None
        result = top_eigenpairs(curv.hessian(scaling_sqrt), k, method, tol, max_iter, init, seed)
    return result if return_vectors else result.values


def hessian_trace(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor,
                  num_probes: int = 99, method: str = "hutch++", seed: int = 0,
                  stats: SpectraStats | None = None) -> float:
    """tr(H) from ``num_probes`` Hessian-vector products: ``"hutch++"`` (default) or ``"hutchinson"``.

    With ``num_probes`` ≥ the number of parameters the trace is exact (one product per unit vector).
    """
    with curvature(model, inputs, loss_fn, targets, stats) as curv:
        return estimate_trace(curv.hessian(), num_probes, method, seed)


def directional_sharpness(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor,
                          direction: Mapping[str, torch.Tensor] | None = None,
                          stats: SpectraStats | None = None) -> float:
    """dᵀHd / ‖d‖² along ``direction`` ({parameter name: tensor}), by default the loss gradient d = g."""
    with curvature(model, inputs, loss_fn, targets, stats) as curv:
        d = curv.gradient() if direction is None else curv.flatten_named(direction)
        return curv.hessian().rayleigh_quotient(d)
