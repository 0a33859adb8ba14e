"""Monte-Carlo estimate of the layerwise function-space learning rate.

A random linear functional of the outputs, Φ = Σ u·f / √numel(f) with u ~ N(0, I), has gradient
g_ℓ = ∂Φ/∂W_ℓ for every tensor from one backward pass, and s_ℓ = Σ g_ℓ ⊙ ΔW_ℓ satisfies
E_u[s_ℓ²] = ‖J_ℓ ΔW_ℓ‖²_RMS.  Per draw we keep raw statistics of P_ℓ = g_ℓ ⊙ ΔW_ℓ, so that several
draws (or an EMA over training) are combined before the final ratio is taken:

- ``full_cov``: [(Σ P)²], unbiased.
- ``kronecker``: [num_1, …, num_D, den] with num_d = Σ (P summed over dim d)² and den = Σ P²; the
  estimate Π_d E[num_d] / E[den]^(D−1) is exact when Cov(P) is a Kronecker product over the D
  dimensions and has much lower variance than ``full_cov``.  For 1-D tensors it equals ``full_cov``.
  Convolution kernels (more than 2 dimensions) get the ``full_cov`` statistic under ``kronecker`` too: the
  sum over positions breaks the Kronecker structure, whose limit underestimated them by 14-40% (README).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from .outputs import OutputFn, measured_outputs
from .tensors import as_floats, parameters_named

METHODS = ("full_cov", "kronecker")


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"fslr method={method!r} is not one of {', '.join(METHODS)}")


def sample_statistics(model: nn.Module, inputs: torch.Tensor, updates: Mapping[str, torch.Tensor],
                      method: str = "kronecker", output_fn: OutputFn | None = None, *,
                      params: Mapping[str, torch.Tensor] | None = None,
                      generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """One draw of u: the raw statistics (float64 vectors) of every tensor in ``updates``.

    One forward and one backward pass.  The Jacobian is taken at the model's current weights, or at
    ``params`` (name -> value for every parameter to replace) when given.
    """
    check_method(method)
    parameters_named(model, [*updates, *(params or {})])
    point = {**dict(model.named_parameters()), **(params or {})}
    # Detached leaves: gradients only for the updated tensors, and the model's .grad stays untouched.
    point = {n: t.detach().requires_grad_(n in updates) for n, t in point.items()}
    with torch.enable_grad():
        out = measured_outputs(model, inputs, output_fn, point)
        u = torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
        phi = (u * out).sum() / math.sqrt(out.numel())
        grads = torch.autograd.grad(phi, [point[n] for n in updates], materialize_grads=True)
    with torch.no_grad():
        return {n: _statistics(torch.atleast_1d(g * updates[n].to(g)), method) for n, g in zip(updates, grads)}


def _statistics(product: torch.Tensor, method: str) -> torch.Tensor:
    if method == "full_cov":
        return product.sum().square().double().reshape(1)
    if product.dim() > 2:
        product = product.reshape(-1)  # one dimension: the ratio below is then the unbiased full_cov
    nums = [product.sum(dim=d).square().sum() for d in range(product.dim())]
    return torch.stack(nums + [product.square().sum()]).double()


def squared_fslr(statistics: torch.Tensor, method: str) -> torch.Tensor:
    """The estimate of ‖J ΔW‖²_RMS from (averaged) raw statistics of one tensor."""
    if method == "full_cov":
        return statistics[0]
    nums, den = statistics[:-1], statistics[-1]
    ratio = nums.prod() / den ** (len(nums) - 1)
    return torch.where(den > 0, ratio, torch.zeros_like(ratio))  # den = 0 only when P = 0 entirely


def fslr_from_statistics(statistics: Mapping[str, torch.Tensor], method: str) -> dict[str, float]:
    """{name: ‖J_ℓ ΔW_ℓ‖_RMS estimate} from averaged raw statistics (ratio of means for kronecker)."""
    check_method(method)
    return as_floats({n: squared_fslr(s, method).sqrt() for n, s in statistics.items()})


def estimate_fslr(model: nn.Module, inputs: torch.Tensor, updates: Mapping[str, torch.Tensor],
                  num_samples: int = 1, method: str = "kronecker", output_fn: OutputFn | None = None, *,
                  generator: torch.Generator | None = None) -> dict[str, float]:
    """Estimate ‖J_ℓ ΔW_ℓ‖_RMS for every tensor in ``updates`` from ``num_samples`` draws of u.

    Each draw costs one forward and one backward pass for all tensors together; the raw statistics
    are averaged over the draws before the ratio is taken.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples={num_samples} must be at least 1")
    total = sample_statistics(model, inputs, updates, method, output_fn, generator=generator)
    for _ in range(num_samples - 1):
        draw = sample_statistics(model, inputs, updates, method, output_fn, generator=generator)
        total = {n: total[n] + draw[n] for n in total}
    return fslr_from_statistics({n: s / num_samples for n, s in total.items()}, method)
