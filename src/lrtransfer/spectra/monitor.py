"""Spectra measured during training on a fixed batch, warm-started between measurements, saved as one .npz."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .adam import adam_preconditioner
from .curvature import Curvature, LossFn, curvature
from .eigensolvers import EigenResult, top_eigenpairs
from .hessian import Scaling
from .ntk import ntk_eigenpairs
from .operator import SpectraStats
from .trace import estimate_trace


@dataclass(frozen=True)
class SpectraSettings:
    """What :class:`SpectraMonitor` measures.

    ``every``: measurement period in steps (see :meth:`SpectraMonitor.due`); ``k``, ``method``, ``tol``,
    ``max_iter``: the top-k Hessian eigenvalues as in :func:`top_hessian_eigenvalues` (the same solver
    settings serve the other eigenproblems); ``trace_probes``: Hutch++ products for ``trace``;
    ``ntk``: how many top NTK eigenvalues (0 = none); ``seed``: random start vectors and probes.
    """

    every: int = 50
    k: int = 1
    method: str = "lanczos"
    tol: float | None = None
    max_iter: int | None = None
    trace: bool = False
    trace_probes: int = 99
    ggn: bool = False
    ntk: int = 0
    ntk_method: str = "auto"
    preconditioned: bool = False
    directional: bool = False
    seed: int = 0


def lr_multipliers(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """{parameter name: lr_mult} of a per-tensor optimizer from :func:`lrtransfer.optim.build_optimizer`.

    For SGD this is the D of the rescaled sharpness λ_max(D^½ H D^½) (each parameter's LR / base LR).
    """
    return {g["name"]: g["lr_mult"] for g in optimizer.param_groups}


class SpectraMonitor:
    """Measures Hessian (and optionally trace, GGN, NTK, Adam-preconditioned, directional) spectra of
    ``loss_fn(model(inputs), targets)`` on one fixed batch, as the training loop asks.

    ``scaling`` (e.g. :func:`lr_multipliers` of an SGD optimizer) adds the rescaled sharpness
    ``hessian/sharpness_rescaled`` = λ_max(D^½ H D^½), and with ``base_lr`` = η0 also
    ``hessian/sharpness_rescaled_x_lr`` = η0 × it, which gradient descent's edge of stability puts at 2, and
    with ``ntk`` the top eigenvalues ``ntk/rescaled_eig_{i}`` of J D Jᵀ beside the raw ``ntk/eig_{i}``.
    ``optimizer`` (Adam/AdamW) is needed for ``preconditioned``.  Each eigenproblem warm-starts from the
    eigenvectors of the previous measurement.  The model's weights, gradients, train/eval modes and the
    global RNG are left untouched.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor,
                 settings: SpectraSettings = SpectraSettings(), *, optimizer: torch.optim.Optimizer | None = None,
                 scaling: Scaling | None = None, base_lr: float | None = None):
        if settings.preconditioned and optimizer is None:
            raise ValueError("preconditioned sharpness needs the Adam optimizer (optimizer=...)")
        if settings.every < 1:
            raise ValueError(f"every={settings.every} must be a positive number of steps")
        self.model, self.loss_fn, self.inputs, self.targets = model, loss_fn, inputs, targets
        self.settings, self.optimizer, self.scaling, self.base_lr = settings, optimizer, scaling, base_lr
        self.records: list[dict[str, float]] = []  # one per measurement: {"step": ..., metric: value}
        self._vectors: dict[str, torch.Tensor] = {}  # warm starts, per eigenproblem

    def due(self, step: int) -> bool:
        """Whether ``step`` is a measurement step (step 0 and every ``every`` steps)."""
        return step % self.settings.every == 0

    def measure(self, step: int) -> dict[str, float]:
        """Measure now and return {metric name: value}; the record is kept for :meth:`save_npz`."""
        stats = SpectraStats()
        start = time.perf_counter()
        with curvature(self.model, self.inputs, self.loss_fn, self.targets, stats) as curv:
            metrics = self._metrics(curv)
        metrics["spectra/hvps"] = float(stats.hvps)
        metrics["spectra/seconds"] = time.perf_counter() - start
        self.records.append({"step": step, **metrics})
        return metrics

    def _warm(self, key: str, solve: Callable[[torch.Tensor | None], EigenResult]) -> torch.Tensor:
        result = solve(self._vectors.get(key))
        self._vectors[key] = result.vectors
        return result.values

    def _top(self, key: str, op, k: int) -> torch.Tensor:
        s = self.settings
        return self._warm(key, lambda init: top_eigenpairs(op, k, s.method, s.tol, s.max_iter, init, s.seed))

    def _ntk(self, curv: Curvature, key: str, scaling_sqrt: torch.Tensor | None) -> torch.Tensor:
        s = self.settings
        return self._warm(key, lambda init: ntk_eigenpairs(curv, s.ntk, s.ntk_method, s.tol, s.max_iter, init,
                                                           s.seed, scaling_sqrt))

    def _metrics(self, curv: Curvature) -> dict[str, float]:
        s, m = self.settings, {}
        eigs = self._top("hessian", curv.hessian(), s.k)
        m.update({f"hessian/eig_{i}": v for i, v in enumerate(eigs.tolist())})
        d = None if self.scaling is None else curv.flatten_named(self.scaling)
        unscaled = d is None or bool((d == 1).all())  # SP/NTP: D = 1, no second eigenproblem needed
        if d is not None:
            rescaled = (eigs if unscaled else self._top("rescaled", curv.hessian(d.sqrt()), 1))[0].item()
            m["hessian/sharpness_rescaled"] = rescaled
            if self.base_lr is not None:
                m["hessian/sharpness_rescaled_x_lr"] = self.base_lr * rescaled
        if s.trace:
            m["hessian/trace"] = estimate_trace(curv.hessian(), s.trace_probes, "hutch++", s.seed)
        if s.ggn:
            m["ggn/eig_0"] = self._top("ggn", curv.ggn(), 1)[0].item()
        if s.ntk:
            ntk = self._ntk(curv, "ntk", None)
            m.update({f"ntk/eig_{i}": v for i, v in enumerate(ntk.tolist())})
            if d is not None:
                rescaled_ntk = ntk if unscaled else self._ntk(curv, "ntk_rescaled", d.sqrt())
                m.update({f"ntk/rescaled_eig_{i}": v for i, v in enumerate(rescaled_ntk.tolist())})
        if s.preconditioned and self.optimizer.state:  # Adam has state only after its first step
            inverse, threshold = adam_preconditioner(curv, self.optimizer)
            m["adam/precond_sharpness"] = self._top("preconditioned", curv.hessian(inverse.sqrt()), 1)[0].item()
            m["adam/precond_threshold"] = threshold
        if s.directional:
            m["hessian/directional"] = curv.hessian().rayleigh_quotient(curv.gradient())
        return m

    def state_dict(self) -> dict:
        """The measurements so far and the warm starts, so that a resumed run measures as an uninterrupted one."""
        return {"records": list(self.records), "vectors": {k: v.cpu() for k, v in self._vectors.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.records = list(state["records"])
        device = next(self.model.parameters()).device
        self._vectors = {k: v.to(device) for k, v in state["vectors"].items()}

    def save_npz(self, path: str | Path) -> Path:
        """Write every measurement so far to ``path`` (.npz): ``step``, one float array per metric name
        (NaN where a measurement lacks it) and ``settings`` (a JSON string with the settings, ``base_lr``
        and ``scaling``).  Read it back with ``numpy.load(path)``."""
        names = dict.fromkeys(k for r in self.records for k in r if k != "step")
        arrays = {"step": np.array([r["step"] for r in self.records], dtype=np.int64)}
        arrays.update({n: np.array([r.get(n, np.nan) for r in self.records], dtype=np.float64) for n in names})
        scaling = None if self.scaling is None else {n: torch.as_tensor(v).tolist() for n, v in self.scaling.items()}
        settings = {**asdict(self.settings), "base_lr": self.base_lr, "scaling": scaling}
        path = Path(path)
        with path.open("wb") as f:  # a file object: numpy would append ".npz" to a bare name
            np.savez(f, settings=np.array(json.dumps(settings)), **arrays)
        return path
