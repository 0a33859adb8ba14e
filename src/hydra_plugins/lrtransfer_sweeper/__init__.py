"""Hydra plugins of lrtransfer (Hydra finds plugins only in the ``hydra_plugins`` namespace)."""
