"""Entry point: ``python -m lrtransfer.train [overrides]`` (one job) or ``... -m [sweep overrides]``.

Before Hydra starts any job, every configuration the command would run is composed and checked
(:mod:`lrtransfer.precheck`), so a typo or a bad value ends in one line, not in N failed jobs.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .config import register_configs, validate
from .errors import UserError, one_line
from .paths import CONF_DIR
from .precheck import precheck
from .preemption import Terminated, terminate_as_exit
from .sweep import close_open_sweeps
from .tracking import PARENT_RUN_ENV

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    import os

    from .trainer import record_rejected_job, run_training

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    parent_run_id = cfg.tracking.parent_run_id or os.environ.get(PARENT_RUN_ENV)
    try:
        try:
            validate(cfg)
        except UserError as exc:
            if multirun:  # a combination the precheck (one axis at a time) could not see: keep it on record
                record_rejected_job(cfg, f"error: {one_line(exc)}", parent_run_id)
            raise
        result = run_training(cfg, hc.runtime.output_dir, parent_run_id=parent_run_id,
                              hydra_config=OmegaConf.to_container(hc, resolve=False, enum_to_str=True))
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        if multirun:
            return None  # recorded as FAILED in MLflow; the sweep goes on
        sys.exit(2)
    except Exception as exc:
        if not multirun:
            raise
        print(f"error: job {hc.job.num} failed: {one_line(exc)}", file=sys.stderr)
        return None
    print(f"{result['status']}: final/train_loss={result['final/train_loss']:.4g} "
          f"final/eval_loss={result['final/eval_loss']:.4g} run_id={result['run_id']}")
    return result["final/train_loss"]


def main(argv: list[str] | None = None, checked: bool = False) -> None:
    """``argv``: the command line without the program name (default ``sys.argv[1:]``); ``checked``: the
    caller has already prechecked it (``lrtransfer.reproduce`` checks every stage before running any)."""
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]  # Hydra reads its command line from sys.argv
    if not checked:
        try:
            precheck(sys.argv[1:])
        except Exception as exc:  # any composition or validation failure is the user's input
            print(f"error: {one_line(exc)}", file=sys.stderr)
            sys.exit(2)
    try:
        with terminate_as_exit():  # also between jobs: the sweep's parent run is closed on the way out
            hydra_main()
    except (KeyboardInterrupt, Terminated):
        close_open_sweeps(stopped=True)
        raise
    finally:
        close_open_sweeps()


if __name__ == "__main__":
    main()
