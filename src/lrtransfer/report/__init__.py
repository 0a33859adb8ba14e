"""Experiment reports: figures, claims and the static HTML pages that show them."""
