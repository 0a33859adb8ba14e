"""`make reproduce`: run each experiment's sweep, then summarise LR transfer from MLflow.

Usage: python scripts/reproduce.py --scale small --launcher local --experiments mnist1d_width_lr
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from lrtransfer.config import register_configs
from lrtransfer.paths import CONF_DIR, PROJECT_DIR
from lrtransfer.tracking import child_runs, client_for
from lrtransfer.transfer import RunResult, best_lrs, format_table


def run_sweep(experiment: str, scale: str, launcher: str, sweep_dir: Path) -> int:
    cmd = [sys.executable, "-m", "lrtransfer.train", "-m", f"experiment={experiment}", f"scale={scale}",
           f"hydra.sweep.dir={sweep_dir}"]
    if launcher != "local":  # e.g. slurm = conf/hydra/launcher/slurm.yaml with the cluster profile
        cmd.append(f"hydra/launcher={launcher}")
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=PROJECT_DIR)


def sweep_results(uri: str, experiment_name: str, sweep_dir: Path) -> list[RunResult]:
    client = client_for(uri)
    exp = client.get_experiment_by_name(experiment_name)
    parents = client.search_runs([exp.experiment_id], filter_string=f"tags.sweep_dir = '{sweep_dir}'")
    if not parents:
        raise SystemExit(f"error: no sweep run with sweep_dir={sweep_dir} in experiment {experiment_name!r}")
    results = []
    for r in child_runs(client, parents[0].info.run_id):
        loss = r.data.metrics.get("final/train_loss")
        if r.info.status == "FINISHED" and loss is not None:
            results.append(RunResult(r.data.tags["param"], int(r.data.tags["width"]), float(r.data.tags["lr"]),
                                     loss, r.data.tags.get("diverged") == "true"))
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", default="small", choices=["smoke", "small", "paper"])
    ap.add_argument("--launcher", default="local", help="local (in-process), slurm (conf/hydra/launcher/slurm.yaml), submitit_local, ...")
    ap.add_argument("--experiments", default="mnist1d_width_lr", help="comma-separated experiment names")
    args = ap.parse_args()
    register_configs()  # resolvers used by the saved sweep config
    status = 0
    started = time.time()
    for experiment in args.experiments.split(","):
        if not (CONF_DIR / "experiment" / f"{experiment}.yaml").exists():
            print(f"error: experiment={experiment!r} has no file conf/experiment/{experiment}.yaml", file=sys.stderr)
            return 2
        sweep_dir = PROJECT_DIR / "outputs" / "multirun" / f"{experiment}-{args.scale}-{time.strftime('%Y%m%d-%H%M%S')}"
        status |= run_sweep(experiment, args.scale, args.launcher, sweep_dir)
        saved = OmegaConf.load(sweep_dir / "multirun.yaml")
        results = sweep_results(saved.tracking.uri, saved.tracking.experiment, sweep_dir)
        print(f"\n== {experiment} (scale={args.scale}): best base LR per parametrization and width")
        print(format_table(best_lrs(results)))
    print(f"\nreproduce finished in {time.time() - started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
