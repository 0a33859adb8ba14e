"""Bias-corrected exponential moving averages of the estimator's raw statistics."""

from __future__ import annotations

from collections.abc import Mapping

import torch


class StatisticsEMA:
    """EMA per tensor of the raw statistics (for ``kronecker``: numerators and denominator separately).

    Averaging the raw statistics, not the per-call estimates, keeps the Kronecker estimate a ratio
    of means, which is what makes it nearly unbiased.
    """

    def __init__(self, beta: float = 0.9):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"fslr beta={beta} must be in [0, 1)")
        self.beta = beta
        self.count = 0
        self.averages: dict[str, torch.Tensor] = {}

    def update(self, statistics: Mapping[str, torch.Tensor]) -> None:
        for name, stats in statistics.items():
            previous = self.averages.get(name, torch.zeros_like(stats))
            self.averages[name] = self.beta * previous + (1.0 - self.beta) * stats
        self.count += 1

    def corrected(self) -> dict[str, torch.Tensor]:
        """The averages divided by 1 − β^count, so that early values are not pulled towards zero."""
        if self.count == 0:
            raise RuntimeError("the EMA has no statistics yet")
        correction = 1.0 - self.beta ** self.count
        return {name: avg / correction for name, avg in self.averages.items()}

    def state_dict(self) -> dict:
        return {"beta": self.beta, "count": self.count, "averages": dict(self.averages)}

    def load_state_dict(self, state: Mapping) -> None:
        self.beta, self.count, self.averages = state["beta"], state["count"], dict(state["averages"])
