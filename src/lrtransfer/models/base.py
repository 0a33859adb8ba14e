"""Common behaviour of every model: width/depth ratios, parametrization, parameter roles."""

from __future__ import annotations

from torch import nn

from ..parametrization import ParamSpec, Parametrization
from .layers import Residual, SpecModule


class ScalableModel(nn.Module):
    """A model of width ``width`` and ``depth`` residual blocks, relative to a base shape.

    Subclasses build their layers in ``__init__`` and then call :meth:`parametrize`.
    ``task`` is ``classification`` (logits of shape (B, C)), ``language`` (logits (B, T, V))
    or ``regression`` (outputs (B, D), MSE).
    """

    task = "classification"

    def __init__(self, width: int, depth: int, base_width: int | None, base_depth: int | None):
        super().__init__()
        self.width, self.depth = width, depth
        self.base_width = base_width or width
        self.base_depth = base_depth or depth
        self.width_mult = width / self.base_width
        self.depth_mult = depth / self.base_depth

    def parametrize(self, param: Parametrization | str = "sp", *, branch_scale: str = "auto",
                    init_scale: float = 1.0, branch_mult: float = 1.0) -> "ScalableModel":
        """(Re-)initialise every parameter and set every multiplier according to ``param``.

        ``branch_mult``: every residual branch's multiplier at the base depth (the Super Consistency code's
        β/√L_base); ``branch_scale`` scales it with depth.
        """
        if not branch_mult > 0:
            raise ValueError(f"branch_mult={branch_mult}: a residual branch multiplier must be positive")
        param = Parametrization(param) if isinstance(param, str) else param
        self.parametrization = param
        branch_init = param.branch_init_scale(self.depth_mult, branch_scale)
        for module in self.modules():
            if isinstance(module, SpecModule):
                in_block = any(spec.in_block for spec in module.specs.values())
                module.apply_parametrization(param, init_scale * (branch_init if in_block else 1.0))
            elif isinstance(module, Residual):
                module.branch_multiplier = branch_mult * param.branch_multiplier(self.depth_mult, branch_scale)
        return self

    def param_specs(self) -> dict[str, ParamSpec]:
        """Fully qualified parameter name -> its ParamSpec (role, fan-in, multipliers, LR multipliers)."""
        specs = {}
        for mod_name, module in self.named_modules():
            if isinstance(module, SpecModule):
                for p_name, spec in module.specs.items():
                    specs[f"{mod_name}.{p_name}" if mod_name else p_name] = spec
        return specs

    def params_by_role(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, spec in self.param_specs().items():
            out.setdefault(spec.role, []).append(name)
        return out
