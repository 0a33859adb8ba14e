"""Top eigenvalues of the Gauss-Newton part G = Jᵀ H_loss J of the Hessian H = G + R."""

from __future__ import annotations

import torch
from torch import nn

from .curvature import LossFn, curvature
from .eigensolvers import EigenResult, top_eigenpairs
from .hessian import Scaling
from .operator import SpectraStats


def top_ggn_eigenvalues(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor,
                        k: int = 1, method: str = "lanczos", tol: float | None = None,
                        max_iter: int | None = None, init: torch.Tensor | None = None,
                        scaling: Scaling | None = None, return_vectors: bool = False, seed: int = 0,
                        stats: SpectraStats | None = None) -> torch.Tensor | EigenResult:
    """The k largest eigenvalues of the generalised Gauss-Newton matrix G = Jᵀ H_loss J, descending.

    J is the Jacobian of the model outputs w.r.t. the weights and H_loss the Hessian of ``loss_fn``
    w.r.t. the outputs.  Each product is a Jacobian-vector product, an output-space Hessian product and
    a vector-Jacobian product on one retained graph.  The residual R = H − G carries the loss gradient,
    so comparing with :func:`top_hessian_eigenvalues` shows how much of the sharpness G explains.
    Arguments as in :func:`top_hessian_eigenvalues`.
    """
    with curvature(model, inputs, loss_fn, targets, stats) as curv:
        scaling_sqrt = curv.flatten_named(scaling).sqrt() if scaling is not None else None
        result = top_eigenpairs(curv.ggn(scaling_sqrt), k, method, tol, max_iter, init, seed)
    return result if return_vectors else result.values
