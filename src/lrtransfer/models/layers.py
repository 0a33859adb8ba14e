"""Layers whose parameters carry their parametrization metadata.

The metadata (a :class:`ParamSpec` per parameter) lives on the module, not on the ``Parameter``
object, and travels in the module's ``extra_state``: it survives ``copy.deepcopy``, pickling and a
``state_dict`` round trip, which attribute-on-parameter designs lose.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import nn

from ..parametrization import ParamSpec, Parametrization


class SpecModule(nn.Module):
    """Base class: holds ``specs`` (parameter name -> ParamSpec) and re-initialises from them."""

    def __init__(self):
        super().__init__()
        self.specs: dict[str, ParamSpec] = {}

    def apply_parametrization(self, param: Parametrization, init_scale: float = 1.0) -> None:
        self.specs = {name: param.spec(spec) for name, spec in self.specs.items()}
        with torch.no_grad():
            for name, spec in self.specs.items():
                p = getattr(self, name)
                if spec.init_std > 0:
                    scale = init_scale if spec.role == "hidden" else 1.0
                    p.normal_(0.0, spec.init_std * scale)
                else:
                    p.fill_(spec.init_value)

    def _weight_and_bias(self, shape: tuple[int, ...], role: str, fan_in: int, bias: bool, width_mult: float,
                         depth_mult: float, in_block: bool, bias_wide: bool) -> None:
        """A weight of ``shape`` (fan-out first) and an optional bias, with their structural specs."""
        fan_out = shape[0]
        self.weight = nn.Parameter(torch.empty(shape))
        self.specs["weight"] = ParamSpec(role, fan_in, fan_out, width_mult, depth_mult, True, in_block)
        if bias:
            self.bias = nn.Parameter(torch.empty(fan_out))
            self.specs["bias"] = ParamSpec("bias", 1, fan_out, width_mult, depth_mult, bias_wide, in_block)
        else:
            self.register_parameter("bias", None)
        self.apply_parametrization(Parametrization("sp"))

    def get_extra_state(self):
        return {"specs": {k: asdict(v) for k, v in self.specs.items()}}

    def set_extra_state(self, state):
        self.specs = {k: ParamSpec(**v) for k, v in state["specs"].items()}


class ScaledLinear(SpecModule):
    """y = multiplier · x Wᵀ + b."""

    def __init__(self, fan_in: int, fan_out: int, role: str, *, bias: bool = True, width_mult: float = 1.0,
                 depth_mult: float = 1.0, in_block: bool = False, bias_wide: bool = True):
        super().__init__()
        self._weight_and_bias((fan_out, fan_in), role, fan_in, bias, width_mult, depth_mult, in_block, bias_wide)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.specs["weight"].multiplier
        y = F.linear(x, self.weight)
        if m != 1.0:
            y = y * m
        return y if self.bias is None else y + self.bias


class ScaledConv(SpecModule):
    """y = multiplier · conv(x, W) + b, a 1-D (signals) or 2-D (images) convolution, padding k // 2.

    The fan-in is in_channels · kernel size: that is what a unit's pre-activation sums over, so the
    parametrization treats a convolution like a linear layer of that fan-in.
    """

    def __init__(self, in_channels: int, out_channels: int, role: str, *, kernel_size: int = 3, stride: int = 1,
                 spatial_dims: int = 2, bias: bool = True, width_mult: float = 1.0, depth_mult: float = 1.0,
                 in_block: bool = False):
        super().__init__()
        if spatial_dims not in (1, 2):
            raise ValueError(f"spatial_dims={spatial_dims}: convolutions here are 1-D or 2-D")
        self.stride, self.padding, self.spatial_dims = stride, kernel_size // 2, spatial_dims
        self._weight_and_bias((out_channels, in_channels, *[kernel_size] * spatial_dims), role,
                              in_channels * kernel_size ** spatial_dims, bias, width_mult, depth_mult, in_block, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.specs["weight"].multiplier
        weight = self.weight if m == 1.0 else m * self.weight  # conv(x, m·W) = m·conv(x, W): linear in W
        if self.spatial_dims == 1 and x.device.type == "cpu":
            return _conv1d_as_matmul(x, weight, self.bias, self.stride, self.padding)
        conv = F.conv1d if self.spatial_dims == 1 else F.conv2d
        return conv(x, weight, self.bias, stride=self.stride, padding=self.padding)


def _conv1d_as_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
                      padding: int) -> torch.Tensor:
    """``F.conv1d(x, weight, bias, stride, padding)`` as one matrix product over the unfolded patches.

    On CPU torch's conv1d backward is slow at the SimpleConvNet's sizes: a width-512 training step on a batch
    of 32 took 19.1 ms with it and 11.4 ms this way, a Hessian-vector product on 256 examples 213 and 128 ms
    (README)."""
    kernel = weight.shape[-1]
    x = F.pad(x, (padding, padding))
    length = (x.shape[-1] - kernel) // stride + 1
    # strided slices, not Tensor.unfold, whose backward torch.func's vmap (the exact NTK) cannot batch
    patches = torch.stack([x[..., j:j + stride * (length - 1) + 1:stride] for j in range(kernel)], -1)
    b, c = patches.shape[:2]  # patches: (B, C_in, L_out, kernel)
    columns = patches.permute(0, 2, 1, 3).reshape(b, length, c * kernel)
    out = columns @ weight.reshape(len(weight), -1).T  # (B, L_out, C_out)
    if bias is not None:
        out = out + bias
    return out.transpose(1, 2)


class ScaledEmbedding(SpecModule):
    """Token or position embedding; input-like with fan-in 1 (a one-hot input)."""

    def __init__(self, num: int, dim: int, *, width_mult: float = 1.0, depth_mult: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num, dim))
        self.specs["weight"] = ParamSpec("input", 1, dim, width_mult, depth_mult, True, False)
        self.apply_parametrization(Parametrization("sp"))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        m = self.specs["weight"].multiplier
        y = F.embedding(idx, self.weight)
        return y if m == 1.0 else y * m


class ScaledLayerNorm(SpecModule):
    """LayerNorm with an affine gain and bias of role ``norm``, or none (``affine=False``: the FLeRM paper's
    Transformer normalises without parameters)."""

    def __init__(self, dim: int, *, affine: bool = True, width_mult: float = 1.0, depth_mult: float = 1.0,
                 in_block: bool = False):
        super().__init__()
        self.dim = dim
        if not affine:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
            return
        self.weight = nn.Parameter(torch.empty(dim))
        self.bias = nn.Parameter(torch.empty(dim))
        self.specs["weight"] = ParamSpec("norm", 1, dim, width_mult, depth_mult, True, in_block, init_value=1.0)
        self.specs["bias"] = ParamSpec("norm", 1, dim, width_mult, depth_mult, True, in_block, init_value=0.0)
        self.apply_parametrization(Parametrization("sp"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.dim,), self.weight, self.bias)


class Residual(nn.Module):
    """x ← x + m_L · branch(x), with the norm placements of the Transformer literature.

    ``norm`` is one of ``none`` (x + m·f(x)), ``pre`` (x + m·f(LN x)), ``post`` (LN(x + m·f(x))) and
    ``pre_post_mod`` (x + m·LN(f(x))).  ``branch_multiplier`` is set by the parametrization.
    """

    def __init__(self, branch: nn.Module, norm: str = "none", dim: int | None = None, **norm_kwargs):
        super().__init__()
        self.branch = branch
        self.norm_placement = norm
        self.norm = ScaledLayerNorm(dim, in_block=True, **norm_kwargs) if norm != "none" else None
        self.branch_multiplier = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, p = self.branch_multiplier, self.norm_placement
        if p == "pre":
            return x + m * self.branch(self.norm(x))
        if p == "post":
            return self.norm(x + m * self.branch(x))
        if p == "pre_post_mod":
            return x + m * self.norm(self.branch(x))
        return x + m * self.branch(x)

    def get_extra_state(self):
        return {"branch_multiplier": self.branch_multiplier}

    def set_extra_state(self, state):
        self.branch_multiplier = state["branch_multiplier"]
