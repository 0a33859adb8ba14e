"""Top eigenpairs of a symmetric :class:`Operator`: Lanczos (accurate default) and deflated power iteration.

Lanczos keeps every basis vector and re-orthogonalises against all of them, so its Ritz values stay
accurate to working precision (no spurious copies) at the price of ``max_iter × dim`` memory.
Power iteration follows PyHessian's rule (stop when the Rayleigh quotient changes by less than ``tol``
relative, at most 100 products per eigenvalue) so that the paper's numbers can be matched; it finds
the eigenvalues of largest *magnitude*, which are the top ones only when they dominate the negative part.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch

from .operator import Operator

METHODS = ("lanczos", "power")
LANCZOS_MAX_ITER = 100
POWER_TOL = 1e-3
POWER_MAX_ITER = 100


class EigenResult(NamedTuple):
    values: torch.Tensor  # (k,), descending
    vectors: torch.Tensor  # (k, dim), orthonormal rows


def top_eigenpairs(op: Operator, k: int = 1, method: str = "lanczos", tol: float | None = None,
                   max_iter: int | None = None, init: torch.Tensor | None = None, seed: int = 0) -> EigenResult:
    """The k largest eigenvalues of ``op`` (descending) and their eigenvectors.

    ``init``: (m, dim) or (dim,) starting vectors, e.g. the previous measurement's eigenvectors.  Lanczos
    starts from their sum, power iteration from ``init[i]`` for the i-th eigenvector.
    ``tol``: Lanczos stops when every top-k Ritz pair has residual ‖Ax − θx‖ ≤ tol·max|θ| (default
    √eps of the dtype, which makes separated eigenvalues accurate to about eps); a residual cannot show
    that a larger eigenvalue is still missing, so a loose tol (1e-2) sometimes returns the second one when
    the start holds little of the top eigenvector.  Power iteration stops on a relative change of the
    Rayleigh quotient below ``tol`` (default 1e-3, PyHessian's).
    """
    if not 1 <= k <= op.dim:
        raise ValueError(f"k={k} must be between 1 and the operator dimension {op.dim}")
    if init is not None:
        init = init.reshape(-1, op.dim).to(op.device, op.dtype)
    if max_iter is not None and max_iter < 1:
        raise ValueError(f"max_iter={max_iter} must be positive")
    generator = op.generator(seed)
    if method == "lanczos":
        start = init.sum(0) if init is not None else op.randn(generator)
        tol = torch.finfo(op.dtype).eps ** 0.5 if tol is None else tol
        return lanczos(op, k, tol, max_iter or LANCZOS_MAX_ITER, start, generator)
    if method == "power":
        return power_iteration(op, k, POWER_TOL if tol is None else tol, max_iter or POWER_MAX_ITER,
                               init, generator)
    raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")


def _orthogonalise(v: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    # Classical Gram-Schmidt done twice: "twice is enough" for orthogonality to working precision.
    for _ in range(2):
        v = v - basis.T @ (basis @ v)
    return v


def _normalise(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm().clamp_min(torch.finfo(v.dtype).tiny)


def _ritz(alphas: list[float], betas: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs (ascending) of the Lanczos tridiagonal matrix, in float64 on the CPU (it is tiny)."""
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas, dtype=torch.float64)
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigh(t)


def lanczos(op: Operator, k: int, tol: float, max_iter: int, start: torch.Tensor,
            generator: torch.Generator) -> EigenResult:
    steps = min(max_iter, op.dim)
    basis = torch.empty(steps, op.dim, dtype=op.dtype, device=op.device)
    alphas: list[float] = []
    betas: list[float] = []
    q = _normalise(start)
    for j in range(steps):
        basis[j] = q
        w = op(q)
        alphas.append(torch.dot(q, w).item())
        w = _orthogonalise(w, basis[:j + 1])
        beta = w.norm().item()
        theta, s = _ritz(alphas, betas)
        scale = theta.abs().max().item()
        # For a Ritz pair (θ, Qs) the residual norm is exactly β·|last component of s|.
        residuals = beta * s[-1, -k:].abs()
        converged = j + 1 >= k and bool((residuals <= tol * scale).all())
        if converged or j + 1 == steps:
            break
        if beta <= tol * scale:
            # The Krylov space is invariant but holds fewer than k eigenvalues: continue in a fresh
            # random direction (a zero coupling in the tridiagonal matrix).
            q, beta = _normalise(_orthogonalise(op.randn(generator), basis[:j + 1])), 0.0
        else:
            q = w / beta
        betas.append(beta)
    if not converged and j + 1 < op.dim:
        warnings.warn(f"Lanczos stopped at max_iter={max_iter} before reaching tol={tol:g} "
                      f"(largest residual {residuals.max().item() / max(scale, 1e-300):.1e} relative)",
                      stacklevel=3)
    m = len(alphas)
    top = s[:, -k:].flip(1).to(op.device, op.dtype)  # (m, k), descending Ritz values
    return EigenResult(theta[-k:].flip(0).to(op.device, op.dtype), top.T @ basis[:m])


def power_iteration(op: Operator, k: int, tol: float, max_iter: int, init: torch.Tensor | None,
                    generator: torch.Generator) -> EigenResult:
    vectors = torch.empty(0, op.dim, dtype=op.dtype, device=op.device)
    values = []
    for i in range(k):
        v = init[i] if init is not None and i < len(init) else op.randn(generator)
        value = None
        for _ in range(max_iter):
            v = _normalise(_orthogonalise(v, vectors))  # deflation: stay orthogonal to those found
            w = op(v)
            rayleigh = torch.dot(v, w).item()
            done = value is not None and abs(rayleigh - value) / (abs(value) + 1e-6) < tol
            v, value = w, rayleigh
            if done:
                break
        vectors = torch.cat([vectors, _normalise(_orthogonalise(v, vectors))[None]])
        values.append(value)
    order = torch.tensor(values, dtype=torch.float64).argsort(descending=True)
    return EigenResult(torch.tensor(values, dtype=op.dtype, device=op.device)[order.to(op.device)],
                       vectors[order.to(op.device)])
