"""Model structure: shapes, causality, norm placements, branch multipliers."""

import pytest
import torch
import torch.nn.functional as F

from lrtransfer.models import NORMS, LinearNet, ResConvNet, ResMLP, SimpleConvNet, Transformer
from lrtransfer.parametrization import Parametrization


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("qk_norm", [False, True])
def test_transformer_is_causal(norm, qk_norm):
    torch.manual_seed(0)
    t = Transformer(13, 10, 32, 2, head_dim=8, norm=norm, qk_norm=qk_norm, param="mup", base_width=16)
    idx = torch.randint(0, 13, (2, 10))
    out = t(idx)
    assert out.shape == (2, 10, 13)
    changed = idx.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 13
    assert torch.allclose(t(changed)[:, :6], out[:, :6], atol=1e-6)
    assert not torch.allclose(t(changed)[:, 6:], out[:, 6:])


@pytest.mark.parametrize("norm", ["pre", "post", "pre_post_mod"])
def test_parameter_free_layernorms_are_the_affine_ones_at_init(norm):
    """norm_affine=False drops every LayerNorm gain and bias (the FLeRM paper's Transformer) and nothing else:
    the same weights are drawn, and at init (gain 1, bias 0) the outputs are the same."""
    idx = torch.randint(0, 13, (2, 10))
    torch.manual_seed(0)
    affine = Transformer(13, 10, 32, 2, head_dim=8, norm=norm, param="mup", base_width=16)
    torch.manual_seed(0)
    free = Transformer(13, 10, 32, 2, head_dim=8, norm=norm, norm_affine=False, param="mup", base_width=16)
    names = dict(affine.named_parameters())
    norm_names = {n for n in names if "norm" in n}
    assert len(norm_names) == 2 * (2 * 2 + 1)  # gain and bias of 2 norms per block, and of the final norm
    assert set(dict(free.named_parameters())) == set(names) - norm_names
    assert set(free.param_specs()) == set(affine.param_specs()) - norm_names
    assert torch.equal(free(idx), affine(idx))
    with torch.no_grad():
        affine.final_norm.weight.mul_(2.0)
    assert not torch.allclose(free(idx), affine(idx))


@pytest.mark.parametrize("param", ["sp", "mup"])
def test_flerm_resmlp_init_is_the_papers_code(param):
    """init=flerm_resmlp: branch weights He-normal on top of the parametrization's (and the depth rule's) std,
    branch and readout biases U(±1/√fan_in), the readout weight U(±its std), the input layer unchanged; the
    abc model draws the same input layer and is untouched by the option."""
    kw = dict(base_width=64, base_depth=4, param=param, branch_scale="sqrt_depth_init")
    torch.manual_seed(0)
    abc = ResMLP(40, 10, 256, 16, **kw)
    torch.manual_seed(0)
    paper = ResMLP(40, 10, 256, 16, init="flerm_resmlp", **kw)
    assert torch.equal(paper.input.weight, abc.input.weight) and not paper.input.bias.any()
    n, m, r = 256, 16 / 4, 256 / 64
    for block in paper.blocks:
        w, b = block.branch[1].weight, block.branch[1].bias
        assert w.std().item() == pytest.approx((2 / n) ** 0.5 / m ** 0.5, rel=0.02)
        assert b.abs().max() <= n ** -0.5 and b.std().item() == pytest.approx((3 * n) ** -0.5, rel=0.3)
    bound = n ** -0.5 if param == "sp" else (n / r) ** -0.5  # µP: the base width's std, times a 1/r multiplier
    readout = paper.readout.weight
    assert readout.abs().max() <= bound and readout.abs().max() > 0.99 * bound
    assert readout.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.05)
    assert paper.readout.bias.abs().max() <= n ** -0.5 and paper.readout.bias.any()
    assert paper.param_specs() == abc.param_specs()
    zero = ResMLP(40, 10, 64, 4, init="flerm_resmlp", param=Parametrization("mup", readout_zero_init=True))
    assert not zero.readout.weight.any() and not zero.readout.bias.any()
    with pytest.raises(ValueError, match="init='he': choose one of abc, flerm_resmlp"):
        ResMLP(40, 10, 64, 4, init="he")


def test_transformer_heads_grow_with_width():
    t = Transformer(13, 10, 64, 1, head_dim=16)
    assert t.blocks[0].branch.heads == 4 and t.blocks[0].branch.head_dim == 16
    with pytest.raises(ValueError, match="model.width=60 is not divisible by model.head_dim=16"):
        Transformer(13, 10, 60, 1, head_dim=16)


def test_norm_placements_differ():
    idx = torch.randint(0, 13, (2, 10))
    outs = []
    for norm in NORMS:
        torch.manual_seed(0)
        outs.append(Transformer(13, 10, 32, 2, head_dim=8, norm=norm)(idx))
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert not torch.allclose(outs[i], outs[j])


def test_resmlp_branch_multiplier_and_layers_per_block():
    m = ResMLP(10, 3, 16, 8, layers_per_block=2, base_depth=2, param="depth_mup")
    assert len(m.blocks) == 8 and len(m.blocks[0].branch) == 4
    assert all(b.branch_multiplier == pytest.approx(0.5) for b in m.blocks)
    m.parametrize("sp", branch_scale="depth")
    assert all(b.branch_multiplier == pytest.approx(0.25) for b in m.blocks)


def test_branch_mult_multiplies_every_branch_at_every_depth():
    x = torch.randn(5, 10)
    models = {}
    for mult in (1.0, 3.0):
        torch.manual_seed(0)
        models[mult] = ResMLP(10, 3, 16, 8, base_depth=2, param="depth_mup", branch_mult=mult)
    assert all(b.branch_multiplier == pytest.approx(1.5) for b in models[3.0].blocks)  # 3 × (8/2)^-½
    plain, tripled = models[1.0], models[3.0]
    h_plain = h_tripled = plain.input(x)
    for b_plain, b_tripled in zip(plain.blocks, tripled.blocks):  # same weights: x + 3·m·f(x) block by block
        h_plain, h_tripled = b_plain(h_plain), h_tripled + 1.5 * b_tripled.branch(h_tripled)
    assert torch.allclose(tripled(x), tripled.readout(h_tripled), atol=1e-6)
    assert not torch.allclose(plain(x), tripled(x))
    with pytest.raises(ValueError, match="branch_mult=0: a residual branch multiplier must be positive"):
        ResMLP(10, 3, 16, 8, branch_mult=0)


def test_branch_init_scaling_is_the_multiplier_at_init_but_not_in_the_gradients():
    """sqrt_depth_init puts 1/√m on the branch weights' init instead of a forward multiplier: the same function,
    but an update of a branch weight moves it √m times more (what makes SP's best LR shrink with depth)."""
    x, m = torch.randn(5, 10), 4  # depth 8 from a base depth of 2
    models = {}
    for scale in ("sqrt_depth", "sqrt_depth_init"):
        torch.manual_seed(0)
        models[scale] = ResMLP(10, 3, 16, 8, base_depth=2, param="sp", branch_scale=scale)
    multiplied, initialised = models["sqrt_depth"], models["sqrt_depth_init"]
    assert all(b.branch_multiplier == 1.0 for b in initialised.blocks)
    assert torch.allclose(multiplied(x), initialised(x), atol=1e-6)
    assert torch.equal(multiplied.input.weight, initialised.input.weight)  # only branch weights are scaled
    assert torch.allclose(initialised.blocks[3].branch[1].weight, multiplied.blocks[3].branch[1].weight / m ** 0.5)
    grads = [torch.autograd.grad(model(x).square().sum(), model.blocks[3].branch[1].weight)[0]
             for model in (multiplied, initialised)]
    assert torch.allclose(grads[0], grads[1] / m ** 0.5, atol=1e-6)


def test_linear_net_is_linear():
    net = LinearNet(6, 2, 16, param="ntp")
    x, y = torch.randn(4, 6), torch.randn(4, 6)
    assert torch.allclose(net(x + 2 * y), net(x) + 2 * net(y), atol=1e-5)
    assert net.task == "regression"


def test_convnets_have_the_papers_feature_sizes():
    # Fig. 1's SimpleConvNet on 32×32 images ends in 1×1×width features, the depth ConvNet in 2×2×width
    assert SimpleConvNet((3, 32, 32), 10, 16).readout.weight.shape == (10, 16)
    res = ResConvNet((3, 32, 32), 10, 16, 6, layers_per_block=2)
    assert res.readout.weight.shape == (10, 4 * 16) and len(res.blocks) == 6
    assert res(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    signal = SimpleConvNet((40,), 10, 16)  # a flat batch is a one-channel 1-D signal
    assert signal.conv1.weight.shape == (16, 1, 3) and signal(torch.randn(2, 40)).shape == (2, 10)
    with pytest.raises(ValueError, match="must be a multiple of 3"):
        ResConvNet((3, 32, 32), 10, 16, 4)
    with pytest.raises(ValueError, match=r"inputs of shape \(3, 8, 8\) are too small for SimpleConvNet"):
        SimpleConvNet((3, 8, 8), 10, 16)


@pytest.mark.parametrize("stride", [1, 2, 4])
@pytest.mark.parametrize("bias", [False, True])
def test_1d_convolution_as_a_matmul_is_f_conv1d(stride, bias):
    """On CPU a 1-D ScaledConv runs as a matrix product over unfolded patches: the values, gradients and
    Hessian-vector products (double backward) of F.conv1d with the same padding, in float64."""
    from lrtransfer.models.layers import ScaledConv

    torch.manual_seed(0)
    conv = ScaledConv(3, 5, "hidden", stride=stride, spatial_dims=1, bias=bias).double()
    with torch.no_grad():
        conv.bias is None or conv.bias.normal_()
    x = torch.randn(4, 3, 13, dtype=torch.float64, requires_grad=True)
    params = [x, conv.weight] + ([conv.bias] if bias else [])

    def reference(x):
        return F.conv1d(x, conv.weight, conv.bias, stride=stride, padding=1)

    ours, ref = conv(x), reference(x)
    assert ours.shape == ref.shape and torch.allclose(ours, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    vs = [torch.randn_like(p) for p in params]
    for f in (conv, reference):
        grads = torch.autograd.grad((f(x) * g).sum() + (f(x) ** 2).sum(), params, create_graph=True)
        hvp = torch.autograd.grad(grads, params, vs)
        if f is conv:
            ours_grads, ours_hvp = grads, hvp
    for a, b in zip(ours_grads + ours_hvp, grads + hvp):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)


def test_convnet_blocks_run_in_stage_order():
    """blocks.0..L/3-1 form the first stage, and so on: FLeRM's depth mapping relies on this order."""
    torch.manual_seed(0)
    net = ResConvNet((1, 16, 16), 3, 4, 6, param="sp")
    x = torch.randn(2, 1, 16, 16)
    h = net.blocks[1](net.blocks[0](net.stem(x)))
    h = net.blocks[3](net.blocks[2](net.transitions[0](F.max_pool2d(h, 2))))
    h = net.blocks[5](net.blocks[4](net.transitions[1](F.max_pool2d(h, 2))))
    assert torch.allclose(net(x), net.readout(F.max_pool2d(F.relu(h), 2).flatten(1)))


@pytest.mark.parametrize("shape", [(3, 4, 10), (3, 4, 11), (2, 3, 8, 8), (2, 3, 7, 9), (2, 3, 3)])
def test_convnet_pooling_equals_max_pool(shape):
    """The reshape-and-max pooling of the convnets gives ``F.max_pool{1,2}d(x, 2)``'s values and gradients
    (odd sizes drop their last row or column, as max-pooling does)."""
    from lrtransfer.models.convnet import _pool
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    reference = (F.max_pool1d if x.dim() == 3 else F.max_pool2d)(x, 2)
    pooled = _pool(x)
    assert pooled.shape == reference.shape and torch.equal(pooled, reference)
    g = torch.randn_like(reference)
    assert torch.equal(torch.autograd.grad(pooled, x, g)[0], torch.autograd.grad(reference, x, g)[0])
