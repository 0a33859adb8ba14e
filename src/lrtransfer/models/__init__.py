"""Models as plain ``torch.nn`` modules (no Hydra inside)."""

from .base import ScalableModel
from .convnet import ResConvNet, SimpleConvNet
from .layers import Residual, ScaledConv, ScaledEmbedding, ScaledLayerNorm, ScaledLinear, SpecModule
from .linear import LinearNet
from .resmlp import ResMLP
from .transformer import NORMS, Transformer

__all__ = ["ScalableModel", "ResMLP", "Transformer", "LinearNet", "SimpleConvNet", "ResConvNet", "NORMS", "Residual",
           "ScaledConv", "ScaledEmbedding", "ScaledLayerNorm", "ScaledLinear", "SpecModule"]
