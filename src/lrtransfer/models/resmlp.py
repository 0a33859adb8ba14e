"""Residual MLP: input layer → ``depth`` blocks x + m_L·branch(x) → readout."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..parametrization import Parametrization
from .base import ScalableModel
from .layers import Residual, ScaledLinear


class ResMLP(ScalableModel):
    """Each branch is ``layers_per_block`` × [ReLU → Linear] (pre-activation, as in both papers).

    ``init``: ``abc``, the parametrization's normal weights and zero biases, or ``flerm_resmlp``, the FLeRM
    paper's ResMLP code on top of the parametrization's scales: every branch weight follows a ReLU and is
    He-normal (gain √2), the branch biases and the readout have nn.Linear's default init, U(±1/√fan_in) (the
    readout weight's bound is the parametrization's std, 1/√fan_in under SP). Under µP those biases shrink
    with width, towards µP's usual zero init.
    """

    INITS = ("abc", "flerm_resmlp")

    def __init__(self, in_dim: int, out_dim: int, width: int, depth: int, *, layers_per_block: int = 1,
                 base_width: int | None = None, base_depth: int | None = None, bias: bool = True,
                 param: Parametrization | str = "sp", branch_scale: str = "auto", init_scale: float = 1.0,
                 branch_mult: float = 1.0, init: str = "abc", task: str = "classification"):
        super().__init__(width, depth, base_width, base_depth)
        if init not in self.INITS:
            raise ValueError(f"init={init!r}: choose one of {', '.join(self.INITS)}")
        self.task, self.init = task, init
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

    def parametrize(self, param: Parametrization | str = "sp", **kwargs) -> "ResMLP":
        super().parametrize(param, **kwargs)
        if self.init == "flerm_resmlp":
            self._flerm_resmlp_init()
        return self

    @torch.no_grad()
    def _flerm_resmlp_init(self) -> None:
        for layer in self.blocks.modules():
            if isinstance(layer, ScaledLinear):
                layer.weight.mul_(math.sqrt(2))  # keeps the parametrization's and the depth rule's factors
                _torch_default_bias(layer)
        spec = self.readout.specs["weight"]
        if spec.init_std > 0:  # a zero readout (param.readout_zero_init) stays zero
            self.readout.weight.uniform_(-spec.init_std, spec.init_std)
            _torch_default_bias(self.readout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.blocks(self.input(x.flatten(1))))


def _torch_default_bias(layer: ScaledLinear) -> None:
    if layer.bias is not None:
        bound = 1 / math.sqrt(layer.specs["weight"].fan_in)
        layer.bias.uniform_(-bound, bound)
