"""Hessian, Gauss-Newton, Jacobian and NTK products of a model's loss at its current weights.

One forward pass is recorded and its autograd graph kept, so every product costs only extra
backward passes.  scripts/bench_spectra.py measured this (double backward on a retained graph) to be
faster than recomputing the forward pass per product with torch.func (forward-over-reverse).
Vectors in parameter space are flat, in the order of ``model.named_parameters()`` (trainable only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property

import torch
from torch import nn

from .operator import Operator, SpectraStats

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MEAN_MODE_ITERATIONS = 20


def _backward(outputs: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor],
              grad_outputs: Sequence[torch.Tensor], create_graph: bool = False) -> tuple[torch.Tensor, ...]:
    """Σ_i grad_outputs_i · ∂outputs_i/∂inputs on the retained graph, zeros where there is no path."""
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad]
    if not pairs:  # e.g. a gradient that does not depend on the weights: its Hessian block is zero
        return tuple(torch.zeros_like(x) for x in inputs)
    outs, grads = zip(*pairs)
    return torch.autograd.grad(outs, inputs, grads, retain_graph=True, create_graph=create_graph,
                               allow_unused=True, materialize_grads=True)


@contextmanager
def measurement_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode with autograd enabled; every module's own train/eval flag is restored afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.enable_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


class Curvature:
    """Products with the curvature matrices of ``loss_fn(model(inputs), targets)``.

    Build it inside :func:`measurement_mode` (see :func:`curvature`).  ``loss_fn`` and ``targets`` may be
    None when only output-space quantities (Jacobian, NTK) are needed.
    """

    def __init__(self, model: nn.Module, inputs: torch.Tensor, loss_fn: LossFn | None = None,
                 targets: torch.Tensor | None = None, stats: SpectraStats | None = None):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("the model has no trainable parameters")
        self.model, self.inputs, self.loss_fn, self.targets = model, inputs, loss_fn, targets
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.numels = [p.numel() for p in self.params]
        self.dim = sum(self.numels)
        self.dtype, self.device = self.params[0].dtype, self.params[0].device
        self.stats = stats if stats is not None else SpectraStats()
        self.outputs = model(inputs)

    # --- flat vectors <-> per-tensor lists -------------------------------------------------------
    def flatten(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, v: torch.Tensor) -> list[torch.Tensor]:
        return [chunk.view_as(p) for chunk, p in zip(v.split(self.numels), self.params)]

    def flatten_named(self, values: Mapping[str, float | torch.Tensor]) -> torch.Tensor:
        """A {parameter name: scalar or tensor broadcastable to the parameter} dict as one flat vector."""
        unknown = sorted(set(values) - set(self.names))
        missing = [n for n in self.names if n not in values]
        if unknown or missing:
            raise ValueError(f"names must match the trainable parameters; unknown: {unknown}, missing: {missing}")
        return self.flatten([torch.as_tensor(values[n], dtype=self.dtype, device=self.device).expand_as(p)
                             for n, p in zip(self.names, self.params)])

    def _operator(self, matvec: Callable[[torch.Tensor], torch.Tensor], dim: int,
                  guess: Callable[[], torch.Tensor] | None = None) -> Operator:
        return Operator(matvec, dim, self.dtype, self.device, self.stats, guess)

    # --- Hessian -----------------------------------------------------------------------------------
    @cached_property
    def loss(self) -> torch.Tensor:
        return self.loss_fn(self.outputs, self.targets)

    @cached_property
    def _gradient(self) -> tuple[torch.Tensor, ...]:
        return _backward([self.loss], self.params, [torch.ones_like(self.loss)], create_graph=True)

    def gradient(self) -> torch.Tensor:
        return self.flatten(self._gradient).detach()

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        return self.flatten(_backward(self._gradient, self.params, self.unflatten(v)))

    def hessian(self, scaling_sqrt: torch.Tensor | None = None) -> Operator:
        """H, or D^½ H D^½ when the flat vector ``scaling_sqrt`` = D^½ is given.  Its guess at the top
        eigenvectors is :meth:`mean_mode` (D^½ times it when scaled): the Gauss-Newton part carries the top of
        the spectrum, and the guess costs no curvature product."""
        op = self._operator(self.hvp, self.dim, lambda: self._guess)
        return op if scaling_sqrt is None else op.congruence(scaling_sqrt)

    # --- Jacobian of the outputs, and the Gauss-Newton matrix G = Jᵀ H_loss J ------------------------
    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        """Jᵀu for ``u`` shaped like the outputs."""
        return self.flatten(_backward([self.outputs], self.params, [u]))

    @cached_property
    def _transposed_jacobian(self) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        # Jᵀu is linear in a dummy u; differentiating it w.r.t. u gives Jv by one more backward pass
        # (the "double-vjp trick"), so J and Jᵀ share the retained graph.
        u = torch.zeros_like(self.outputs, requires_grad=True)
        return u, _backward([self.outputs], self.params, [u], create_graph=True)

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """Jv, shaped like the outputs."""
        u, jt_u = self._transposed_jacobian
        return _backward(jt_u, [u], self.unflatten(v))[0]

    @cached_property
    def _output_gradient(self) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.outputs.detach().requires_grad_()
        loss = self.loss_fn(outputs, self.targets)
        return outputs, _backward([loss], [outputs], [torch.ones_like(loss)], create_graph=True)[0]

    def loss_hvp(self, w: torch.Tensor) -> torch.Tensor:
        """H_loss·w: the Hessian of the loss w.r.t. the outputs (not the weights)."""
        outputs, grad = self._output_gradient
        return _backward([grad], [outputs], [w])[0]

    def mean_mode(self, iterations: int = MEAN_MODE_ITERATIONS) -> torch.Tensor:
        """Jᵀ H_loss (1 ⊗ v), with v the top eigenvector of Σ_n H_n, the loss Hessians w.r.t. each example's
        outputs (the last dimension) summed over the examples (all other dimensions).

        It is the top eigenvector of the Gauss-Newton matrix G = Jᵀ H_loss J when the kernel J Jᵀ is its mean
        mode alone, every example's outputs moving together: the large constant component that ReLU networks'
        NTKs have, which sets the outlying top of their Hessian spectrum.  So it can lie close to the top
        eigenvector (|cos| 0.98 for the benchmark's ResMLP at init and 0.99 after 100 Adam steps, where the
        gradient's is 0.44 and 0.56; after SGD training both are low; README).  Costs one backward pass through
        the model and ``iterations`` + 1 through the loss alone (power iteration on the C × C matrix Σ_n H_n),
        no curvature product.  v starts from the summed output gradient, the mean residual.
        """
        outputs, grad = self._output_gradient
        lead = tuple(range(outputs.dim() - 1))

        def over_examples(t: torch.Tensor) -> torch.Tensor:
            return t.sum(lead) if lead else t  # (a sum over no dimension would sum them all)

        v = over_examples(grad.detach())
        if not bool(v.norm() > 0):  # a perfect fit: start anywhere off the constant vectors, cross-entropy's null space
            v = torch.linspace(1.0, 2.0, v.numel(), dtype=v.dtype, device=v.device)
        for _ in range(iterations):
            w = over_examples(self.loss_hvp(v.expand_as(outputs)))
            if not bool(w.norm() > 0):
                break  # v spans nothing Σ_n H_n sees: the guess is 0, and the eigensolvers ignore it
            v = w / w.norm()
        return self.vjp(self.loss_hvp(v.expand_as(outputs)))

    @cached_property
    def _guess(self) -> torch.Tensor:
        """The mean mode, computed once however many operators (raw, rescaled, GGN) start cold from it."""
        return self.mean_mode()

    def ggn(self, scaling_sqrt: torch.Tensor | None = None) -> Operator:
        op = self._operator(lambda v: self.vjp(self.loss_hvp(self.jvp(v))), self.dim, lambda: self._guess)
        return op if scaling_sqrt is None else op.congruence(scaling_sqrt)

    # --- empirical NTK Θ = J Jᵀ over all (example, output) pairs ----------------------------------------
    def ntk(self, scaling_sqrt: torch.Tensor | None = None) -> Operator:
        """Θ = J Jᵀ, or J D Jᵀ when the flat vector ``scaling_sqrt`` = D^½ is given."""
        shape, d = self.outputs.shape, 1.0 if scaling_sqrt is None else scaling_sqrt.square()
        return self._operator(lambda u: self.jvp(d * self.vjp(u.view(shape))).reshape(-1), self.outputs.numel())

    def jacobian(self) -> torch.Tensor:
        """Dense J of shape (outputs.numel(), dim), one example at a time with torch.func (vmap of jacrev).

        Per example is B times cheaper than rows of the full-batch Jacobian, and exact because in eval
        mode the examples of a batch do not interact (no batch statistics).
        """
        params = {n: p.detach() for n, p in zip(self.names, self.params)}

        def one_example(x: torch.Tensor) -> dict[str, torch.Tensor]:
            def outputs(p):
                return torch.func.functional_call(self.model, p, (x.unsqueeze(0),)).squeeze(0)
            return torch.func.jacrev(outputs)(params)

        per_param = torch.func.vmap(one_example)(self.inputs)
        n_out = self.outputs.numel()
        return torch.cat([per_param[n].reshape(n_out, -1) for n in self.names], dim=1)


@contextmanager
def curvature(model: nn.Module, inputs: torch.Tensor, loss_fn: LossFn | None = None,
              targets: torch.Tensor | None = None, stats: SpectraStats | None = None) -> Iterator[Curvature]:
    """A :class:`Curvature` built in :func:`measurement_mode`; use it inside the ``with`` block only."""
    with measurement_mode(model):
        yield Curvature(model, inputs, loss_fn, targets, stats)
