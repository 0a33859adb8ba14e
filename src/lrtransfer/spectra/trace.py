"""Stochastic trace estimation from matrix-vector products: Hutchinson and Hutch++.

Hutch++ (Meyer, Musco, Musco & Woodruff 2021) spends a third of the products on a sketch of the top
eigenspace, whose trace it takes exactly, and estimates only the remainder with Hutchinson probes;
its error falls like 1/m instead of 1/√m.  With at least ``dim`` products the trace is taken exactly
from the unit vectors, which is cheaper than either estimator.
"""

from __future__ import annotations

import torch

from .operator import Operator

TRACE_METHODS = ("hutch++", "hutchinson")


def _rademacher(op: Operator, generator: torch.Generator, n: int) -> torch.Tensor:
    signs = torch.randint(0, 2, (n, op.dim), generator=generator, device=op.device)
    return (2 * signs - 1).to(op.dtype)


def _apply(op: Operator, vectors: torch.Tensor) -> torch.Tensor:
    return torch.stack([op(v) for v in vectors])


def estimate_trace(op: Operator, num_probes: int, method: str = "hutch++", seed: int = 0) -> float:
    """tr(A) from ``num_probes`` products with A (exact when ``num_probes >= op.dim``)."""
    if method not in TRACE_METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(TRACE_METHODS)}")
    if num_probes >= op.dim:
        total, e = 0.0, torch.zeros(op.dim, dtype=op.dtype, device=op.device)
        for i in range(op.dim):
            e[i] = 1.0
            total += op(e)[i].item()
            e[i] = 0.0
        return total
    generator = op.generator(seed)
    if method == "hutchinson":
        z = _rademacher(op, generator, num_probes)
        return (z * _apply(op, z)).sum().item() / num_probes
    if num_probes < 3:
        raise ValueError(f"hutch++ needs num_probes >= 3, got {num_probes}")
    sketch = num_probes // 3
    q, _ = torch.linalg.qr(_apply(op, _rademacher(op, generator, sketch)).T)  # (dim, sketch) orthonormal
    top = (q.T * _apply(op, q.T)).sum().item()  # tr(QᵀAQ)
    g = _rademacher(op, generator, num_probes - 2 * sketch)
    g = g - (g @ q) @ q.T  # probes projected off the sketched space
    return top + (g * _apply(op, g)).sum().item() / len(g)
