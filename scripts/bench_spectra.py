"""Cost of lrtransfer.spectra, measured in one run on the same machine, threads and dtype (float32).

1. One Hessian-vector product relative to one gradient, on a ResMLP (width 512, depth 4, SP, 1024 mnist1d
   examples) and a small Transformer (Shakespeare characters), by
     - double backward on a retained graph (the library: the forward pass and first backward run once),
     - double backward rebuilding the graph for every product,
     - torch.func forward-over-reverse, jvp(grad(loss)), recomputing the forward for every product.
   Variants are timed alternately (min over repeats), so load on the machine hits all of them alike.
2. The top Hessian eigenvalue of that ResMLP at initialisation, after 100 Adam steps and after SGD training
   (where Super Consistency measures it: the spectrum's top crowds as the sharpness reaches 2/η): HVPs,
   seconds and relative error against a converged float64 reference, for our Lanczos and for PyHessian 0.1
   (power iteration), each over a sweep of its own stopping tolerance; "at equal accuracy" compares the
   loosest tolerance of each sweep whose error is within 1e-3.  Seconds include building the graph.  Each
   state also prints how close the cold start's guess (the mean mode) and the gradient lie to the top eigenvector.
   PyHessian is optional (pip install pyhessian==0.1); without it its rows are skipped.
3. The cost of measuring the top Hessian eigenvalue every 50 steps during training (Lanczos, warm-started,
   default and a looser tol, on a fixed batch of 256 or 1024 examples): the trainer's own loop (SGD, MLflow
   logging) with and without the SpectraHook, alternating.
4. How loose the Lanczos tolerance can be during training: along sc_width_resmlp's SGD trajectories (ResMLP depth 2
   on mnist1d, batch 32, 800 steps, measured every 64 steps on 256 examples), the rescaled sharpness at
   each tolerance, warm-started as the SpectraMonitor does and from a cold start (a fresh random vector
   tilted toward the Hessian's guess, the Gauss-Newton mean mode, as a first measurement starts), against float64.

Usage: python scripts/bench_spectra.py [--repeats 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import copy
import importlib
import tempfile
import time
import warnings
from functools import partial

import torch
from torch.func import functional_call, grad, jvp

from lrtransfer.data import default_cache_dir, load_mnist1d, load_shakespeare
from lrtransfer.measurements import SpectraHook
from lrtransfer.models import ResMLP, Transformer
from lrtransfer.optim import build_optimizer
from lrtransfer.parametrization import Parametrization
from lrtransfer.spectra import Operator, SpectraMonitor, SpectraSettings, SpectraStats, curvature, lr_multipliers, \
    top_eigenpairs, top_hessian_eigenvalues
from lrtransfer.tracking import RunTracker
from lrtransfer.trainer import LoopSettings, TrainState, train_loop, train_step

TARGET = 1e-3  # relative accuracy of the top eigenvalue
OURS, PYHESSIAN = "Lanczos (ours)", "PyHessian 0.1"
WIDTH, DEPTH, BATCH = 512, 4, 1024
ADAM_STEPS, ADAM_LR, TRAIN_BATCH = 100, 1e-3, 128  # `make reproduce`'s optimizer and batch; crowds the spectrum
SGD_STATES = ((0.1, 300), (0.05, 500))  # (lr, steps): approaching, then past, η·λ1 = 2 on the measurement batch
LANCZOS_TOLS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, None)  # None: the default, √eps of float32
PYHESSIAN_TOLS = (1e-3, 3e-4, 1e-4, 3e-5, 1e-5)  # 1e-3 is its default; float32 noise makes tighter ones unreliable
PYHESSIAN_MAX_ITER = 1000  # not its default 100, so that its tolerance, not the cap, decides when it stops
SEEDS = range(5)  # start vectors for the stopping-rule-free comparison
LANCZOS_PROBE_ITER = 30  # products recorded to find where Lanczos first comes within TARGET
EVERY, SGD_STEPS, SGD_LR = 50, 300, 0.01  # training-overhead runs: SP ResMLP, SGD, batch TRAIN_BATCH
MEASURE_BATCHES = (256, 1024)
MEASURE_TOLS = (None, 3e-3)  # the default, and the loosest one section 4 finds reliable along training
TRAJECTORIES = (("mup", 32, 0.25), ("mup", 128, 0.5), ("mup", 512, 0.25), ("ntp", 32, 4.0))  # sc_width_resmlp's optima, 2×
TRAJECTORY_STEPS, TRAJECTORY_BATCH, TRAJECTORY_EVERY = 800, 32, 64
TRAJECTORY_TOLS = (1e-2, 3e-3, 1e-3, None)
SHARPNESS_KEYS = ("hessian/eig_0", "hessian/sharpness_rescaled")  # the raw and the rescaled top eigenvalue


def mnist1d(device):
    return load_mnist1d(4000, 1000, default_cache_dir()).to(device)


def resmlp(data, width, depth, device):
    torch.manual_seed(0)
    return ResMLP(data.in_dim, data.out_dim, width, depth, param="sp").to(device)


def fixed_batch(data, size):
    """A batch drawn once from the training data, by its own generator (as the trainer draws its own)."""
    return data.batch(torch.Generator().manual_seed(10_000), size)


def transformer_problem(device):
    data = load_shakespeare(64, default_cache_dir())
    torch.manual_seed(0)
    model = Transformer(data.vocab_size, 64, 128, 2, head_dim=32, param="mup", base_width=64).to(device)
    x, y = data.batch(torch.Generator().manual_seed(0), 32)
    return model, data.loss, x.to(device), y.to(device)


def synchronized(fn, device):
    def run():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return run


def min_seconds(fns: dict, repeats: int, device) -> dict:
    """Min over ``repeats`` rounds of each callable, the callables alternating within a round."""
    runs = {name: synchronized(fn, device) for name, fn in fns.items()}
    for run in runs.values():
        run()  # warm-up: allocator, kernels, lazy graph construction
    times = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name] = min(times[name], time.perf_counter() - start)
    return times


def relative_error(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×"


def sci(x: float) -> str:
    return f"{x:.0e}".replace("e-0", "e-")


# 1. One HVP against one gradient


def hvp_costs(name, model, loss_fn, x, y, repeats, device) -> float:
    """Prints a table row; returns the cost of our HVP in gradients."""
    model.eval()
    params = list(model.parameters())
    v = [torch.randn_like(p) for p in params]
    named = {n: p.detach() for n, p in model.named_parameters()}
    tangent = dict(zip(named, v))

    def loss_of(p):
        return loss_fn(functional_call(model, p, (x,)), y)

    def gradient():
        torch.autograd.grad(loss_fn(model(x), y), params)

    def fresh_double_backward():
        g = torch.autograd.grad(loss_fn(model(x), y), params, create_graph=True)
        torch.autograd.grad(g, params, v)

    def func_forward_over_reverse():
        jvp(grad(loss_of), (named,), (tangent,))

    with curvature(model, x, loss_fn, y) as curv:
        flat_v = curv.flatten(v)
        reference = curv.hvp(flat_v)
        func_hvp = curv.flatten([jvp(grad(loss_of), (named,), (tangent,))[1][n] for n in named])
        agree = ((func_hvp - reference).norm() / reference.norm()).item()
        times = min_seconds({"grad": gradient, "retained": lambda: curv.hvp(flat_v),
                             "fresh": fresh_double_backward, "func": func_forward_over_reverse}, repeats, device)
    cells = [f"{1e3 * times[k]:.2f} ({ratio(times[k], times['grad'])})" for k in ("retained", "fresh", "func")]
    print(f"| {name} | {curv.dim:,} | {1e3 * times['grad']:.2f} | {' | '.join(cells)} "
          f"| {ratio(times['func'], times['retained'])} | {agree:.0e} |")
    return times["retained"] / times["grad"]


# 2. Top eigenvalue: our Lanczos against PyHessian


def import_pyhessian():
    try:
        return importlib.import_module("pyhessian")
    except ImportError:
        return None


class TargetReached(Exception):
    """Ends a PyHessian run from inside its loop once its estimate is within TARGET: it has no callback."""


class PyHessianProducts:
    """Stands in for PyHessian's ``hessian_vector_product`` inside a ``with`` block: counts the products
    and records each one's Rayleigh quotient vᵀHv (PyHessian passes a unit v), which is its estimate after
    that product.  With ``reference`` it raises :class:`TargetReached` at the first estimate within TARGET."""

    def __init__(self, reference: float | None = None):
        # pyhessian/__init__.py rebinds the name `hessian` to the class, so the module comes from the import system.
        self.module = importlib.import_module("pyhessian.hessian")
        self.reference, self.estimates = reference, []

    def __enter__(self):
        self.original = self.module.hessian_vector_product
        self.module.hessian_vector_product = self
        return self

    def __exit__(self, *exc):
        self.module.hessian_vector_product = self.original

    def __call__(self, grads, params, v):
        hv = self.original(grads, params, v)
        self.estimates.append(sum(torch.dot(h.flatten(), u.flatten()) for h, u in zip(hv, v)).item())
        if self.reference is not None and relative_error(self.estimates[-1], self.reference) <= TARGET:
            raise TargetReached
        return hv


def pyhessian_top(model, loss_fn, x, y, tol: float, seed: int = 0) -> float:
    from pyhessian import hessian

    with torch.random.fork_rng(), warnings.catch_warnings():
        torch.manual_seed(seed)  # PyHessian draws its start vector from the global RNG
        warnings.simplefilter("ignore")  # backward(create_graph=True) warns about the reference cycle it makes
        try:
            h = hessian(model, loss_fn, data=(x, y), cuda=x.is_cuda)
            return h.eigenvalues(maxIter=PYHESSIAN_MAX_ITER, tol=tol, top_n=1)[0][0]
        finally:
            model.zero_grad(set_to_none=True)  # .grad holds the double-backward graph: free it


def pyhessian_counted(model, loss_fn, x, y, tol: float) -> tuple[float, int]:
    with PyHessianProducts() as products:
        value = pyhessian_top(model, loss_fn, x, y, tol)
    return value, len(products.estimates)


def lanczos_top(model, loss_fn, x, y, tol: float | None, seed: int = 0) -> tuple[float, int]:
    stats = SpectraStats()
    value = top_hessian_eigenvalues(model, loss_fn, x, y, tol=tol, seed=seed, stats=stats).item()
    return value, stats.hvps


class Recorder(Operator):
    """The Hessian operator, remembering every (q, Hq), so that Lanczos' estimate after each product, the top
    eigenvalue of H projected on the (orthonormal) vectors seen so far, can be recomputed afterwards."""

    def __init__(self, op: Operator):
        super().__init__(op.matvec, op.dim, op.dtype, op.device, op.stats, op.guess)
        self.inputs, self.outputs = [], []

    def __call__(self, v):
        hv = super().__call__(v)
        self.inputs.append(v.clone())
        self.outputs.append(hv)
        return hv

    def estimates(self) -> list[float]:
        q, hq = torch.stack(self.inputs).double(), torch.stack(self.outputs).double()
        projected = q @ hq.T
        projected = (projected + projected.T) / 2
        return [torch.linalg.eigvalsh(projected[:m, :m])[-1].item() for m in range(1, len(q) + 1)]


def lanczos_products_to_target(model, loss_fn, x, y, reference: float, seed: int) -> int | None:
    with curvature(model, x, loss_fn, y) as curv:
        recorder = Recorder(curv.hessian())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tol=0 runs to max_iter on purpose
            top_eigenpairs(recorder, 1, "lanczos", 0.0, LANCZOS_PROBE_ITER, seed=seed)
    errors = (relative_error(e, reference) for e in recorder.estimates())
    return next((i + 1 for i, e in enumerate(errors) if e <= TARGET), None)


def pyhessian_products_to_target(model, loss_fn, x, y, reference: float, seed: int) -> int | None:
    with PyHessianProducts(reference) as products:
        try:
            pyhessian_top(model, loss_fn, x, y, tol=0.0, seed=seed)  # tol=0: only the target stops it
        except TargetReached:
            return len(products.estimates)
    return None


def reference_eigenpairs(model, loss_fn, x, y) -> tuple[list[float], torch.Tensor]:
    """The top two eigenvalues in float64, converged far beyond TARGET, and the top eigenvector."""
    result = top_hessian_eigenvalues(copy.deepcopy(model).double(), loss_fn, x.double(), y, k=2, tol=1e-10,
                                     max_iter=300, return_vectors=True)
    return result.values.tolist(), result.vectors[0]


def guess_cosines(model, loss_fn, x, y, top_vector) -> str:
    """|cos| of the top eigenvector with the cold start's guess (the mean mode) and with the gradient."""
    with curvature(model, x, loss_fn, y) as curv:
        guesses = {"mean mode (the guess)": curv.mean_mode(), "gradient": curv.gradient()}
    top_vector = top_vector.to(x.device, torch.float32)
    return ", ".join(f"{name} {(torch.dot(g, top_vector) / g.norm()).abs().item():.2f}"
                     for name, g in guesses.items())


def cheapest_within_target(rows: dict) -> tuple | None:
    """The first row (loosest tolerance) whose error is within TARGET."""
    return next((key for key, (_, error) in rows.items() if error <= TARGET), None)


def solver_costs(state, model, loss_fn, x, y, repeats, device, pyhessian, lr=None) -> dict:
    """Prints the sweep table of one model state (with η·λ1 when it was trained by SGD at ``lr``);
    returns {method: (HVPs, seconds)} at equal accuracy."""
    (top, second), top_vector = reference_eigenpairs(model, loss_fn, x, y)
    runs = {(OURS, f"residual ≤ {sci(tol)}·λ" if tol else "default: residual ≤ √eps·λ"):
            (lanczos_top, tol) for tol in LANCZOS_TOLS}
    if pyhessian:
        runs.update({(PYHESSIAN, f"Δλ/λ < {sci(tol)}" + (" (default)" if tol == 1e-3 else "")):
                     (pyhessian_counted, tol) for tol in PYHESSIAN_TOLS})
    rows = {}
    for key, (solve, tol) in runs.items():
        value, hvps = solve(model, loss_fn, x, y, tol)
        rows[key] = (hvps, relative_error(value, top))
    times = min_seconds({key: partial(solve, model, loss_fn, x, y, tol) for key, (solve, tol) in runs.items()},
                        repeats, device)
    print(f"Top Hessian eigenvalue, ResMLP w{WIDTH} d{DEPTH} SP, {BATCH} mnist1d examples, {state}: "
          f"λ1 = {top:.5g}" + (f", η·λ1 = {lr * top:.2f}" if lr else "")
          + f", λ2/λ1 = {second / top:.3f} (float64 reference); |cos| with the top eigenvector: "
          + guess_cosines(model, loss_fn, x, y, top_vector) + "\n")
    print("| method | stopping rule | HVPs | ms | relative error |")
    print("| --- | --- | ---: | ---: | ---: |")
    for (method, rule), (hvps, error) in rows.items():
        print(f"| {method} | {rule} | {hvps} | {1e3 * times[method, rule]:.0f} | {error:.1e} |")
    at_target = {}
    for method in dict.fromkeys(m for m, _ in rows):
        key = cheapest_within_target({k: v for k, v in rows.items() if k[0] == method})
        if key is not None:
            at_target[method] = (rows[key][0], times[key])
    print(f"\nAt ≤ {TARGET:g} relative error (the loosest tolerance above reaching it): "
          + "; ".join(f"{m}: {h} HVPs, {1e3 * s:.0f} ms" for m, (h, s) in at_target.items()) + ".")
    stopping_rule_free(model, loss_fn, x, y, top, pyhessian)
    return at_target


def stopping_rule_free(model, loss_fn, x, y, reference, pyhessian):
    """Products after which each method's estimate is first within TARGET, over several start vectors."""
    counters = {"Lanczos": lanczos_products_to_target}
    if pyhessian:
        counters["PyHessian"] = pyhessian_products_to_target
    counts = {name: [count(model, loss_fn, x, y, reference, seed) for seed in SEEDS]
              for name, count in counters.items()}
    print(f"Stopping rules aside, HVPs until the estimate is first within {TARGET:g}, start seeds "
          f"{SEEDS.start}–{SEEDS.stop - 1}: " + "; ".join(f"{n} {c}" for n, c in counts.items()) + ".\n")


def trained(model, data, optimizer_name, lr, steps):
    """A copy of ``model`` after ``steps`` steps on random minibatches of TRAIN_BATCH."""
    model = copy.deepcopy(model)
    optimizer = build_optimizer(model, optimizer_name, lr)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        train_step(model, optimizer, data.loss, *data.batch(gen, TRAIN_BATCH))
    optimizer.zero_grad(set_to_none=True)
    return model


# 3. Measuring during training


def training_seconds(data, width, depth, device, tracker, measure=None) -> tuple[float, list]:
    """Seconds of the trainer's loop (SGD, logging to MLflow), with a SpectraHook when ``measure`` =
    (batch, settings) is given; returns them with the hook's measurement records."""
    model = resmlp(data, width, depth, device)
    optimizer = build_optimizer(model, "sgd", SGD_LR)
    hooks = [] if measure is None else [SpectraHook(model, data.loss, *measure, optimizer, "sgd", SGD_LR)]
    state = TrainState()
    start = time.perf_counter()
    train_loop(model, optimizer, data, torch.Generator().manual_seed(0), state, tracker,
               LoopSettings(SGD_STEPS, SGD_LR, TRAIN_BATCH, progress=False), (), checkpoint=lambda: None, hooks=hooks)
    tracker.flush()
    seconds = time.perf_counter() - start
    if state.diverged_at is not None:
        raise RuntimeError(f"training diverged at step {state.diverged_at}: the timing would be of a shorter run")
    return seconds, hooks[0].monitor.records if hooks else []


def measurement_overhead(data, width, depth, repeats, device, tracker) -> dict:
    """Prints one table row per measurement batch and tolerance; returns {(batch size, tol): overhead as a
    fraction of the training time}."""
    variants = {(size, tol): (fixed_batch(data, size), SpectraSettings(every=EVERY, tol=tol))
                for size in MEASURE_BATCHES for tol in MEASURE_TOLS}
    seconds = dict.fromkeys([None, *variants], float("inf"))
    records = {}
    for _ in range(repeats):  # alternating, so load on the machine hits all runs alike
        for key in seconds:
            elapsed, records[key] = training_seconds(data, width, depth, device, tracker, variants.get(key))
            seconds[key] = min(seconds[key], elapsed)
    overheads = {}
    for (size, tol) in variants:
        overheads[size, tol] = seconds[size, tol] / seconds[None] - 1
        hvps = [int(r["spectra/hvps"]) for r in records[size, tol]]
        print(f"| ResMLP w{width} d{depth} | {size} | {sci(tol) if tol else 'default'} | {seconds[None]:.2f} "
              f"| {seconds[size, tol]:.2f} | {100 * overheads[size, tol]:.0f}% | {len(hvps)} "
              f"| {hvps[0]} / {sum(hvps[1:]) / len(hvps[1:]):.1f} |")
    return overheads


# 4. The Lanczos tolerance along training


def sc_width_checkpoints(data, param, width, lr, device):
    """sc_width_resmlp's ResMLP (depth 2, base width 32, zero readout) trained by SGD; yields (step, model, D) every
    TRAJECTORY_EVERY steps, D being the rescaled sharpness's per-tensor scaling (LR / η0)."""
    torch.manual_seed(0)
    model = ResMLP(data.in_dim, data.out_dim, width, 2, base_width=32, base_depth=2,
                   param=Parametrization(param, readout_zero_init=True)).to(device)
    optimizer = build_optimizer(model, "sgd", lr)
    gen = torch.Generator().manual_seed(1)
    for step in range(TRAJECTORY_STEPS + 1):
        if step % TRAJECTORY_EVERY == 0:
            yield step, model, lr_multipliers(optimizer)
        if step < TRAJECTORY_STEPS:
            train_step(model, optimizer, data.loss, *data.batch(gen, TRAJECTORY_BATCH))


def tolerance_row(label: str, tol, by_mode: dict) -> str:
    """One table row: per mode, mean HVPs per measurement, the largest error and how many exceed TARGET."""
    cells = []
    for mode in ("warm", "cold"):
        hvps, errors = by_mode[mode]
        cells += [f"{sum(hvps) / len(hvps):.1f}", f"{max(errors):.1e}",
                  f"{sum(e > TARGET for e in errors)} of {len(errors)}"]
    return f"| {label} | {sci(tol) if tol else 'default'} | {' | '.join(cells)} |"


def tolerance_along_training(data, device) -> None:
    """Prints one row per trajectory and tolerance, then one per tolerance over all trajectories."""
    x, y = fixed_batch(data, 256)
    totals = {tol: {mode: ([], []) for mode in ("warm", "cold")} for tol in TRAJECTORY_TOLS}
    for param, width, lr in TRAJECTORIES:
        warm = {tol: None for tol in TRAJECTORY_TOLS}  # one SpectraMonitor per tol, created at step 0
        results = {tol: {mode: ([], []) for mode in ("warm", "cold")} for tol in TRAJECTORY_TOLS}
        for i, (step, model, scaling) in enumerate(sc_width_checkpoints(data, param, width, lr, device)):
            exact = SpectraMonitor(copy.deepcopy(model).double(), data.loss, x.double(), y,
                                   SpectraSettings(tol=1e-10, max_iter=300), scaling=scaling).measure(step)
            # With D = 1 (NTP, or µP at its base width) the rescaled sharpness is the raw eigenvalue again.
            keys = SHARPNESS_KEYS if any(d != 1 for d in scaling.values()) else SHARPNESS_KEYS[:1]
            for tol in TRAJECTORY_TOLS:
                if warm[tol] is None:
                    warm[tol] = SpectraMonitor(model, data.loss, x, y, SpectraSettings(tol=tol), scaling=scaling)
                fresh = SpectraMonitor(model, data.loss, x, y, SpectraSettings(tol=tol, seed=i), scaling=scaling)
                for mode, monitor in (("warm", warm[tol]), ("cold", fresh)):
                    measured = monitor.measure(step)
                    for by_mode in (results[tol][mode], totals[tol][mode]):
                        by_mode[0].append(measured["spectra/hvps"])
                        by_mode[1].extend(relative_error(measured[k], exact[k]) for k in keys)
        for tol in TRAJECTORY_TOLS:
            print(tolerance_row(f"{param} w{width} η0={lr:g}", tol, results[tol]))
    for tol in TRAJECTORY_TOLS:
        print(tolerance_row("all four", tol, totals[tol]))


def print_targets(hvp_cost, at_target, overheads):
    print("\n| target | measured | met |")
    print("| --- | --- | --- |")
    print(f"| one HVP ≤ 3× one gradient (w{WIDTH} d{DEPTH}, batch {BATCH}) | {hvp_cost:.2f}× | "
          f"{'yes' if hvp_cost <= 3 else 'no'} |")
    for state, costs in at_target.items():
        if OURS not in costs or PYHESSIAN not in costs:
            continue  # PyHessian missing, or a method that never reached TARGET (its table shows it)
        (ours_hvps, ours_s), (their_hvps, their_s) = costs[OURS], costs[PYHESSIAN]
        fewer, faster = their_hvps / ours_hvps, their_s / ours_s
        print(f"| ≥ 3× fewer HVPs than PyHessian at {TARGET:g} error, {state} | {fewer:.1f}× | "
              f"{'yes' if fewer >= 3 else 'no'} |")
        print(f"| ≥ 2× less time than PyHessian at {TARGET:g} error, {state} | {faster:.1f}× | "
              f"{'yes' if faster >= 2 else 'no'} |")
    for (width, depth, size, tol), overhead in overheads.items():
        print(f"| measuring every {EVERY} steps ≤ 25% of training, w{width} d{depth}, batch {size}, "
              f"tol {sci(tol) if tol else 'default'} | {100 * overhead:.0f}% | {'yes' if overhead <= 0.25 else 'no'} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    pyhessian = import_pyhessian()
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, float32, min of {args.repeats}\n")
    if pyhessian is None:
        print("PyHessian is not installed (pip install pyhessian==0.1): its rows are skipped.\n")

    data = mnist1d(device)
    model = resmlp(data, WIDTH, DEPTH, device)
    x, y = fixed_batch(data, BATCH)
    print("| model | params | gradient ms | HVP, retained graph (ours) | HVP, graph rebuilt | HVP, torch.func "
          "jvp∘grad | torch.func / ours | torch.func vs ours (rel. diff) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    hvp_cost = hvp_costs(f"ResMLP w{WIDTH} d{DEPTH}, batch {BATCH}", model, data.loss, x, y, args.repeats, device)
    hvp_costs("Transformer w128 d2, 32×64 tokens", *transformer_problem(device), args.repeats, device)
    print()

    states = {"at initialisation": (model, None),
              f"after {ADAM_STEPS} Adam steps (lr {ADAM_LR:g}, batch {TRAIN_BATCH})":
                  (trained(model, data, "adam", ADAM_LR, ADAM_STEPS), None)}
    states.update({f"after {steps} SGD steps (lr {lr:g}, batch {TRAIN_BATCH})":
                   (trained(model, data, "sgd", lr, steps), lr) for lr, steps in SGD_STATES})
    at_target = {state: solver_costs(state, m, data.loss, x, y, args.repeats, device, pyhessian, lr)
                 for state, (m, lr) in states.items()}

    print(f"Measuring the top Hessian eigenvalue every {EVERY} steps during {SGD_STEPS} SGD steps (SP, lr {SGD_LR:g}, "
          f"batch {TRAIN_BATCH}; Lanczos, warm-started)\n")
    print("| model | measurement batch | Lanczos tol | s without | s with | overhead | measurements "
          "| HVPs: first / later mean |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        tracker = RunTracker(f"sqlite:///{tmp}/bench.db", "bench")
        overheads = {(w, d, *key): overhead for w, d in ((128, 2), (512, 4))
                     for key, overhead in measurement_overhead(data, w, d, args.repeats, device, tracker).items()}
        tracker.finish()

    print(f"\nThe Lanczos tolerance along sc_width_resmlp's SGD trajectories: {TRAJECTORY_STEPS} steps at batch "
          f"{TRAJECTORY_BATCH}, raw and rescaled top eigenvalue every {TRAJECTORY_EVERY} steps on 256 examples, "
          f"against float64 (tol 1e-10); warm: started from the previous measurement's eigenvector, as in "
          f"training; cold: from a fresh random vector tilted toward the mean mode\n")
    print("| trajectory | Lanczos tol | warm: HVPs per measurement | warm: max rel. error | warm: errors > "
          f"{TARGET:g} | cold: HVPs per measurement | cold: max rel. error | cold: errors > {TARGET:g} |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    tolerance_along_training(data, device)
    print_targets(hvp_cost, at_target, overheads)


if __name__ == "__main__":
    main()
