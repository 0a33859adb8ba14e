"""Per-tensor parameter groups and the LR schedule."""

import pytest
import torch

from lrtransfer.models import ResMLP
from lrtransfer.optim import build_optimizer, learning_rates, schedule_factor, set_learning_rates


def test_groups_carry_parametrization_multipliers():
    model = ResMLP(10, 3, 128, 2, base_width=32, param="mup")
    specs = model.param_specs()
    for name, kind in (("sgd", "sgd"), ("adam", "adam"), ("adamw", "adam")):
        opt = build_optimizer(model, name, 0.1)
        assert [g["name"] for g in opt.param_groups] == [n for n, _ in model.named_parameters()]
        for g in opt.param_groups:
            assert len(g["params"]) == 1
            assert g["lr"] == pytest.approx(0.1 * specs[g["name"]].lr_mult(kind))
    lrs = learning_rates(build_optimizer(model, "adam", 1.0))
    assert lrs["blocks.0.branch.1.weight"] == pytest.approx(0.25) and lrs["input.weight"] == 1.0


def test_set_learning_rates_composes_by_multiplication():
    model = ResMLP(10, 3, 64, 1, base_width=32, param="mup")
    opt = build_optimizer(model, "sgd", 0.1, momentum=0.9)
    opt.param_groups[0]["lr_mult"] = 7.0  # e.g. set by FLeRM
    set_learning_rates(opt, 0.1, 0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.35)


def test_schedule():
    assert schedule_factor(0, 100, 10) == pytest.approx(0.1)
    assert schedule_factor(9, 100, 10) == 1.0
    assert schedule_factor(50, 100, 0, "constant") == 1.0
    assert schedule_factor(10, 110, 10, "cosine") == 1.0
    assert schedule_factor(60, 110, 10, "cosine") == pytest.approx(0.5)
    assert schedule_factor(110, 110, 10, "cosine") == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="train.schedule='linear'"):
        schedule_factor(0, 10, 0, "linear")


def test_adam_eps_zero_is_scale_invariant():
    torch.manual_seed(0)
    a = ResMLP(10, 3, 16, 1)
    b = ResMLP(10, 3, 16, 1)
    b.load_state_dict(a.state_dict())
    x, y = torch.randn(8, 10), torch.randint(0, 3, (8,))
    for model, scale in ((a, 1.0), (b, 1000.0)):
        opt = build_optimizer(model, "adam", 1e-2, eps=0.0)
        (scale * torch.nn.functional.cross_entropy(model(x), y)).backward()
        opt.step()
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(a.parameters(), b.parameters()))


def _train(optimizer_for, steps=20):
    torch.manual_seed(0)
    model = ResMLP(12, 5, 24, 2).double()
    optimizer = optimizer_for(model)
    x, y = torch.randn(32, 12, dtype=torch.float64), torch.randint(0, 5, (32,))
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()]), optimizer


@pytest.mark.parametrize("name, weight_decay", [("adam", 0.0), ("adam", 0.01), ("adamw", 0.01)])
def test_one_pass_adam_is_torchs_adam_with_per_tensor_lrs(name, weight_decay):
    """One multi-tensor pass over all groups: bit for bit torch's per-group step, same state."""
    def lrs(n):
        return [1e-3 * (1 + i % 3) for i in range(n)]

    def ours(model):
        optimizer = build_optimizer(model, name, 1e-3, weight_decay=weight_decay)
        for g, lr in zip(optimizer.param_groups, lrs(len(optimizer.param_groups))):
            g["lr"] = lr
        return optimizer

    def torchs(model):
        groups = build_optimizer(model, name, 1e-3).param_groups
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls([{"params": g["params"], "lr": lr} for g, lr in zip(groups, lrs(len(groups)))],
                   weight_decay=weight_decay)

    (a, opt_a), (b, opt_b) = _train(ours), _train(torchs)
    assert torch.equal(a, b)
    state_a, state_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert all(torch.equal(state_a[i][k], state_b[i][k]) for i in state_b for k in ("step", "exp_avg", "exp_avg_sq"))


def test_one_pass_adam_falls_back_to_torch_for_what_it_does_not_cover():
    def amsgrad(model):
        groups = build_optimizer(model, "adam", 1e-3).param_groups
        return torch.optim.Adam([{"params": g["params"], "lr": g["lr"]} for g in groups], amsgrad=True)

    def ours_amsgrad(model):
        optimizer = build_optimizer(model, "adam", 1e-3)
        for g in optimizer.param_groups:
            g["amsgrad"] = True
        return optimizer

    assert torch.equal(_train(ours_amsgrad)[0], _train(amsgrad)[0])
