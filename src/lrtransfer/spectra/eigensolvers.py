"""Top eigenpairs of a symmetric :class:`Operator`: Lanczos (accurate default) and deflated power iteration.

Lanczos keeps every basis vector and re-orthogonalises against all of them, so its Ritz values stay
accurate to working precision (no spurious copies) at the price of one stored vector per product.
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
    works in blocks of k vectors (so that eigenvalues repeated up to k times are found): for k = 1 it
    starts from their sum, for k ≥ 2 from the first k; power iteration starts from ``init[i]`` for the
    i-th eigenvector.  Without ``init``, Lanczos starts from random vectors, the first of them plus the
    operator's ``guess`` (both normalised) where it has one: the Hessian's, its Gauss-Newton mean mode, saves
    it 2 of 5 products at initialisation (scripts/bench_spectra.py), and the random half keeps every
    eigenvector in reach when the guess vanishes or misses one.  Power iteration always starts at random, as
    PyHessian.
    ``max_iter`` bounds the number of products (Lanczos: rounded down to whole blocks).
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
        if max_iter is not None and max_iter < k:
            raise ValueError(f"max_iter={max_iter} must be at least k={k}: Lanczos needs one block of k vectors")
        tol = torch.finfo(op.dtype).eps ** 0.5 if tol is None else tol
        return lanczos(op, k, tol, max_iter or LANCZOS_MAX_ITER, _block_start(op, k, init, generator), generator)
    if method == "power":
        return power_iteration(op, k, POWER_TOL if tol is None else tol, max_iter or POWER_MAX_ITER,
                               init, generator)
    raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")


def _orthogonalise(v: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``v`` (a vector, or vectors as rows) made orthogonal to the rows of ``basis``."""
    # Classical Gram-Schmidt done twice: "twice is enough" for orthogonality to working precision.
    for _ in range(2):
        v = v - (v @ basis.T) @ basis
    return v


def _normalise(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm().clamp_min(torch.finfo(v.dtype).tiny)


def _block_start(op: Operator, k: int, init: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    """The first Lanczos block: k = 1 starts from the sum of ``init``; a block of k ≥ 2 from its first k rows
    (fresh random ones where it has fewer), so that every warm-start direction enters the Krylov space.
    A cold start (no ``init``) is random, its first row tilted toward the operator's guess."""
    if init is None:
        start = op.randn(generator, k)
        guess = None if op.guess is None else op.guess().reshape(-1).to(op.dtype)
        if guess is not None and bool(guess.norm() > 0) and bool(torch.isfinite(guess).all()):
            start[0] = _normalise(start[0]) + _normalise(guess)
        return start
    if k == 1:
        return init.sum(0)[None]
    return torch.cat([init[:k], op.randn(generator, k - len(init[:k]))])


def _orthonormal_block(w: torch.Tensor, basis: torch.Tensor, floor: float, op: Operator,
                       generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gram-Schmidt of the rows of ``w`` (already orthogonal to ``basis``) into q with w = Rᵀq, R upper
    triangular.  A row whose remaining norm is ≤ ``floor`` spans nothing new: it is replaced by a random
    direction orthogonal to everything, with a zero coupling (the Krylov space found is invariant).
    Returns (q, the coupling R of the block tridiagonal matrix, R as computed, for the residuals)."""
    b = len(w)
    q = torch.empty_like(w)
    exact = torch.zeros(b, b, dtype=torch.float64)
    for i in range(b):
        v = w[i]
        for _ in range(2):  # twice is enough
            c = q[:i] @ v
            exact[:i, i] += c.double().cpu()
            v = v - q[:i].T @ c
        exact[i, i] = v.norm().item()
        if exact[i, i] > floor:
            q[i] = v / exact[i, i].item()
        else:
            q[i] = _normalise(_orthogonalise(op.randn(generator), torch.cat([basis, q[:i]])))
    coupling = exact.clone()
    replaced = exact.diagonal() <= floor
    coupling[replaced, replaced] = 0.0  # a replaced row couples to nothing before it; later rows' projections stay
    return q, coupling, exact


def lanczos(op: Operator, k: int, tol: float, max_iter: int, start: torch.Tensor,
            generator: torch.Generator) -> EigenResult:
    """Block Lanczos with blocks of ``len(start)`` = k vectors and full re-orthogonalisation.

    A single start vector spans only one direction of each eigenspace, so it cannot see an eigenvalue
    repeated twice (the second copy would be replaced by the next eigenvalue down, with small residuals);
    a block of k vectors finds eigenvalues repeated up to k times.  k = 1 is classical Lanczos.
    """
    capacity = min(max_iter, op.dim)  # basis vectors; the last block is cut to fit
    # Storage starts at 16 vectors (4 blocks if k > 4) and doubles (k = 1 solves of 5-15 products copy nothing):
    # reserving all max_iter vectors up front would hold 10 GB of GPU memory for sc_adam's 26M-parameter
    # paper-scale Transformer, however few products it needs.
    basis = torch.empty(min(capacity, max(16, 4 * len(start))), op.dim, dtype=op.dtype, device=op.device)
    t = torch.zeros(capacity, capacity, dtype=torch.float64)  # the block tridiagonal projection
    block, lo = _orthonormal_block(start, basis[:0], 0.0, op, generator)[0], 0
    while True:
        hi = lo + len(block)
        if hi > len(basis):
            basis = torch.cat([basis[:lo], basis.new_empty(min(capacity, 2 * len(basis)) - lo, op.dim)])
        basis[lo:hi] = block
        w = torch.stack([op(v) for v in block])
        diag = (block @ w.T).double().cpu()
        t[lo:hi, lo:hi] = (diag + diag.T) / 2
        w = _orthogonalise(w, basis[:hi])
        theta, s = torch.linalg.eigh(t[:hi, :hi])
        scale = theta.abs().max().item()
        block, coupling, exact = _orthonormal_block(w, basis[:hi], tol * scale, op, generator)
        # For a Ritz pair (θ, Vᵀs) the residual AVᵀs − θVᵀs is (next block)ᵀ·R·s_last, so its norm is ‖R s_last‖.
        residuals = (exact @ s[lo:hi, -k:]).norm(dim=0)
        converged = hi >= k and bool((residuals <= tol * scale).all())
        if converged or hi == capacity:
            break
        block, coupling = block[:capacity - hi], coupling[:capacity - hi]
        t[hi:hi + len(block), lo:hi] = coupling
        t[lo:hi, hi:hi + len(block)] = coupling.T
        lo = hi
    if not converged and hi < op.dim:
        warnings.warn(f"Lanczos stopped at max_iter={max_iter} before reaching tol={tol:g} "
                      f"(largest residual {residuals.max().item() / max(scale, 1e-300):.1e} relative)",
                      stacklevel=3)
    top = s[:, -k:].flip(1).to(op.device, op.dtype)  # (m, k), descending Ritz values
    return EigenResult(theta[-k:].flip(0).to(op.device, op.dtype), top.T @ basis[:hi])



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
