"""``hydra/sweeper=prechecked``: Hydra's basic sweeper without its per-batch validation.

The basic sweeper composes every job of a batch to validate it, and the launcher then composes each
job again: about 0.2 s a job twice over.  ``lrtransfer.reproduce`` validates every job's configuration
while it plans (``experiment_plan.stage_config_hashes``), before any sweep starts, so it launches its
stages with this sweeper and pays for one composition per job.  A job whose overrides do not compose still fails, in
the launcher, and ``reproduce`` records that stage as failed and goes on.
"""

from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore


@dataclass
class PrecheckedSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.lrtransfer_sweeper.prechecked_sweeper.PrecheckedSweeper"


class PrecheckedSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch) -> None:
        """Already done by the caller before the sweep (see the module docstring)."""


ConfigStore.instance().store(group="hydra/sweeper", name="prechecked", node=PrecheckedSweeperConf,
                             provider="lrtransfer")
