"""The Super Consistency paper's convolutional networks, on images (B, C, H, W) or 1-D signals (B, L).

``SimpleConvNet`` is its Fig. 1 network: conv 3×3 stride 2 → ReLU → max-pool 2 → conv 3×3 stride 4 →
ReLU → max-pool 2 → flatten → readout (on 32×32 images the readout sees 1×1×width features).
``ResConvNet`` is its width/depth "ConvNet": a stride-2 stem conv, then three stages of depth/3 residual
blocks x + m_L·branch(x), each branch ``layers_per_block`` × [ReLU → conv 3×3], with max-pool 2 → conv
between stages, and ReLU → max-pool 2 → flatten → readout at the end (2×2×width features on 32×32 images).
Every residual block sits in ``blocks.{i}`` in order, so FLeRM's depth mapping (contiguous copies of each
base block) keeps every copy in the stage of its base block.  A flat (B, L) batch, such as mnist1d, is read
as a one-channel 1-D signal.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..parametrization import Parametrization
from .base import ScalableModel
from .layers import Residual, ScaledConv, ScaledLinear

STAGES = 3


def _signal_shape(in_shape: Sequence[int]) -> tuple[int, ...]:
    """(channels, *spatial) of one example: (L,) → (1, L); (C, L) and (C, H, W) stay."""
    shape = tuple(int(s) for s in in_shape)
    if len(shape) == 1:
        return (1, *shape)
    if len(shape) in (2, 3):
        return shape
    raise ValueError(f"a convolutional network needs inputs of shape (L,), (C, L) or (C, H, W), not {shape}")


def _pool(x: torch.Tensor) -> torch.Tensor:
    """Max-pool 2 (stride 2, a trailing odd row or column dropped) over the spatial dimensions of (B, C, *spatial).

    A reshape and a max, not ``F.max_pool{1,2}d``, whose CPU kernel takes 1 ms on a width-512 SimpleConvNet's
    mnist1d batch: a training step is 12% faster.  On ties the gradient is shared (``F.max_pool`` gives it to
    one input); ties are zeros after a ReLU, whose gradient is 0 anyway."""
    spatial = x.shape[2:]
    if min(spatial) < 2:
        raise RuntimeError(f"max-pooling 2 needs spatial sizes of at least 2, not {tuple(spatial)}")
    x = x[(..., *(slice(0, s - s % 2) for s in spatial))]
    x = x.reshape(*x.shape[:2], *(d for s in spatial for d in (s // 2, 2)))
    return x.amax(dim=tuple(range(3, x.dim(), 2)))


class _ConvNet(ScalableModel):
    """Shared by both networks: input reshaping, and a readout sized by a dry run of ``features``."""

    def _add_readout(self, shape: tuple[int, ...], out_dim: int, bias: bool, task: str) -> None:
        self.signal_shape, self.task = shape, task
        try:
            with torch.no_grad():
                fan_in = self.features(torch.zeros(1, *shape)).shape[1]
        except RuntimeError as exc:
            raise ValueError(f"inputs of shape {shape} are too small for {type(self).__name__}'s strides and "
                             f"poolings: {str(exc).splitlines()[0]}") from None
        self.readout = ScaledLinear(fan_in, out_dim, "readout", bias=bias, bias_wide=False,
                                    width_mult=self.width_mult, depth_mult=self.depth_mult)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x.reshape(len(x), *self.signal_shape)))


class SimpleConvNet(_ConvNet):
    def __init__(self, in_shape: Sequence[int], out_dim: int, width: int, *, base_width: int | None = None,
                 bias: bool = False, param: Parametrization | str = "sp", init_scale: float = 1.0,
                 task: str = "classification"):
        super().__init__(width, 1, base_width, 1)
        shape = _signal_shape(in_shape)
        conv = dict(spatial_dims=len(shape) - 1, bias=bias, width_mult=self.width_mult)
        self.conv1 = ScaledConv(shape[0], width, "input", stride=2, **conv)
        self.conv2 = ScaledConv(width, width, "hidden", stride=4, **conv)
        self._add_readout(shape, out_dim, bias, task)
        self.parametrize(param, init_scale=init_scale)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = _pool(F.relu(self.conv1(x)))
        return _pool(F.relu(self.conv2(x))).flatten(1)


class ResConvNet(_ConvNet):
    def __init__(self, in_shape: Sequence[int], out_dim: int, width: int, depth: int, *, layers_per_block: int = 1,
                 base_width: int | None = None, base_depth: int | None = None, bias: bool = False,
                 param: Parametrization | str = "sp", branch_scale: str = "auto", init_scale: float = 1.0,
                 branch_mult: float = 1.0, task: str = "classification"):
        super().__init__(width, depth, base_width, base_depth)
        for name, value in (("depth", self.depth), ("base_depth", self.base_depth)):
            if value % STAGES:
                raise ValueError(f"{name}={value}: ResConvNet splits its blocks over {STAGES} stages, so it must be "
                                 f"a multiple of {STAGES}")
        shape = _signal_shape(in_shape)
        conv = dict(spatial_dims=len(shape) - 1, bias=bias, width_mult=self.width_mult, depth_mult=self.depth_mult)
        self.stem = ScaledConv(shape[0], width, "input", stride=2, **conv)
        self.transitions = nn.ModuleList(ScaledConv(width, width, "hidden", **conv) for _ in range(STAGES - 1))
        self.blocks = nn.ModuleList(
            Residual(nn.Sequential(*[layer for _ in range(layers_per_block)
                                     for layer in (nn.ReLU(), ScaledConv(width, width, "hidden", in_block=True, **conv))]))
            for _ in range(depth))
        self._add_readout(shape, out_dim, bias, task)
        self.parametrize(param, branch_scale=branch_scale, init_scale=init_scale, branch_mult=branch_mult)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x, per_stage = self.stem(x), len(self.blocks) // STAGES
        for stage in range(STAGES):
            if stage:
                x = self.transitions[stage - 1](_pool(x))
            for block in self.blocks[stage * per_stage:(stage + 1) * per_stage]:
                x = block(x)
        return _pool(F.relu(x)).flatten(1)
