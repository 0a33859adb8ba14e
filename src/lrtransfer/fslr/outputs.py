"""Which model output the function-space learning rate is measured on.

Following the paper: raw outputs (logits) for classification and regression, log-probabilities for
language models, where every position of every sequence counts as an output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call

OutputFn = Callable[[torch.Tensor], torch.Tensor]


def identity(outputs: torch.Tensor) -> torch.Tensor:
    return outputs


def log_probabilities(logits: torch.Tensor) -> torch.Tensor:
    return logits.log_softmax(-1)


def default_output_fn(model: nn.Module) -> OutputFn:
    """Log-probabilities when ``model.task == "language"``, the raw outputs otherwise."""
    return log_probabilities if getattr(model, "task", None) == "language" else identity


def measured_outputs(model: nn.Module, inputs: torch.Tensor, output_fn: OutputFn | None = None,
                     params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The measured output of ``model`` on ``inputs``, optionally with some parameters replaced by ``params``."""
    output_fn = output_fn or default_output_fn(model)
    raw = model(inputs) if params is None else functional_call(model, dict(params), (inputs,))
    return output_fn(raw)
