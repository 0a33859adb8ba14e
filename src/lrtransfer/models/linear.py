"""The two-layer linear network f(x) = vᵀWx of the Super Consistency theory section."""

from __future__ import annotations

import torch

from ..parametrization import Parametrization
from .base import ScalableModel
from .layers import ScaledLinear


class LinearNet(ScalableModel):
    task = "regression"

    def __init__(self, in_dim: int, out_dim: int, width: int, *, base_width: int | None = None,
                 param: Parametrization | str = "ntp"):
        super().__init__(width, 1, base_width, 1)
        self.input = ScaledLinear(in_dim, width, "input", bias=False, width_mult=self.width_mult)
        self.readout = ScaledLinear(width, out_dim, "readout", bias=False, width_mult=self.width_mult)
        self.parametrize(param)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.input(x.flatten(1)))
