"""abc-parametrizations: SP, NTP, µP and depth-µP as one explicit table.

Every weight W of a layer enters the forward pass as ``multiplier * W`` with W drawn from
N(0, init_std²), and is trained with the learning rate ``lr_mult * η0``.  A parametrization is a
rule that maps a parameter's structure (role, fan-in, width ratio r = N/N_base, depth ratio
ℓ = L/L_base, whether it sits inside a residual branch) to those three numbers.

The base model of µP and depth-µP is the SP model at ``base_width`` and ``base_depth``: at r = ℓ = 1
every rule below returns exactly the SP numbers (tested), so a base model tuned under SP transfers.

    role     | SP                 | NTP                   | µP (relative to the base width)
    ---------+--------------------+-----------------------+--------------------------------------------
    input    | std 1/√n, ×1       | std 1, ×1/√n          | std 1/√n, ×1,    SGD lr ×r,  Adam lr ×1
    hidden   | std 1/√n, ×1       | std 1, ×1/√n          | std 1/√n, ×1,    SGD lr ×1,  Adam lr ×1/r
    readout  | std 1/√n, ×1       | std 1, ×1/√n          | std 1/√n_base, ×1/r, SGD lr ×r, Adam lr ×1
    bias     | 0, ×1              | 0, ×1                 | 0, ×1,  SGD lr ×r if its size grows with width
    norm     | 1 (gain) / 0, ×1   | as SP                 | as bias
    all LRs  | ×1                 | ×1                    | as listed

n is the fan-in (1 for embeddings). depth-µP is µP plus a residual branch multiplier ℓ^-α and, for
parameters inside residual branches, SGD lr ×ℓ^(2α-1) and Adam lr ×ℓ^(α-1).  Attention logits are
scaled 1/√d_head under SP/NTP and √d_base/d_head under µP (the 1/d rule written relative to the base
head dimension, so that the base model is SP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

PARAMETRIZATIONS = ("sp", "ntp", "mup", "depth_mup")
ROLES = ("input", "hidden", "readout", "bias", "norm")
BRANCH_SCALES = ("auto", "none", "sqrt_depth", "depth", "sqrt_depth_init")


class ParametrizationError(ValueError):
    pass


@dataclass(frozen=True)
class ParamSpec:
    """Structure and abc-numbers of one parameter tensor.

    ``wide`` says whether the tensor has a dimension that grows with width (µP treats those
    differently); ``in_block`` whether it lives inside a residual branch (depth-µP scales those).
    """

    role: str
    fan_in: int
    fan_out: int
    width_mult: float = 1.0
    depth_mult: float = 1.0
    wide: bool = True
    in_block: bool = False
    init_std: float = 0.0
    init_value: float = 0.0
    multiplier: float = 1.0
    lr_mult_sgd: float = 1.0
    lr_mult_adam: float = 1.0

    def lr_mult(self, optimizer: str) -> float:
        return self.lr_mult_sgd if optimizer == "sgd" else self.lr_mult_adam


@dataclass(frozen=True)
class Parametrization:
    name: str = "sp"
    alpha: float = 0.5  # depth exponent of depth-µP
    readout_zero_init: bool = False  # the µP practice that removes the readout's width-decaying init term

    def __post_init__(self):
        if self.name not in PARAMETRIZATIONS:
            raise ParametrizationError(
                f"unknown parametrization {self.name!r}; choose one of {', '.join(PARAMETRIZATIONS)}"
            )

    @property
    def is_mup(self) -> bool:
        return self.name in ("mup", "depth_mup")

    def spec(self, s: ParamSpec) -> ParamSpec:
        """Fill the init std, forward multiplier and LR multipliers of a structural spec."""
        n, r = s.fan_in, s.width_mult
        if s.role == "norm":
            lr = r if (self.is_mup and s.wide) else 1.0
            out = replace(s, init_std=0.0, multiplier=1.0, lr_mult_sgd=lr, lr_mult_adam=1.0)
        elif s.role == "bias":
            lr = r if (self.is_mup and s.wide) else 1.0
            out = replace(s, init_std=0.0, init_value=0.0, multiplier=1.0, lr_mult_sgd=lr, lr_mult_adam=1.0)
        elif self.name == "sp":
            out = replace(s, init_std=1 / math.sqrt(n), multiplier=1.0, lr_mult_sgd=1.0, lr_mult_adam=1.0)
        elif self.name == "ntp":
            out = replace(s, init_std=1.0, multiplier=1 / math.sqrt(n), lr_mult_sgd=1.0, lr_mult_adam=1.0)
        elif s.role == "input":
            out = replace(s, init_std=1 / math.sqrt(n), multiplier=1.0, lr_mult_sgd=r, lr_mult_adam=1.0)
        elif s.role == "hidden":
            out = replace(s, init_std=1 / math.sqrt(n), multiplier=1.0, lr_mult_sgd=1.0, lr_mult_adam=1 / r)
        elif s.role == "readout":
            base_fan_in = n / r
            out = replace(s, init_std=1 / math.sqrt(base_fan_in), multiplier=1 / r, lr_mult_sgd=r, lr_mult_adam=1.0)
        else:
            raise ParametrizationError(f"unknown parameter role {s.role!r}; choose one of {', '.join(ROLES)}")
        if self.readout_zero_init and s.role == "readout":
            out = replace(out, init_std=0.0, init_value=0.0)
        if self.name == "depth_mup" and s.in_block:
            ell, a = s.depth_mult, self.alpha
            out = replace(out, lr_mult_sgd=out.lr_mult_sgd * ell ** (2 * a - 1),
                          lr_mult_adam=out.lr_mult_adam * ell ** (a - 1))
        return out

    def branch_multiplier(self, depth_mult: float, branch_scale: str = "auto") -> float:
        """Multiplier m_L of every residual branch, relative to the base depth."""
        if branch_scale not in BRANCH_SCALES:
            raise ParametrizationError(
                f"unknown branch_scale {branch_scale!r}; choose one of {', '.join(BRANCH_SCALES)}"
            )
        if branch_scale == "auto":
            return depth_mult ** -self.alpha if self.name == "depth_mup" else 1.0
        return {"none": 1.0, "sqrt_depth": depth_mult ** -0.5, "depth": 1.0 / depth_mult,
                "sqrt_depth_init": 1.0}[branch_scale]

    @staticmethod
    def branch_init_scale(depth_mult: float, branch_scale: str) -> float:
        """Factor on the init of the weights inside residual branches: ℓ^−½ for ``sqrt_depth_init``.

        Same forward pass at init as the ``sqrt_depth`` multiplier, but an update of a branch weight is
        not damped by it, so under one global LR the function moves more the deeper the model (the FLeRM
        paper's ResMLP depth baseline, "weight init / √m")."""
        return depth_mult ** -0.5 if branch_scale == "sqrt_depth_init" else 1.0

    def attention_scale(self, head_dim: int, base_head_dim: int) -> float:
        if self.is_mup:
            return math.sqrt(base_head_dim) / head_dim
        return 1 / math.sqrt(head_dim)
