"""Function-space learning rates (Milsom, Anson & Aitchison 2025) and FLeRM, framework-free.

- :func:`exact_fslr`: ‖J_ℓ ΔW_ℓ‖_RMS by forward-mode differentiation (the reference).
- :func:`estimate_fslr`, :func:`sample_statistics`, :func:`fslr_from_statistics`: the Monte-Carlo
  estimate, one forward and one backward pass for all tensors per draw.
- :class:`FunctionSpaceLR`: records Δ_ℓF(η=1) during training, or sets per-tensor LRs (FLeRM).
- Base records: :func:`new_record`, :func:`append_estimate`, :func:`save_record`, :func:`load_record`,
  :func:`average_records`, and :func:`map_base_record` onto a wider or deeper model.
"""

from .ema import StatisticsEMA
from .estimator import METHODS, estimate_fslr, fslr_from_statistics, sample_statistics
from .exact import exact_fslr
from .function_space_lr import MODES, FunctionSpaceLR
from .mapping import map_base_record
from .outputs import default_output_fn, log_probabilities
from .records import (BaseRecordError, append_estimate, average_records, check_record, load_record, new_record,
                      save_record)

__all__ = ["exact_fslr", "estimate_fslr", "sample_statistics", "fslr_from_statistics", "METHODS", "MODES",
           "StatisticsEMA", "FunctionSpaceLR", "map_base_record", "default_output_fn", "log_probabilities",
           "BaseRecordError", "new_record", "append_estimate", "check_record", "save_record", "load_record",
           "average_records"]
