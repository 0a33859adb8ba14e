"""The exact layerwise function-space learning rate, by forward-mode differentiation (the reference)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import jvp

from .outputs import OutputFn, default_output_fn, measured_outputs
from .tensors import as_floats, parameters_named


def exact_fslr(model: nn.Module, inputs: torch.Tensor, updates: Mapping[str, torch.Tensor],
               output_fn: OutputFn | None = None) -> dict[str, float]:
    """‖J_ℓ ΔW_ℓ‖_RMS over all output entries, for each tensor ℓ in ``updates`` on its own.

    J_ℓ is the Jacobian of the outputs with respect to tensor ℓ at the model's current weights; one
    Jacobian-vector product (one forward-mode pass) per tensor.
    """
    output_fn = output_fn or default_output_fn(model)
    values = {}
    for name, weight in parameters_named(model, updates).items():
        def outputs_of(w, name=name):
            return measured_outputs(model, inputs, output_fn, {name: w})

        _, change = jvp(outputs_of, (weight.detach(),), (updates[name].to(weight),))
        values[name] = change.square().mean().sqrt()
    return as_floats(values)
