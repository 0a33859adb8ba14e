"""Recording and setting function-space learning rates during training (the paper's Algorithm 1).

The optimizer must hold one tensor per parameter group, with the group keys ``name`` and ``lr_mult``
and ``lr = base_lr · lr_mult · schedule factor`` (as :func:`lrtransfer.optim.build_optimizer` builds
it).  FLeRM writes ``lr_mult``, so later schedule factors multiply the LRs it set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from .ema import StatisticsEMA
from .estimator import check_method, fslr_from_statistics, sample_statistics
from .outputs import OutputFn
from .records import BaseRecordError
from .tensors import parameters_named

MODES = ("record", "flerm")
Inputs = torch.Tensor | Callable[[], torch.Tensor]


def groups_by_name(optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    groups = {}
    for group in optimizer.param_groups:
        if len(group["params"]) != 1 or "name" not in group or "lr_mult" not in group:
            raise ValueError("function-space LRs need one tensor per optimizer group with keys 'name' and "
                             "'lr_mult' (as lrtransfer.optim.build_optimizer makes them)")
        groups[group["name"]] = group
    return groups


class FunctionSpaceLR:
    """Measures Δ_ℓF(η=1) = ‖J_ℓ ΔW_ℓ‖_RMS / η_ℓ of each tensor's step and, in ``flerm`` mode, sets its LR.

    Protocol per training step::

        if fslr.active(step):
            fslr.before_step()                      # saves θ_t
        loss.backward(); optimizer.step()
        if fslr.active(step):
            values = fslr.after_step(step, inputs)  # {name: Δ_ℓF(η=1)}

    ``inputs`` are the inputs of a batch the step did not train on, or a callable returning a fresh
    one per estimate.  The first call makes ``warmup_samples`` estimates of the same step (fresh
    batches when ``inputs`` is callable), later calls one.  The Jacobian is taken at θ_t and every
    estimate feeds one bias-corrected EMA (β = ``beta``) of the raw statistics.

    ``record`` leaves weights and LRs untouched.  ``flerm`` sets, for every tensor ℓ,
    ``lr_mult_ℓ = base_ℓ / Δ_ℓF(η=1)`` (so the tensor moves the function by η·base_ℓ, the base
    model's change at the same base LR η), rescales the group's current ``lr`` accordingly and
    replaces the step just taken by θ_t + η_new·ΔW/η_old; the optimizer's state is not touched.
    ``base`` maps every tensor to its base series (see :func:`map_base_record`); step s uses value
    s // every.  A tensor whose step does not move the outputs at all keeps its LR.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, mode: str = "record", *,
                 base: Mapping[str, Sequence[float]] | None = None, every: int = 100,
                 first_step_only: bool | None = None, warmup_samples: int = 41, method: str = "kronecker",
                 beta: float = 0.9, output_fn: OutputFn | None = None, generator: torch.Generator | None = None):
        if mode not in MODES:
            raise ValueError(f"fslr mode={mode!r} is not one of {', '.join(MODES)}")
        check_method(method)
        if every < 1 or warmup_samples < 1:
            raise ValueError(f"fslr every={every} and warmup_samples={warmup_samples} must be at least 1")
        self.model, self.mode, self.every, self.method = model, mode, every, method
        self.warmup_samples, self.output_fn, self.generator = warmup_samples, output_fn, generator
        self.first_step_only = mode == "flerm" if first_step_only is None else first_step_only
        self.groups = groups_by_name(optimizer)
        parameters_named(model, self.groups)
        if mode == "flerm":
            if base is None:
                raise ValueError("fslr mode='flerm' needs base values")
            missing = [n for n in self.groups if n not in base]
            if missing:
                raise BaseRecordError(f"the base values have no series for tensor {missing[0]!r}")
        self.base = base
        self.ema = StatisticsEMA(beta)
        self._saved: dict[str, torch.Tensor] | None = None

    def active(self, step: int) -> bool:
        """Whether ``step`` is measured (the caller then wraps it in before_step/after_step)."""
        return step == 0 if self.first_step_only else step % self.every == 0

    def before_step(self) -> None:
        self._saved = {n: g["params"][0].detach().clone() for n, g in self.groups.items()}

    @torch.no_grad()
    def after_step(self, step: int, inputs: Inputs) -> dict[str, float]:
        if self._saved is None:
            raise RuntimeError("FunctionSpaceLR.after_step() needs before_step() before the optimizer step")
        saved, self._saved = self._saved, None
        frozen = [n for n, g in self.groups.items() if g["lr"] == 0]
        if frozen:
            raise ValueError(f"step {step}: tensor {frozen[0]!r} has LR 0, so its per-unit-LR update is undefined")
        # Per-unit-LR updates: stationary under Adam-like optimizers, whose ‖ΔW‖ scales with the LR.
        updates = {n: (g["params"][0] - saved[n]) / g["lr"] for n, g in self.groups.items()}
        for _ in range(self.warmup_samples if self.ema.count == 0 else 1):
            batch = inputs() if callable(inputs) else inputs
            self.ema.update(sample_statistics(self.model, batch, updates, self.method, self.output_fn,
                                              params=saved, generator=self.generator))
        measured = fslr_from_statistics(self.ema.corrected(), self.method)
        if self.mode == "flerm":
            self._match_base(step, measured, saved, updates)
        return measured

    def _match_base(self, step: int, measured: Mapping[str, float], saved: dict[str, torch.Tensor],
                    updates: Mapping[str, torch.Tensor]) -> None:
        index = step // self.every
        short = [n for n in self.groups if len(self.base[n]) <= index]
        if short:
            raise BaseRecordError(f"step {step} needs base value #{index} of tensor {short[0]!r}, which has "
                                  f"only {len(self.base[short[0]])}")
        for name, group in self.groups.items():
            if measured[name] == 0:
                continue  # the step does not move the outputs: every LR matches, keep the current one
            lr_mult = self.base[name][index] / measured[name]
            group["lr"] *= lr_mult / group["lr_mult"]  # keeps the schedule factor of this step
            group["lr_mult"] = lr_mult
            group["params"][0].copy_(saved[name].add_(updates[name], alpha=group["lr"]))

    def state_dict(self) -> dict:
        return {"ema": self.ema.state_dict()}

    def load_state_dict(self, state: Mapping) -> None:
        self.ema.load_state_dict(state["ema"])
