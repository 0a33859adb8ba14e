"""Measurements inside the training loop: loss-landscape spectra and function-space learning rates.

Each hook returns the metrics of a step (logged by the loop at that step), keeps its state for
checkpoints, and writes its full record as artifacts at the end of the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from .fslr import FunctionSpaceLR, append_estimate, new_record, save_record
from .spectra import NonFiniteCurvature, SpectraMonitor, SpectraSettings


class StepHook:
    """A measurement around each optimizer step (no-op defaults)."""

    artifact_dir: str | None = None  # where its artifacts go in the MLflow run

    def before_step(self, step: int) -> dict[str, float]:
        return {}

    def after_step(self, step: int) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def write_artifacts(self, directory: Path) -> list[Path]:
        return []


class SpectraHook(StepHook):
    """Spectra at step 0 and every ``every`` steps, before that step's update, on a fixed batch.

    The rescaled sharpness uses D = each tensor's SGD learning rate / η0: the optimizer's current
    ``lr_mult`` under SGD (so LRs set by FLeRM count), the parametrization's SGD multipliers under Adam.
    """

    def __init__(self, model: torch.nn.Module, loss_fn: Callable, batch: tuple[torch.Tensor, torch.Tensor],
                 settings: SpectraSettings, optimizer: torch.optim.Optimizer, optimizer_name: str, base_lr: float):
        self.optimizer, self.is_sgd = optimizer, optimizer_name == "sgd"
        specs = model.param_specs()
        self.sgd_mults = {name: spec.lr_mult_sgd for name, spec in specs.items()}
        self.monitor = SpectraMonitor(model, loss_fn, *batch, settings,
                                      optimizer=None if self.is_sgd else optimizer,
                                      scaling=self.sgd_mults, base_lr=base_lr)

    def before_step(self, step: int) -> dict[str, float]:
        if not self.monitor.due(step):
            return {}
        if self.is_sgd:
            self.monitor.scaling = {g["name"]: g["lr_mult"] for g in self.optimizer.param_groups}
        try:
            return self.monitor.measure(step)
        except NonFiniteCurvature:
            # The last update blew the weights up; this step's loss will mark the run diverged.
            return {}

    def state_dict(self) -> dict[str, Any]:
        return self.monitor.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.monitor.load_state_dict(state)

    def write_artifacts(self, directory: Path) -> list[Path]:
        return [self.monitor.save_npz(directory / "spectra.npz")] if self.monitor.records else []


class FslrHook(StepHook):
    """Records Δ_ℓF(η=1) per tensor (``record``) or sets per-tensor LRs from a base record (``flerm``).

    Estimates use batches the step did not train on, drawn from their own generator.
    """

    artifact_dir = "fslr"

    def __init__(self, fslr: FunctionSpaceLR, next_inputs: Callable[[], torch.Tensor],
                 generators: dict[str, torch.Generator], meta: dict[str, Any]):
        self.fslr, self.next_inputs, self.generators = fslr, next_inputs, generators
        self.record = new_record(meta)

    def before_step(self, step: int) -> dict[str, float]:
        if self.fslr.active(step):
            self.fslr.before_step()
        return {}

    def after_step(self, step: int) -> dict[str, float]:
        if not self.fslr.active(step):
            return {}
        values = self.fslr.after_step(step, self.next_inputs)
        append_estimate(self.record, step, values)
        metrics = {f"fslr/{name}": v for name, v in values.items()}
        # the LRs in force (FLeRM's, or the parametrization's), so reports can form η_ℓ·Δ_ℓF
        metrics.update({f"lr_mult/{g['name']}": g["lr_mult"] for g in self.fslr.groups.values()})
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"fslr": self.fslr.state_dict(), "record": self.record,
                "generators": {k: g.get_state() for k, g in self.generators.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fslr.load_state_dict(state["fslr"])
        self.record = state["record"]
        for k, g in self.generators.items():
            g.set_state(state["generators"][k])

    def write_artifacts(self, directory: Path) -> list[Path]:
        if not self.record["steps"]:
            return []
        path = directory / "record.json"
        save_record(self.record, path)
        return [path]
