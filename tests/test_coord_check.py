"""µP coordinate checks: per-layer output changes are O(1) in width (µP) and depth (depth-µP)."""

import pytest
import torch
import torch.nn.functional as F

from lrtransfer.coord_check import coord_check, log_log_slope
from lrtransfer.models import ResConvNet, ResMLP, SimpleConvNet
from lrtransfer.parametrization import Parametrization

WIDTHS = [64, 128, 256, 512, 1024]
DEPTHS = [2, 4, 8, 16, 32]
OPTIMIZERS = [("sgd", 0.05), ("adam", 1e-3)]


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 40, generator=g), torch.randint(0, 10, (64,), generator=g)


# {model: (width -> model of a parametrization, its hidden layers)}; the convnet reads the 40 inputs as a signal
WIDTH_MODELS = {
    "resmlp": (lambda p: lambda w: ResMLP(40, 10, w, 2, base_width=64, param=p),
               ("input", "blocks.0.branch.1", "blocks.1.branch.1")),
    "simple_convnet": (lambda p: lambda w: SimpleConvNet((40,), 10, w, base_width=64, bias=True, param=p),
                       ("conv1", "conv2")),
}


def width_slopes(batch, model, param, optimizer, lr):
    # Zero readout init, as microsoft/mup recommends for coordinate checks: it removes the
    # (1/N)·W0·Δh term that decays with width and would tilt finite-width slopes.
    p = Parametrization(param, readout_zero_init=True)
    res = coord_check(WIDTH_MODELS[model][0](p), WIDTHS, *batch, F.cross_entropy, optimizer=optimizer, lr=lr, steps=3)
    return {layer: log_log_slope(v) for layer, v in res.items()}


@pytest.mark.parametrize("model", sorted(WIDTH_MODELS))
@pytest.mark.parametrize("optimizer,lr", OPTIMIZERS)
def test_mup_width_coord_check_is_flat(batch, model, optimizer, lr):
    slopes = width_slopes(batch, model, "mup", optimizer, lr)
    assert {*WIDTH_MODELS[model][1], "features", "logits"} <= set(slopes)
    for layer, slope in slopes.items():
        assert abs(slope) <= 0.1, f"µP/{optimizer}: {layer} changes like width^{slope:.3f}"


@pytest.mark.parametrize("model", sorted(WIDTH_MODELS))
@pytest.mark.parametrize("optimizer,lr", OPTIMIZERS)
def test_sp_width_coord_check_grows(batch, model, optimizer, lr):
    slopes = width_slopes(batch, model, "sp", optimizer, lr)
    for layer in (*WIDTH_MODELS[model][1][1:], "logits"):  # the input layer's fan-in does not grow
        assert slopes[layer] >= 0.3, f"SP/{optimizer}: {layer} slope {slopes[layer]:.3f} should grow with width"


def depth_changes(batch, param, optimizer, lr, branch_scale="auto"):
    p = Parametrization(param)
    return coord_check(lambda L: ResMLP(40, 10, 128, L, base_depth=2, param=p, branch_scale=branch_scale),
                       DEPTHS, *batch, F.cross_entropy, optimizer=optimizer, lr=lr, steps=3, seeds=range(6))


@pytest.mark.parametrize("optimizer,lr", OPTIMIZERS)
def test_depth_mup_coord_check_is_flat(batch, optimizer, lr):
    res = depth_changes(batch, "depth_mup", optimizer, lr)
    for layer in ("input", "logits"):
        assert abs(log_log_slope(res[layer])) <= 0.1, f"depth-µP/{optimizer}: {layer} {res[layer]}"
    # The last residual stream approaches its large-depth limit from the base depth L=2, so its
    # finite-depth slope is small but not zero; SP's grows exponentially instead (below).
    assert abs(log_log_slope(res["features"])) <= 0.2, res["features"]


def test_sp_without_branch_scaling_grows_with_depth(batch):
    res = depth_changes(batch, "sp", "adam", 1e-3, branch_scale="none")
    assert log_log_slope(res["logits"]) >= 0.5, res["logits"]
    assert log_log_slope(res["features"]) >= 1.0, res["features"]


def conv_depth_changes(batch, param, optimizer, lr, branch_scale="auto"):
    # Base depth 3 is one block per stage: the changes settle from about 12 blocks on (slopes 0.2 from 3).
    p = Parametrization(param)
    return coord_check(lambda L: ResConvNet((40,), 10, 32, L, base_depth=3, bias=True, param=p,
                                            branch_scale=branch_scale),
                       (12, 24, 48, 96), *batch, F.cross_entropy, optimizer=optimizer, lr=lr, steps=3, seeds=range(6))


@pytest.mark.parametrize("optimizer,lr", OPTIMIZERS)
def test_depth_mup_convnet_coord_check_is_flat(batch, optimizer, lr):
    res = conv_depth_changes(batch, "depth_mup", optimizer, lr)
    for layer in ("stem", "transitions.0", "transitions.1", "features", "logits"):  # the residual stream
        assert abs(log_log_slope(res[layer])) <= 0.1, f"depth-µP/{optimizer}: {layer} {res[layer]}"


def test_sp_convnet_without_branch_scaling_grows_with_depth(batch):
    res = conv_depth_changes(batch, "sp", "adam", 1e-3, branch_scale="none")
    assert log_log_slope(res["features"]) >= 1.0, res["features"]
