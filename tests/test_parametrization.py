"""The abc table, the µP base model, and metadata that survives copies."""

import copy
import io
import math
import pickle

import pytest
import torch

from lrtransfer.models import LinearNet, ResConvNet, ResMLP, SimpleConvNet, Transformer
from lrtransfer.optim import build_optimizer
from lrtransfer.parametrization import ParamSpec, Parametrization, ParametrizationError


def spec(role, fan_in=256, r=4.0, ell=1.0, in_block=False, wide=True):
    return ParamSpec(role, fan_in, 256, r, ell, wide, in_block)


def test_table_values():
    mup, sp, ntp = Parametrization("mup"), Parametrization("sp"), Parametrization("ntp")
    h = mup.spec(spec("hidden"))
    assert (h.init_std, h.multiplier, h.lr_mult_sgd, h.lr_mult_adam) == (1 / 16, 1.0, 1.0, 0.25)
    r = mup.spec(spec("readout"))
    assert r.multiplier == 0.25 and r.lr_mult_sgd == 4.0 and r.lr_mult_adam == 1.0
    assert math.isclose(r.init_std, 1 / math.sqrt(64))  # 1/sqrt(base fan-in): W_eff ~ 1/fan_in
    i = mup.spec(spec("input", fan_in=40))
    assert (i.lr_mult_sgd, i.lr_mult_adam) == (4.0, 1.0)
    assert mup.spec(spec("bias")).lr_mult_sgd == 4.0 and mup.spec(spec("bias", wide=False)).lr_mult_sgd == 1.0
    n = ntp.spec(spec("hidden"))
    assert (n.init_std, n.multiplier, n.lr_mult_sgd) == (1.0, 1 / 16, 1.0)
    s = sp.spec(spec("readout"))
    assert (s.init_std, s.multiplier, s.lr_mult_sgd, s.lr_mult_adam) == (1 / 16, 1.0, 1.0, 1.0)


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_depth_mup_lr_and_branch_rules(alpha):
    p = Parametrization("depth_mup", alpha)
    s = p.spec(spec("hidden", r=1.0, ell=8.0, in_block=True))
    assert math.isclose(s.lr_mult_sgd, 8.0 ** (2 * alpha - 1))
    assert math.isclose(s.lr_mult_adam, 8.0 ** (alpha - 1))
    outside = p.spec(spec("input", r=1.0, ell=8.0))
    assert outside.lr_mult_adam == 1.0 and outside.lr_mult_sgd == 1.0
    assert math.isclose(p.branch_multiplier(8.0), 8.0 ** -alpha)
    assert Parametrization("sp").branch_multiplier(8.0, "sqrt_depth") == 8.0 ** -0.5
    assert Parametrization("mup").branch_multiplier(8.0) == 1.0


def test_unknown_names_fail():
    with pytest.raises(ParametrizationError, match="unknown parametrization 'foo'"):
        Parametrization("foo")
    with pytest.raises(ParametrizationError, match="branch_scale 'half'"):
        Parametrization("sp").branch_multiplier(2.0, "half")


def _outputs_and_lrs(make, param, optimizer):
    torch.manual_seed(0)
    model = make(param)
    torch.manual_seed(1)
    x = model_input(model)
    lrs = [g["lr"] for g in build_optimizer(model, optimizer, 0.01).param_groups]
    return model(x), lrs, [p.detach().clone() for p in model.parameters()]


def model_input(model):
    if isinstance(model, Transformer):
        return torch.randint(0, 11, (2, 8))
    if isinstance(model, (SimpleConvNet, ResConvNet)):
        return torch.randn(5, *model.signal_shape)
    return torch.randn(5, model.input.weight.shape[1])


MAKERS = {
    "resmlp": lambda p: ResMLP(12, 3, 32, 3, base_width=32, base_depth=3, param=p),
    "transformer": lambda p: Transformer(11, 8, 32, 2, head_dim=8, base_width=32, base_depth=2, param=p),
    "linear": lambda p: LinearNet(12, 2, 32, base_width=32, param=p),
    "simple_convnet": lambda p: SimpleConvNet((3, 32, 32), 4, 8, base_width=8, bias=True, param=p),
    "convnet": lambda p: ResConvNet((24,), 3, 8, 6, layers_per_block=2, base_width=8, base_depth=6, bias=True,
                                    param=p),
}


@pytest.mark.parametrize("model", sorted(MAKERS))
@pytest.mark.parametrize("param", ["mup", "depth_mup"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mup_at_base_shape_is_exactly_sp(model, param, optimizer):
    out_sp, lrs_sp, w_sp = _outputs_and_lrs(MAKERS[model], "sp", optimizer)
    out_mup, lrs_mup, w_mup = _outputs_and_lrs(MAKERS[model], param, optimizer)
    assert torch.equal(out_sp, out_mup)
    assert lrs_sp == lrs_mup
    assert all(torch.equal(a, b) for a, b in zip(w_sp, w_mup))


def test_mup_differs_from_sp_away_from_base():
    sp = ResMLP(12, 3, 128, 2, base_width=32, param="sp").param_specs()
    mup = ResMLP(12, 3, 128, 2, base_width=32, param="mup").param_specs()
    assert sp["readout.weight"].multiplier == 1.0 and mup["readout.weight"].multiplier == 0.25


@pytest.mark.parametrize("model", sorted(MAKERS))
def test_metadata_survives_deepcopy_pickle_and_state_dict(model):
    m = MAKERS[model]("mup")
    m.parametrize("depth_mup" if model != "linear" else "mup")
    x = model_input(m)
    specs, out = m.param_specs(), m(x)
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert clone.param_specs() == specs and torch.equal(clone(x), out)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = MAKERS[model]("ntp")  # built differently: the state dict must restore everything
    fresh.load_state_dict(torch.load(buf, weights_only=False))
    assert fresh.param_specs() == specs
    assert torch.allclose(fresh(x), out)


def test_roles_are_reported():
    t = Transformer(11, 8, 32, 1, head_dim=8, qk_norm=True)
    roles = t.params_by_role()
    assert set(roles) == {"input", "hidden", "readout", "bias", "norm"}
    assert roles["input"] == ["tok.weight", "pos.weight"] and roles["readout"] == ["readout.weight"]
    assert "blocks.0.branch.q.weight" in roles["hidden"]
    assert "blocks.0.norm.weight" in roles["norm"]


def test_init_scale_multiplies_hidden_weights_only():
    torch.manual_seed(0)
    a = ResMLP(12, 3, 256, 2, init_scale=1.0)
    torch.manual_seed(0)
    b = ResMLP(12, 3, 256, 2, init_scale=4.0)
    assert torch.allclose(b.blocks[0].branch[1].weight, 4 * a.blocks[0].branch[1].weight)
    assert torch.equal(a.input.weight, b.input.weight) and torch.equal(a.readout.weight, b.readout.weight)
