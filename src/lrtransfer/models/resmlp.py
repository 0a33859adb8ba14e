"""Residual MLP: input layer → ``depth`` blocks x + m_L·branch(x) → readout."""

from __future__ import annotations

import torch
from torch import nn

from ..parametrization import Parametrization
from .base import ScalableModel
from .layers import Residual, ScaledLinear


class ResMLP(ScalableModel):
    """Each branch is ``layers_per_block`` × [ReLU → Linear] (pre-activation, as in both papers)."""

    def __init__(self, in_dim: int, out_dim: int, width: int, depth: int, *, layers_per_block: int = 1,
                 base_width: int | None = None, base_depth: int | None = None, bias: bool = True,
                 param: Parametrization | str = "sp", branch_scale: str = "auto", init_scale: float = 1.0,
                 branch_mult: float = 1.0, task: str = "classification"):
        super().__init__(width, depth, base_width, base_depth)
        self.task = task
        shape = dict(width_mult=self.width_mult, depth_mult=self.depth_mult)
        self.input = ScaledLinear(in_dim, width, "input", bias=bias, **shape)
        blocks = []
        for _ in range(depth):
            layers: list[nn.Module] = []
            for _ in range(layers_per_block):
                layers += [nn.ReLU(), ScaledLinear(width, width, "hidden", bias=bias, in_block=True, **shape)]
            blocks.append(Residual(nn.Sequential(*layers)))
        self.blocks = nn.Sequential(*blocks)
        self.readout = ScaledLinear(width, out_dim, "readout", bias=bias, bias_wide=False, **shape)
        self.parametrize(param, branch_scale=branch_scale, init_scale=init_scale, branch_mult=branch_mult)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.blocks(self.input(x.flatten(1))))
