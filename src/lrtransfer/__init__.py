"""lrtransfer: learning-rate transfer across model scale (Super Consistency, Function-Space LRs)."""

__version__ = "0.1.0"
