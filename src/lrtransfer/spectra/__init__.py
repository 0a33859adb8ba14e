"""Loss-landscape spectra of any ``nn.Module``: Hessian, Gauss-Newton, NTK and Adam-preconditioned eigenvalues.

Framework-free (plain PyTorch).  Every function evaluates the model in eval mode at its current weights on
the given fixed tensors and leaves its mode, weights, ``.grad`` and the global RNG untouched.  Curvature
products use double backward on one retained autograd graph; eigenvalues come from Lanczos with full
re-orthogonalisation (or PyHessian-style power iteration).  See the README.
"""

from .adam import adam_preconditioner, preconditioned_sharpness
from .curvature import Curvature, curvature, measurement_mode
from .eigensolvers import EigenResult, top_eigenpairs
from .gauss_newton import top_ggn_eigenvalues
from .hessian import directional_sharpness, hessian_trace, top_hessian_eigenvalues
from .monitor import SpectraMonitor, SpectraSettings, lr_multipliers
from .ntk import top_ntk_eigenvalues
from .operator import NonFiniteCurvature, Operator, SpectraStats
from .trace import estimate_trace

__all__ = [
    "top_hessian_eigenvalues", "hessian_trace", "directional_sharpness", "top_ggn_eigenvalues",
    "top_ntk_eigenvalues", "preconditioned_sharpness", "SpectraMonitor", "SpectraSettings", "lr_multipliers",
    "SpectraStats", "EigenResult", "NonFiniteCurvature",
    # building blocks
    "Curvature", "curvature", "measurement_mode", "Operator", "top_eigenpairs", "estimate_trace",
    "adam_preconditioner",
]
