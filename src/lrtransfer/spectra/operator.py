"""Symmetric linear operators on flat vectors, and the running count of products spent on them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class SpectraStats:
    """Cost of spectra computations, filled in by every function that takes ``stats=``.

    ``hvps`` counts curvature-matrix-vector products (Hessian, Gauss-Newton or NTK); each costs about
    as much as one Hessian-vector product, i.e. two to three gradients.  Pass the same object to
    several calls to add their costs up.
    """

    hvps: int = 0


class NonFiniteCurvature(ValueError):
    """A curvature-vector product came out NaN or inf: the weights or the loss are not finite."""


def require_finite(t: torch.Tensor, what: str) -> torch.Tensor:
    """``t`` unchanged, or :class:`NonFiniteCurvature` naming ``what`` if it holds NaN or inf.  Checked where
    curvature is computed, so that every eigensolver stops with this message, not with an eigh failure."""
    if not bool(torch.isfinite(t).all()):
        raise NonFiniteCurvature(f"{what} is not finite: the model's weights or loss hold NaN or inf "
                                 "(has training diverged?)")
    return t


@dataclass
class Operator:
    """A symmetric matrix known only through ``matvec`` on flat vectors of length ``dim``.

    ``guess`` (optional) returns a direction that leans toward the top eigenvectors at no extra product, such
    as the Gauss-Newton mean mode for the Hessian; Lanczos mixes it into a cold start (see ``top_eigenpairs``).
    """

    matvec: Callable[[torch.Tensor], torch.Tensor]
    dim: int
    dtype: torch.dtype
    device: torch.device
    stats: SpectraStats
    guess: Callable[[], torch.Tensor] | None = None

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.stats.hvps += 1
        return require_finite(self.matvec(v), "a curvature-vector product")

    def congruence(self, d: torch.Tensor) -> Operator:
        """The operator diag(d)·A·diag(d), e.g. D^½ H D^½ for d = D^½ (its guess: d times this one's)."""
        guess = None if self.guess is None else (lambda: d * self.guess())
        return Operator(lambda v: d * self.matvec(d * v), self.dim, self.dtype, self.device, self.stats, guess)

    def rayleigh_quotient(self, v: torch.Tensor) -> float:
        """vᵀAv / vᵀv."""
        return (torch.dot(v, self(v)) / torch.dot(v, v)).item()

    def generator(self, seed: int) -> torch.Generator:
        """A private RNG on the operator's device, so measurements never touch the global RNG stream."""
        return torch.Generator(device=self.device).manual_seed(seed)

    def randn(self, generator: torch.Generator, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, self.dim, dtype=self.dtype, device=self.device, generator=generator)
