"""Models as plain ``torch.nn`` modules (no Hydra inside)."""

from .base import ScalableModel
from .layers import Residual, ScaledEmbedding, ScaledLayerNorm, ScaledLinear, SpecModule
from .linear import LinearNet
from .resmlp import ResMLP
from .transformer import NORMS, Transformer

__all__ = ["ScalableModel", "ResMLP", "Transformer", "LinearNet", "NORMS", "Residual", "ScaledEmbedding",
           "ScaledLayerNorm", "ScaledLinear", "SpecModule"]
