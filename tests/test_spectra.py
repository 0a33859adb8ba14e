"""lrtransfer.spectra against dense references on small float64 models.

The dense references use torch.autograd.functional (vectorised): in torch 2.13, torch.func.hessian and
jacrev∘jacrev return wrong, asymmetric second derivatives through F.layer_norm, which the Transformer has.
"""

import copy
import dataclasses
import json
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from lrtransfer.models import LinearNet, ResConvNet, ResMLP, SimpleConvNet, Transformer
from lrtransfer.optim import build_optimizer
from lrtransfer.parametrization import Parametrization
from lrtransfer.spectra import (
    NonFiniteCurvature,
    Operator,
    SpectraMonitor,
    SpectraSettings,
    SpectraStats,
    curvature,
    directional_sharpness,
    estimate_trace,
    hessian_trace,
    lr_multipliers,
    preconditioned_sharpness,
    top_eigenpairs,
    top_ggn_eigenvalues,
    top_hessian_eigenvalues,
    top_ntk_eigenvalues,
)


def language_loss(outputs, targets):
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))


def half_mse(outputs, targets):
    return 0.5 * F.mse_loss(outputs, targets)


def make_case(name):
    """(model, loss_fn, inputs, targets): small float64 problems whose dense Hessian takes < 1 s."""
    torch.manual_seed(0)
    if name == "resmlp":
        model = ResMLP(8, 4, 16, 2, param="mup", base_width=8).double()
        return model, F.cross_entropy, torch.randn(32, 8, dtype=torch.float64), torch.randint(0, 4, (32,))
    if name == "transformer":
        model = Transformer(11, 6, 8, 1, head_dim=4, norm="pre", param="sp").double()
        return model, language_loss, torch.randint(0, 11, (4, 6)), torch.randint(0, 11, (4, 6))
    if name == "simple_convnet":  # 2-D: 32×32 images are the smallest its strides and poolings take
        model = SimpleConvNet((2, 32, 32), 3, 4, base_width=2, bias=True, param="mup").double()
        return model, F.cross_entropy, torch.randn(8, 2, 32, 32, dtype=torch.float64), torch.randint(0, 3, (8,))
    if name == "convnet":  # 1-D signals, two blocks per stage
        model = ResConvNet((16,), 3, 4, 6, base_width=2, base_depth=3, param="depth_mup").double()
        return model, F.cross_entropy, torch.randn(16, 16, dtype=torch.float64), torch.randint(0, 3, (16,))
    model = LinearNet(20, 1, 16, param="ntp").double()
    return model, half_mse, torch.randn(32, 20, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)


CASES = ("resmlp", "transformer", "linear", "simple_convnet", "convnet")


def as_function_of_flat_weights(model, fn):
    """θ (flat, trainable parameters in named_parameters order), and θ ↦ fn(model with weights θ)."""
    named = [(n, p.detach()) for n, p in model.named_parameters() if p.requires_grad]
    theta = torch.cat([p.reshape(-1) for _, p in named])

    def at(flat):
        chunks = flat.split([p.numel() for _, p in named])
        return fn(lambda x: functional_call(model, {n: c.view_as(p) for (n, p), c in zip(named, chunks)}, (x,)))

    return theta, at


def dense_hessian(model, loss_fn, x, y):
    theta, loss = as_function_of_flat_weights(model, lambda f: lambda: loss_fn(f(x), y))
    return torch.autograd.functional.hessian(lambda t: loss(t)(), theta, vectorize=True)


def dense_jacobian(model, x):
    theta, out = as_function_of_flat_weights(model, lambda f: lambda: f(x).reshape(-1))
    return torch.autograd.functional.jacobian(lambda t: out(t)(), theta, vectorize=True)


def dense_ggn(model, loss_fn, x, y):
    outputs = model(x).detach()
    h_loss = torch.autograd.functional.hessian(lambda o: loss_fn(o.view_as(outputs), y), outputs.reshape(-1))
    jac = dense_jacobian(model, x)
    return jac.T @ h_loss @ jac


def top(matrix, k):
    return torch.linalg.eigvalsh(matrix).flip(0)[:k]


def rel_err(a, b):
    return ((torch.as_tensor(a) - torch.as_tensor(b)).abs() / torch.as_tensor(b).abs()).max().item()


@pytest.fixture(scope="module", params=CASES)
def case(request):
    model, loss_fn, x, y = make_case(request.param)
    return request.param, model, loss_fn, x, y, dense_hessian(model, loss_fn, x, y)


# --- Hessian eigenvalues --------------------------------------------------------------------------------

def test_lanczos_top3_matches_dense(case):
    _, model, loss_fn, x, y, hessian = case
    result = top_hessian_eigenvalues(model, loss_fn, x, y, k=3, return_vectors=True)
    assert rel_err(result.values, top(hessian, 3)) < 1e-6
    assert torch.all(result.values[:-1] >= result.values[1:])
    vectors = result.vectors
    assert torch.allclose(vectors @ vectors.T, torch.eye(3, dtype=vectors.dtype), atol=1e-8)
    residual = hessian @ vectors.T - vectors.T * result.values
    assert residual.norm(dim=0).max() < 1e-6 * result.values[0]


@pytest.mark.parametrize("name", ["resmlp", "linear"])
@pytest.mark.parametrize("tol", [1e-6, 1e-9])
def test_power_iteration_matches_dense_within_its_tolerance(name, tol):
    model, loss_fn, x, y = make_case(name)
    eigenvalues = torch.linalg.eigvalsh(dense_hessian(model, loss_fn, x, y))
    # Power iteration finds the largest |λ|: here the top three dominate the negative part.
    assert eigenvalues[-3] > -eigenvalues[0]
    power = top_hessian_eigenvalues(model, loss_fn, x, y, k=3, method="power", tol=tol, max_iter=5000)
    assert rel_err(power, eigenvalues.flip(0)[:3]) < 10 * tol


def test_power_iteration_defaults_are_pyhessians():
    model, loss_fn, x, y = make_case("resmlp")
    exact = top(dense_hessian(model, loss_fn, x, y), 1)
    stats = SpectraStats()
    power = top_hessian_eigenvalues(model, loss_fn, x, y, method="power", stats=stats)
    assert 1e-5 < rel_err(power, exact) < 1e-2  # tol 1e-3 on the change of the Rayleigh quotient is loose
    capped = SpectraStats()
    top_hessian_eigenvalues(model, loss_fn, x, y, method="power", tol=0.0, stats=capped)
    assert stats.hvps < capped.hvps == 100


def test_scaled_operator_matches_dense(case):
    name, model, loss_fn, x, y, hessian = case
    gen = torch.Generator().manual_seed(1)
    names = [n for n, _ in model.named_parameters()]
    scaling = {n: 0.1 + torch.rand((), generator=gen).item() * 10 for n in names}
    first = names[0]
    scaling[first] = 0.5 + torch.rand(dict(model.named_parameters())[first].shape, generator=gen, dtype=torch.float64)
    d_sqrt = torch.cat([torch.as_tensor(scaling[n]).expand_as(p).reshape(-1) for n, p in model.named_parameters()])
    d_sqrt = d_sqrt.sqrt()
    expected = top(d_sqrt[:, None] * hessian * d_sqrt[None, :], 3)
    assert rel_err(top_hessian_eigenvalues(model, loss_fn, x, y, k=3, scaling=scaling), expected) < 1e-6
    with pytest.raises(ValueError, match="missing"):
        top_hessian_eigenvalues(model, loss_fn, x, y, scaling={first: 1.0})


def test_rescaled_sharpness_is_invariant_under_the_abc_symmetry():
    """W → cW with multiplier m/c and SGD LR ×c² trains identically; λ(D^½HD^½) must not change."""
    model, loss_fn, x, y = make_case("resmlp")
    scaling = {n: s.lr_mult_sgd for n, s in model.param_specs().items()}
    shifted, shifted_scaling = copy.deepcopy(model), dict(scaling)
    for module, c in ((shifted.readout, 4.0), (shifted.blocks[0].branch[1], 0.5)):
        spec = module.specs["weight"]
        module.specs["weight"] = dataclasses.replace(spec, multiplier=spec.multiplier / c)
        with torch.no_grad():
            module.weight.mul_(c)
    shifted_scaling["readout.weight"] *= 4.0**2
    shifted_scaling["blocks.0.branch.1.weight"] *= 0.5**2
    assert torch.allclose(shifted(x), model(x))
    raw = top_hessian_eigenvalues(model, loss_fn, x, y)
    raw_shifted = top_hessian_eigenvalues(shifted, loss_fn, x, y)
    assert rel_err(raw_shifted, raw) > 1e-2
    rescaled = top_hessian_eigenvalues(model, loss_fn, x, y, scaling=scaling)
    assert rel_err(top_hessian_eigenvalues(shifted, loss_fn, x, y, scaling=shifted_scaling), rescaled) < 1e-8


def test_warm_start_from_eigenvectors_converges_immediately():
    model, loss_fn, x, y = make_case("resmlp")
    cold_stats, warm_stats = SpectraStats(), SpectraStats()
    cold = top_hessian_eigenvalues(model, loss_fn, x, y, k=2, return_vectors=True, stats=cold_stats)
    warm = top_hessian_eigenvalues(model, loss_fn, x, y, k=2, init=cold.vectors, stats=warm_stats)
    assert rel_err(warm, cold.values) < 1e-10
    assert warm_stats.hvps <= 4 < cold_stats.hvps / 4


def test_float32_model_gets_float32_results_at_its_default_tolerance():
    model, loss_fn, x, y = make_case("resmlp")
    exact = top(dense_hessian(model, loss_fn, x, y), 2)
    model.float()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the √eps default must be reachable in float32
        values = top_hessian_eigenvalues(model, loss_fn, x.float(), y, k=2)
    assert values.dtype == torch.float32
    assert rel_err(values.double(), exact) < 1e-5


# --- the Lanczos solver on explicit matrices --------------------------------------------------------------

def matrix_operator(matrix):
    return Operator(lambda v: matrix @ v, len(matrix), matrix.dtype, matrix.device, SpectraStats())


def test_lanczos_restarts_when_the_start_vector_spans_an_invariant_subspace():
    values = torch.tensor([5.0, 4.0, 3.0, 1.0, -7.0], dtype=torch.float64)
    start = torch.zeros(5, dtype=torch.float64)
    start[3] = 1.0  # an eigenvector: the Krylov space stops growing after one step
    result = top_eigenpairs(matrix_operator(torch.diag(values)), k=3, init=start)
    assert torch.allclose(result.values, values[:3], rtol=1e-12)


@pytest.mark.parametrize("spectrum, k", [([5, 5, 1], 2), ([5, 5, 4, 3, 2, 1], 3), ([5, 5, 5, 2], 3)])
def test_lanczos_finds_repeated_eigenvalues(spectrum, k):
    """A single start vector sees one direction per eigenspace, so it returned [5, 1] for [5, 5, 1]; blocks
    of k vectors find every copy."""
    gen = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(120, 120, generator=gen, dtype=torch.float64))
    values = torch.cat([torch.tensor(spectrum, dtype=torch.float64),
                        0.5 * torch.rand(120 - len(spectrum), generator=gen, dtype=torch.float64)])
    result = top_eigenpairs(matrix_operator(basis @ torch.diag(values) @ basis.T), k=k)
    assert torch.allclose(result.values, torch.tensor(spectrum[:k], dtype=torch.float64), rtol=1e-10)
    assert torch.allclose(result.vectors @ result.vectors.T, torch.eye(k, dtype=torch.float64), atol=1e-10)


def crowded_operator(guess=None):
    """A 400-dimensional spectrum whose top (10, at e_0) sits close to the rest (9.5 down to 0): slow from random."""
    values = torch.cat([torch.tensor([10.0]), torch.linspace(9.5, 0.0, 399)]).double()
    return Operator(lambda v: values * v, len(values), torch.float64, torch.device("cpu"), SpectraStats(), guess)


def test_a_cold_lanczos_start_leans_on_the_operators_guess():
    top = torch.zeros(400, dtype=torch.float64)
    top[0] = 1.0
    cold, guessed = crowded_operator(), crowded_operator(lambda: 3.0 * top)
    plain, helped = (top_eigenpairs(op, k=1, tol=1e-3) for op in (cold, guessed))
    assert plain.values.item() == pytest.approx(10.0, rel=1e-5) and helped.values.item() == pytest.approx(10.0, rel=1e-5)
    assert guessed.stats.hvps <= cold.stats.hvps - 4  # 12 against 17


@pytest.mark.parametrize("guess", [torch.zeros(400, dtype=torch.float64), torch.full((400,), float("inf"), dtype=torch.float64)],
                         ids=["zero", "inf"])
def test_a_useless_guess_leaves_the_random_start(guess):
    plain, ignored = crowded_operator(), crowded_operator(lambda: guess)
    assert torch.equal(top_eigenpairs(plain, tol=1e-3).values, top_eigenpairs(ignored, tol=1e-3).values)
    assert plain.stats.hvps == ignored.stats.hvps


def test_a_warm_start_ignores_the_guess():
    init = torch.ones(400, dtype=torch.float64)
    plain, guessed = crowded_operator(), crowded_operator(lambda: torch.arange(400.0, dtype=torch.float64))
    assert torch.equal(top_eigenpairs(plain, init=init).values, top_eigenpairs(guessed, init=init).values)
    assert plain.stats.hvps == guessed.stats.hvps


def test_the_hessians_and_ggns_guess_is_the_mean_mode_in_the_operators_coordinates():
    model, loss_fn, x, y = make_case("resmlp")
    with curvature(model, x, loss_fn, y) as curv:
        d = torch.rand(curv.dim, dtype=curv.dtype) + 0.5
        mean_mode = curv.mean_mode()
        assert torch.equal(curv.hessian().guess(), mean_mode) and torch.equal(curv.ggn().guess(), mean_mode)
        assert torch.allclose(curv.hessian(d).guess(), d * mean_mode)


@pytest.mark.parametrize("name", ["resmlp", "transformer", "linear"])
def test_mean_mode_is_jt_h_loss_times_the_top_eigenvector_of_the_summed_loss_hessians(name):
    """Against dense matrices: J, and the loss Hessian w.r.t. the outputs, whose per-example C × C blocks
    (the last output dimension) are summed to M; the mean mode is Jᵀ H_loss (1 ⊗ v), v M's top eigenvector."""
    model, loss_fn, x, y = make_case(name)
    outputs = model(x).detach()
    classes = outputs.shape[-1]
    h_loss = torch.autograd.functional.hessian(lambda o: loss_fn(o.view_as(outputs), y), outputs.reshape(-1))
    blocks = h_loss.view(-1, classes, outputs.numel() // classes, classes).diagonal(dim1=0, dim2=2)
    m = blocks.sum(-1)  # Σ_n H_n
    eigenvalues, eigenvectors = torch.linalg.eigh(m)
    assert classes == 1 or eigenvalues[-1] > 1.05 * eigenvalues[-2]  # a top eigenvector that power iteration finds
    v = eigenvectors[:, -1]
    expected = dense_jacobian(model, x).T @ (h_loss @ v.repeat(outputs.numel() // classes))
    with curvature(model, x, loss_fn, y) as curv:
        got = curv.mean_mode(iterations=500)
    sign = torch.sign(torch.dot(got, expected))
    assert torch.allclose(got, sign * expected, rtol=1e-8, atol=1e-10 * expected.abs().max().item())


def test_mean_mode_of_a_perfect_fit_is_still_defined():
    """Zero residual everywhere (every target equals the output): the power iteration starts off the constant
    vectors, and the guess is the direction the (nonzero) loss curvature gives."""
    model, _, x, _ = make_case("linear")
    y = model(x).detach()
    with curvature(model, x, half_mse, y) as curv:
        guess = curv.mean_mode()
    assert bool(torch.isfinite(guess).all()) and guess.norm() > 0


def test_a_cold_start_on_the_mean_mode_needs_fewer_products_than_on_the_gradient():
    """An SP ResMLP at init, where the mean mode lies close to the top eigenvector (README: |cos| 0.98 at width
    512); compared with the gradient the Hessian leaned on before, on the same random half."""
    torch.manual_seed(0)
    model = ResMLP(16, 10, 128, 2, param="sp")
    x = torch.randn(512, 16) + 0.5
    y = torch.randint(0, 10, (512,))
    with curvature(model, x, F.cross_entropy, y) as curv:
        reference = top_eigenpairs(curv.hessian(), tol=1e-6).vectors[0]
        mean_mode, gradient = curv.mean_mode(), curv.gradient()

        def cosine(v):
            return (torch.dot(v, reference) / v.norm()).abs().item()

        def products(guess):
            op = curv.hessian()
            op.guess, op.stats = (lambda: guess), SpectraStats()
            top_eigenpairs(op, tol=1e-3)
            return op.stats.hvps

        assert cosine(mean_mode) > 0.9 > 2 * cosine(gradient)
        assert products(mean_mode) < products(gradient)


def _virtual_memory_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the process's size from Linux /proc")
def test_lanczos_reserves_memory_for_the_vectors_it_uses_not_max_iter():
    """A top eigenvalue set apart converges in a handful of products; the basis must not reserve max_iter = 100
    vectors (here 4 GB, the virtual size of the process) while it runs."""
    dim = 10_000_000
    diagonal = torch.ones(dim)
    diagonal[0] = 100.0
    sizes = []

    def matvec(v):
        sizes.append(_virtual_memory_bytes())
        return diagonal * v

    before = _virtual_memory_bytes()
    op = Operator(matvec, dim, torch.float32, torch.device("cpu"), SpectraStats())
    result = top_eigenpairs(op, k=1, tol=1e-3, max_iter=100)
    assert result.values.item() == pytest.approx(100.0, rel=1e-3)
    assert len(sizes) < 10
    # 0.76 GB measured: 16 vectors reserved (0.64 GB), plus the start, block and product vectors; 100 took 4.1 GB
    assert max(sizes) - before < 40 * dim * 4


def test_degenerate_ggn_and_ntk_of_a_zero_readout_model_match_dense():
    """With a zero readout all classes look alike: the GGN's and the NTK's top eigenvalues repeat."""
    torch.manual_seed(0)
    model = ResMLP(8, 4, 16, 2, param=Parametrization("mup", readout_zero_init=True), base_width=8).double()
    x, y = torch.randn(32, 8, dtype=torch.float64), torch.randint(0, 4, (32,))
    ggn = top(dense_ggn(model, F.cross_entropy, x, y), 4)
    jac = dense_jacobian(model, x)
    ntk = top(jac @ jac.T, 4)
    assert rel_err(ntk[1:], ntk[:1].expand(3)) < 1e-8  # the premise: a repeated top eigenvalue
    assert rel_err(top_ggn_eigenvalues(model, F.cross_entropy, x, y, k=4), ggn) < 1e-6
    assert rel_err(top_ntk_eigenvalues(model, x, k=4, method="lanczos"), ntk) < 1e-6


def test_lanczos_warns_when_it_runs_out_of_iterations():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(200, 200, generator=gen, dtype=torch.float64)
    with pytest.warns(UserWarning, match="max_iter=5"):
        top_eigenpairs(matrix_operator(a + a.T), k=1, max_iter=5)


def test_invalid_arguments_raise():
    op = matrix_operator(torch.eye(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="k=5"):
        top_eigenpairs(op, k=5)
    with pytest.raises(ValueError, match="'arnoldi'"):
        top_eigenpairs(op, method="arnoldi")
    with pytest.raises(ValueError, match="max_iter=2 must be at least k=3"):
        top_eigenpairs(op, k=3, max_iter=2)


NON_FINITE_CALLS = {
    "hessian lanczos": lambda model, loss_fn, x, y: top_hessian_eigenvalues(model, loss_fn, x, y),
    "hessian power": lambda model, loss_fn, x, y: top_hessian_eigenvalues(model, loss_fn, x, y, method="power"),
    "ntk exact": lambda model, loss_fn, x, y: top_ntk_eigenvalues(model, x, method="exact"),
    "ntk lanczos": lambda model, loss_fn, x, y: top_ntk_eigenvalues(model, x, method="lanczos"),
}


@pytest.mark.parametrize("call", NON_FINITE_CALLS.values(), ids=NON_FINITE_CALLS.keys())
def test_non_finite_weights_stop_the_solver_with_a_clear_error(call):
    model, loss_fn, x, y = make_case("resmlp")
    with torch.no_grad():
        model.input.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteCurvature, match="not finite"):
        call(model, loss_fn, x, y)


# --- trace and directional sharpness -------------------------------------------------------------------

def test_trace_is_exact_with_one_probe_per_parameter(case):
    _, model, loss_fn, x, y, hessian = case
    stats = SpectraStats()
    trace = hessian_trace(model, loss_fn, x, y, num_probes=len(hessian), stats=stats)
    assert trace == pytest.approx(hessian.trace().item(), rel=1e-10)
    assert stats.hvps == len(hessian)


@pytest.mark.parametrize("method,tolerance", [("hutch++", 0.05), ("hutchinson", 0.1)])
def test_trace_estimators_with_many_probes(method, tolerance):
    model, loss_fn, x, y = make_case("resmlp")  # 756 parameters
    exact = dense_hessian(model, loss_fn, x, y).trace().item()
    stats = SpectraStats()
    assert hessian_trace(model, loss_fn, x, y, num_probes=300, method=method, stats=stats) == pytest.approx(
        exact, rel=tolerance)
    assert stats.hvps == 300


def test_hutchplusplus_is_exact_on_a_low_rank_operator():
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(100, 5, generator=gen, dtype=torch.float64)
    low_rank = u @ u.T
    assert estimate_trace(matrix_operator(low_rank), 18) == pytest.approx(low_rank.trace().item(), rel=1e-10)


def test_directional_sharpness_matches_dense(case):
    _, model, loss_fn, x, y, hessian = case
    theta, loss = as_function_of_flat_weights(model, lambda f: lambda: loss_fn(f(x), y))
    g = torch.autograd.functional.jacobian(lambda t: loss(t)(), theta)
    assert directional_sharpness(model, loss_fn, x, y) == pytest.approx((g @ hessian @ g / (g @ g)).item(), rel=1e-10)
    gen = torch.Generator().manual_seed(0)
    direction = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in model.named_parameters()}
    d = torch.cat([t.reshape(-1) for t in direction.values()])
    assert directional_sharpness(model, loss_fn, x, y, direction) == pytest.approx(
        (d @ hessian @ d / (d @ d)).item(), rel=1e-10)


# --- Gauss-Newton and NTK -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CASES)
def test_ggn_matches_dense(name):
    model, loss_fn, x, y = make_case(name)
    expected = top(dense_ggn(model, loss_fn, x, y), 2)
    assert rel_err(top_ggn_eigenvalues(model, loss_fn, x, y, k=2), expected) < 1e-6


@pytest.mark.parametrize("name", ["resmlp", "transformer", "convnet"])
def test_ntk_exact_and_lanczos_match_dense(name):
    model, _, x, _ = make_case(name)
    jac = dense_jacobian(model, x)  # (examples × outputs [× positions], parameters)
    expected = top(jac @ jac.T, 3)
    assert rel_err(top(jac.T @ jac, 3), expected) < 1e-10  # same nonzero spectrum as JᵀJ
    exact_stats, lanczos_stats = SpectraStats(), SpectraStats()
    exact = top_ntk_eigenvalues(model, x, k=3, method="exact", stats=exact_stats)
    assert rel_err(exact, expected) < 1e-10
    assert rel_err(top_ntk_eigenvalues(model, x, k=3, method="lanczos", stats=lanczos_stats), expected) < 1e-6
    assert exact_stats.hvps == 0 < lanczos_stats.hvps
    auto_stats = SpectraStats()
    assert rel_err(top_ntk_eigenvalues(model, x, k=3, stats=auto_stats), expected) < 1e-10
    assert auto_stats.hvps == 0  # small problem: the exact Gram matrix


def test_auto_ntk_bounds_the_gram_matrix_too(monkeypatch):
    """More outputs than parameters: the Gram matrix (outputs²) is the larger dense object."""
    from lrtransfer.spectra import ntk
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 20, bias=False).double()  # 20 parameters, 8 × 20 = 160 outputs
    x = torch.randn(8, 1, dtype=torch.float64)
    monkeypatch.setattr(ntk, "EXACT_MAX_ENTRIES", 160 * 40)  # J (160 × 20) fits, the Gram (160 × 160) does not
    stats = SpectraStats()
    auto = top_ntk_eigenvalues(model, x, k=1, stats=stats)
    assert stats.hvps > 0  # Lanczos
    assert rel_err(auto, top_ntk_eigenvalues(model, x, k=1, method="exact")) < 1e-8


@pytest.mark.parametrize("name", ["resmlp", "transformer"])
def test_rescaled_ntk_is_j_d_jt(name):
    """Θ_D = J D Jᵀ with a per-tensor D (the LR multipliers), exact and by Lanczos, against the dense product."""
    model, _, x, _ = make_case(name)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    scaling = {n: 0.5 + (i % 3) for i, n in enumerate(names)}
    d = torch.cat([torch.full((p.numel(),), scaling[n], dtype=torch.float64)
                   for n, p in model.named_parameters() if p.requires_grad])
    jac = dense_jacobian(model, x)
    expected = top((jac * d) @ jac.T, 3)
    assert rel_err(expected, top(jac @ jac.T, 3)) > 1e-2  # D changes the spectrum
    assert rel_err(top_ntk_eigenvalues(model, x, k=3, method="exact", scaling=scaling), expected) < 1e-10
    assert rel_err(top_ntk_eigenvalues(model, x, k=3, method="lanczos", scaling=scaling), expected) < 1e-6


def test_ggn_of_mean_squared_error_is_ntk_over_number_of_outputs():
    model, loss_fn, x, y = make_case("linear")  # ½·mean over B·C entries: G = JᵀJ / (B·C)
    ggn = top_ggn_eigenvalues(model, loss_fn, x, y, k=2)
    ntk = top_ntk_eigenvalues(model, x, k=2)
    assert rel_err(ggn * y.numel(), ntk) < 1e-8


# --- Adam-preconditioned sharpness ----------------------------------------------------------------------

def adam_after_steps(name="adam", steps=3):
    """A µP model (per-tensor Adam LRs differ: hidden ×1/2) after a few Adam steps."""
    model, loss_fn, x, y = make_case("resmlp")
    optimizer = build_optimizer(model, name, 0.02, eps=1e-8, weight_decay=0.01 if name == "adamw" else 0.0)
    assert len({g["lr"] for g in optimizer.param_groups}) > 1
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, loss_fn, x, y, optimizer


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_preconditioned_sharpness_matches_dense(name):
    model, loss_fn, x, y, optimizer = adam_after_steps(name)
    base_lr = 0.02
    beta1, beta2 = optimizer.defaults["betas"]
    diag = []
    for group in optimizer.param_groups:  # P̃ = (1 − β1^t)(√v̂ + ε) · η0 / η_group
        state = optimizer.state[group["params"][0]]
        t = state["step"].item()
        v_hat = state["exp_avg_sq"] / (1 - beta2**t)
        diag.append(((1 - beta1**t) * (v_hat.sqrt() + group["eps"]) * base_lr / group["lr"]).reshape(-1))
    p_inverse = torch.diag(1 / torch.cat(diag))
    expected = torch.linalg.eigvals(p_inverse @ dense_hessian(model, loss_fn, x, y)).real.max().item()
    sharpness, threshold = preconditioned_sharpness(model, loss_fn, x, y, optimizer)
    assert sharpness == pytest.approx(expected, rel=1e-6)
    assert threshold == pytest.approx(38 / base_lr)
    # The verdict (sharpness / threshold) does not depend on the reference LR.
    other, other_threshold = preconditioned_sharpness(model, loss_fn, x, y, optimizer, reference_lr=0.5)
    assert other_threshold == pytest.approx(38 / 0.5)
    assert other / other_threshold == pytest.approx(sharpness / threshold, rel=1e-6)


def test_preconditioned_sharpness_needs_optimizer_state():
    model, loss_fn, x, y = make_case("resmlp")
    with pytest.raises(ValueError, match="second-moment state"):
        preconditioned_sharpness(model, loss_fn, x, y, build_optimizer(model, "adam", 0.01))


# --- the in-training monitor --------------------------------------------------------------------------------

ALL_EXTRAS = SpectraSettings(every=10, k=2, trace=True, trace_probes=30, ggn=True, ntk=2, preconditioned=True,
                             directional=True)


def test_monitor_reports_named_metrics_equal_to_direct_calls():
    model, loss_fn, x, y, optimizer = adam_after_steps()
    scaling = {n: s.lr_mult_sgd for n, s in model.param_specs().items()}
    monitor = SpectraMonitor(model, loss_fn, x, y, ALL_EXTRAS, optimizer=optimizer, scaling=scaling, base_lr=0.02)
    metrics = monitor.measure(0)
    assert set(metrics) == {
        "hessian/eig_0", "hessian/eig_1", "hessian/sharpness_rescaled", "hessian/sharpness_rescaled_x_lr",
        "hessian/trace", "ggn/eig_0", "ntk/eig_0", "ntk/eig_1", "ntk/rescaled_eig_0", "ntk/rescaled_eig_1",
        "adam/precond_sharpness", "adam/precond_threshold", "hessian/directional", "spectra/hvps", "spectra/seconds"}
    eigs = top_hessian_eigenvalues(model, loss_fn, x, y, k=2)
    assert [metrics["hessian/eig_0"], metrics["hessian/eig_1"]] == pytest.approx(eigs.tolist(), rel=1e-10)
    rescaled = top_hessian_eigenvalues(model, loss_fn, x, y, scaling=scaling).item()
    assert metrics["hessian/sharpness_rescaled"] == pytest.approx(rescaled, rel=1e-10)
    assert metrics["hessian/sharpness_rescaled_x_lr"] == pytest.approx(0.02 * rescaled, rel=1e-10)
    assert metrics["hessian/trace"] == pytest.approx(hessian_trace(model, loss_fn, x, y, num_probes=30), rel=1e-10)
    assert metrics["ggn/eig_0"] == pytest.approx(top_ggn_eigenvalues(model, loss_fn, x, y).item(), rel=1e-10)
    assert [metrics["ntk/eig_0"], metrics["ntk/eig_1"]] == pytest.approx(
        top_ntk_eigenvalues(model, x, k=2).tolist(), rel=1e-10)
    assert [metrics["ntk/rescaled_eig_0"], metrics["ntk/rescaled_eig_1"]] == pytest.approx(
        top_ntk_eigenvalues(model, x, k=2, scaling=scaling).tolist(), rel=1e-10)
    sharpness, threshold = preconditioned_sharpness(model, loss_fn, x, y, optimizer)
    assert metrics["adam/precond_sharpness"] == pytest.approx(sharpness, rel=1e-10)
    assert metrics["adam/precond_threshold"] == pytest.approx(threshold)
    assert metrics["hessian/directional"] == pytest.approx(directional_sharpness(model, loss_fn, x, y), rel=1e-10)
    assert metrics["spectra/hvps"] > 0 and metrics["spectra/seconds"] > 0


def test_monitor_warm_start_saves_products_at_unchanged_weights():
    model, loss_fn, x, y = make_case("resmlp")
    monitor = SpectraMonitor(model, loss_fn, x, y, SpectraSettings(k=3, ggn=True))
    first, second = monitor.measure(0), monitor.measure(1)
    assert second["spectra/hvps"] < first["spectra/hvps"] / 2
    for key in ("hessian/eig_0", "hessian/eig_2", "ggn/eig_0"):
        assert second[key] == pytest.approx(first[key], rel=1e-8)


def test_monitor_leaves_weights_grads_modes_and_rng_alone():
    model, loss_fn, x, y, optimizer = adam_after_steps()
    model.train()
    model.blocks[1].eval()  # a mixed state must come back as it was
    loss_fn(model(x), y).backward()
    model.readout.bias.grad = None
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    rng = torch.get_rng_state()
    with torch.no_grad():  # a training loop may call it from inside no_grad
        SpectraMonitor(model, loss_fn, x, y, ALL_EXTRAS, optimizer=optimizer).measure(0)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    assert model.readout.bias.grad is None
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters() if n != "readout.bias")
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert torch.equal(torch.get_rng_state(), rng)


def test_monitor_skips_preconditioned_sharpness_before_adams_first_step():
    model, loss_fn, x, y = make_case("resmlp")
    optimizer = build_optimizer(model, "adam", 0.01)
    monitor = SpectraMonitor(model, loss_fn, x, y, SpectraSettings(preconditioned=True), optimizer=optimizer)
    assert "adam/precond_sharpness" not in monitor.measure(0)
    loss_fn(model(x), y).backward()
    optimizer.step()
    assert "adam/precond_sharpness" in monitor.measure(1)


def test_monitor_reuses_the_hessian_when_the_scaling_is_one():
    model, loss_fn, x, y = make_case("transformer")  # SP: every lr_mult is 1
    optimizer = build_optimizer(model, "sgd", 0.1)
    plain = SpectraMonitor(model, loss_fn, x, y).measure(0)
    scaled = SpectraMonitor(model, loss_fn, x, y, scaling=lr_multipliers(optimizer), base_lr=0.1).measure(0)
    assert scaled["hessian/sharpness_rescaled"] == scaled["hessian/eig_0"]
    assert scaled["hessian/sharpness_rescaled_x_lr"] == pytest.approx(0.1 * scaled["hessian/eig_0"])
    assert scaled["spectra/hvps"] == plain["spectra/hvps"]


def test_monitor_due_steps():
    model, loss_fn, x, y = make_case("linear")
    monitor = SpectraMonitor(model, loss_fn, x, y, SpectraSettings(every=50))
    assert [s for s in range(151) if monitor.due(s)] == [0, 50, 100, 150]
    with pytest.raises(ValueError, match="optimizer"):
        SpectraMonitor(model, loss_fn, x, y, SpectraSettings(preconditioned=True))


def test_monitor_save_npz_round_trips(tmp_path):
    model, loss_fn, x, y = make_case("linear")
    settings = SpectraSettings(k=2, ntk=1)
    monitor = SpectraMonitor(model, loss_fn, x, y, settings, scaling={"input.weight": 2.0, "readout.weight": 0.5})
    records = [monitor.measure(0)]
    with torch.no_grad():
        model.readout.weight.mul_(1.5)
    records.append(monitor.measure(7))
    path = monitor.save_npz(tmp_path / "spectra.npz")
    with np.load(path, allow_pickle=False) as data:
        assert data["step"].tolist() == [0, 7]
        for key in records[0]:
            assert data[key].tolist() == [r[key] for r in records]
        saved = json.loads(str(data["settings"]))
    assert records[0]["hessian/eig_0"] != records[1]["hessian/eig_0"]
    assert saved["k"] == 2 and saved["ntk"] == 1 and saved["scaling"] == {"input.weight": 2.0, "readout.weight": 0.5}
