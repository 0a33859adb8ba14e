"""Decoder-only Transformer with a fixed head dimension (heads grow with width)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..parametrization import Parametrization
from .base import ScalableModel
from .layers import Residual, ScaledEmbedding, ScaledLayerNorm, ScaledLinear

NORMS = ("pre", "post", "pre_post_mod", "none")


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention written out (not SDPA) so double backward and jvp work."""

    def __init__(self, width: int, head_dim: int, qk_norm: bool, bias: bool, **shape):
        super().__init__()
        self.heads, self.head_dim = width // head_dim, head_dim
        self.q, self.k, self.v, self.o = (
            ScaledLinear(width, width, "hidden", bias=bias, in_block=True, **shape) for _ in range(4))
        self.qk_norm = qk_norm
        self.scale = head_dim ** -0.5  # set by the parametrization through the model

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        if self.qk_norm:
            q, k = F.layer_norm(q, (self.head_dim,)), F.layer_norm(k, (self.head_dim,))
        logits = (q @ k.transpose(-2, -1)) * self.scale
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        att = logits.masked_fill(mask, float("-inf")).softmax(-1)
        return self.o((att @ v).transpose(1, 2).reshape(b, t, w))

    def get_extra_state(self):
        return {"scale": self.scale}

    def set_extra_state(self, state):
        self.scale = state["scale"]


class Transformer(ScalableModel):
    task = "language"

    def __init__(self, vocab_size: int, seq_len: int, width: int, depth: int, *, head_dim: int = 16,
                 norm: str = "pre", norm_affine: bool = True, qk_norm: bool = False, bias: bool = True,
                 base_width: int | None = None, base_depth: int | None = None, param: Parametrization | str = "sp",
                 branch_scale: str = "auto", init_scale: float = 1.0, branch_mult: float = 1.0):
        super().__init__(width, depth, base_width, base_depth)
        if norm not in NORMS:
            raise ValueError(f"model.norm={norm!r} is not one of {', '.join(NORMS)}")
        if width % head_dim:
            raise ValueError(f"model.width={width} is not divisible by model.head_dim={head_dim}")
        shape = dict(width_mult=self.width_mult, depth_mult=self.depth_mult)
        self.head_dim = head_dim
        self.tok = ScaledEmbedding(vocab_size, width, **shape)
        self.pos = ScaledEmbedding(seq_len, width, **shape)
        blocks = []
        for _ in range(depth):
            attn = CausalSelfAttention(width, head_dim, qk_norm, bias, **shape)
            mlp = nn.Sequential(ScaledLinear(width, 4 * width, "hidden", bias=bias, in_block=True, **shape),
                                nn.GELU(),
                                ScaledLinear(4 * width, width, "hidden", bias=bias, in_block=True, **shape))
            blocks += [Residual(attn, norm, width, affine=norm_affine, **shape),
                       Residual(mlp, norm, width, affine=norm_affine, **shape)]
        self.blocks = nn.Sequential(*blocks)
        self.final_norm = ScaledLayerNorm(width, affine=norm_affine, **shape) if norm != "none" else nn.Identity()
        self.readout = ScaledLinear(width, vocab_size, "readout", bias=bias, bias_wide=False, **shape)
        self.parametrize(param, branch_scale=branch_scale, init_scale=init_scale, branch_mult=branch_mult)

    def parametrize(self, param="sp", **kwargs):
        super().parametrize(param, **kwargs)
        for module in self.modules():
            if isinstance(module, CausalSelfAttention):
                module.scale = self.parametrization.attention_scale(self.head_dim, self.head_dim)
        return self

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        return self.readout(self.final_norm(self.blocks(x)))
