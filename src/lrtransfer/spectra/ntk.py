"""Top eigenvalues of the empirical neural tangent kernel of the model outputs."""

from __future__ import annotations

import torch
from torch import nn

from .curvature import Curvature, curvature
from .eigensolvers import EigenResult, top_eigenpairs
from .operator import SpectraStats, require_finite

NTK_METHODS = ("auto", "exact", "lanczos")
# "auto" forms the dense Jacobian (outputs × parameters) up to this many entries, else runs Lanczos.
EXACT_MAX_ENTRIES = 2**24


def ntk_eigenpairs(curv: Curvature, k: int, method: str = "auto", tol: float | None = None,
                   max_iter: int | None = None, init: torch.Tensor | None = None, seed: int = 0) -> EigenResult:
    """Top-k eigenpairs of Θ = J Jᵀ; the vectors live in output space (one entry per example × output)."""
    if method not in NTK_METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(NTK_METHODS)}")
    n_out = curv.outputs.numel()
    if not 1 <= k <= n_out:
        raise ValueError(f"k={k} must be between 1 and the number of outputs {n_out}")
    if method == "exact" or (method == "auto" and n_out * curv.dim <= EXACT_MAX_ENTRIES):
        jac = require_finite(curv.jacobian(), "the Jacobian of the outputs")
        values, vectors = torch.linalg.eigh(jac @ jac.T)
        return EigenResult(values[-k:].flip(0), vectors[:, -k:].flip(1).T)
    return top_eigenpairs(curv.ntk(), k, "lanczos", tol, max_iter, init, seed)


def top_ntk_eigenvalues(model: nn.Module, inputs: torch.Tensor, k: int = 1, method: str = "auto",
                        tol: float | None = None, max_iter: int | None = None, seed: int = 0,
                        stats: SpectraStats | None = None) -> torch.Tensor:
    """The k largest eigenvalues of the empirical NTK Θ = J Jᵀ of the model outputs (logits), descending.

    J = ∂ vec(model(inputs)) / ∂θ over all (example, output) pairs: B·C rows for (B, C) logits and B·T·V
    rows for a language model's (B, T, V) logits (every position's outputs count).  No 1/n factor: the
    nonzero eigenvalues of J Jᵀ equal those of JᵀJ, so for a loss that averages ½‖f − y‖² over the B·C
    output entries the Gauss-Newton matrix is JᵀJ/(B·C) and its eigenvalues are these divided by B·C.

    ``method``: ``"exact"`` forms J (per example, torch.func) and takes ``eigvalsh`` of the Gram matrix;
    ``"lanczos"`` uses NTK-vector products J(Jᵀu) (a vjp and a jvp on one retained graph); ``"auto"``
    takes the exact route while J has at most 2^24 entries.  The exact route assumes the examples of
    the batch do not interact in eval mode (true for every model here; not for batch statistics).
    """
    with curvature(model, inputs, stats=stats) as curv:
        return ntk_eigenpairs(curv, k, method, tol, max_iter, None, seed).values
