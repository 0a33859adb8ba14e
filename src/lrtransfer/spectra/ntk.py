"""Top eigenvalues of the empirical neural tangent kernel of the model outputs."""

from __future__ import annotations

import torch
from torch import nn

from .curvature import Curvature, curvature
from .eigensolvers import EigenResult, top_eigenpairs
from .hessian import Scaling
from .operator import SpectraStats, require_finite

NTK_METHODS = ("auto", "exact", "lanczos")
# "auto" forms the dense Jacobian (outputs × parameters) and Gram matrix (outputs²) while neither has more
# entries than this, else runs Lanczos.
EXACT_MAX_ENTRIES = 2**24


def ntk_eigenpairs(curv: Curvature, k: int, method: str = "auto", tol: float | None = None,
                   max_iter: int | None = None, init: torch.Tensor | None = None, seed: int = 0,
                   scaling_sqrt: torch.Tensor | None = None) -> EigenResult:
    """Top-k eigenpairs of Θ = J Jᵀ (J D Jᵀ for the flat ``scaling_sqrt`` = D^½); the vectors live in output
    space (one entry per example × output)."""
    if method not in NTK_METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(NTK_METHODS)}")
    n_out = curv.outputs.numel()
    if not 1 <= k <= n_out:
        raise ValueError(f"k={k} must be between 1 and the number of outputs {n_out}")
    if method == "exact" or (method == "auto" and n_out * max(curv.dim, n_out) <= EXACT_MAX_ENTRIES):
        jac = require_finite(curv.jacobian(), "the Jacobian of the outputs")
        if scaling_sqrt is not None:
            jac = jac * scaling_sqrt
        values, vectors = torch.linalg.eigh(jac @ jac.T)
        return EigenResult(values[-k:].flip(0), vectors[:, -k:].flip(1).T)
    return top_eigenpairs(curv.ntk(scaling_sqrt), k, "lanczos", tol, max_iter, init, seed)


def top_ntk_eigenvalues(model: nn.Module, inputs: torch.Tensor, k: int = 1, method: str = "auto",
                        tol: float | None = None, max_iter: int | None = None, scaling: Scaling | None = None,
                        seed: int = 0, stats: SpectraStats | None = None) -> torch.Tensor:
    """The k largest eigenvalues of the empirical NTK Θ = J Jᵀ of the model outputs (logits), descending.

    J = ∂ vec(model(inputs)) / ∂θ over all (example, output) pairs: B·C rows for (B, C) logits and B·T·V
    rows for a language model's (B, T, V) logits (every position's outputs count).  No 1/n factor: the
    nonzero eigenvalues of J Jᵀ equal those of JᵀJ, so for a loss that averages ½‖f − y‖² over the B·C
    output entries the Gauss-Newton matrix is JᵀJ/(B·C) and its eigenvalues are these divided by B·C.

    ``method``: ``"exact"`` forms J (per example, torch.func) and takes ``eigvalsh`` of the Gram matrix;
    ``"lanczos"`` uses NTK-vector products J(Jᵀu) (a vjp and a jvp on one retained graph); ``"auto"``
    takes the exact route while J and the Gram matrix have at most 2^24 entries each.  The exact route assumes the examples of
    the batch do not interact in eval mode (true for every model here; not for batch statistics).

    ``scaling``: {parameter name: D} as in :func:`top_hessian_eigenvalues`; the kernel becomes Θ_D = J D Jᵀ.
    With D = each parameter's SGD LR / η0, one SGD step at η0 moves the outputs by −η0·Θ_D·∇_f L, so Θ_D is
    the NTK counterpart of the rescaled sharpness (under µP the raw J Jᵀ shrinks with width, Θ_D does not).
    """
    with curvature(model, inputs, stats=stats) as curv:
        scaling_sqrt = curv.flatten_named(scaling).sqrt() if scaling is not None else None
        return ntk_eigenpairs(curv, k, method, tol, max_iter, None, seed, scaling_sqrt).values
