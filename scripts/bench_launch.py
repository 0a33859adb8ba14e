"""Launch overhead per job (basic vs parallel vs submitit_local vs Slurm), the training throughput of the
parallel launcher against the basic one on sc_width's jobs, and MLflow logging throughput over HTTP
(log_batch vs one call per point), all measured in this run. Needs a Slurm for the Slurm row
(scripts/slurm_up.sh); the row is skipped otherwise.  Usage: python scripts/bench_launch.py [--jobs 8]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lrtransfer import mlflow_server
from lrtransfer.tracking import RunTracker

LAUNCHERS = {
    "basic (in-process)": [],
    "parallel (joblib, one job per core)": ["hydra/launcher=parallel"],
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
    "slurm (submitit_slurm)": ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.mem_gb=1"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_available() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        socket.create_connection(("127.0.0.1", 6817), timeout=1).close()
        return True
    except OSError:
        return False


ONE_STEP = ["scale=smoke", "train.steps=1"]
# sc_width's µP job at width 128 and its best LR (800 SGD steps, the sharpness every 64 steps)
SC_WIDTH_JOB = ["experiment=sc_width", "scale=small", "param=mup", "model.width=128", "optim.lr=0.25"]


def sweep_seconds(extra: list[str], jobs: int, uri: str, tmp: Path, tag: str, job: list[str] = ONE_STEP) -> float:
    """Wall time of a sweep of ``jobs`` jobs (one per seed), from command start to exit."""
    seeds = ",".join(str(i) for i in range(jobs))
    cmd = [sys.executable, "-m", "lrtransfer.train", "-m", *extra, *job, "train.progress=false", f"seed={seeds}",
           f"tracking.uri={uri}", f"tracking.experiment=bench-{tag}", f"hydra.sweep.dir={tmp}/{tag}",
           f"data.cache_dir={tmp}/cache"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=tmp, check=True, capture_output=True, timeout=1800)
    return time.perf_counter() - start


def logging_rate(uri: str, points: int, batched: bool) -> float:
    tracker = RunTracker(uri, "bench-logging")
    start = time.perf_counter()
    for step in range(points):
        tracker.log_metric("x", step, step)
        if not batched:
            tracker.flush()  # one request per point
        elif (step + 1) % 1000 == 0:
            tracker.flush()
    tracker.finish()
    return points / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--points", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        url = mlflow_server.start(tmp / "server", port=free_port())
        try:
            sweep_seconds([], 1, url, tmp, "warmup")  # dataset cache and experiment exist afterwards
            print(f"| launcher | {args.jobs}-job sweep wall time (s) | per job (s) | vs basic |")
            print("|---|---|---|---|")
            base = None
            for name, extra in LAUNCHERS.items():
                if "slurm" in name and not slurm_available():
                    print(f"| {name} | skipped: no Slurm controller | | |")
                    continue
                secs = sweep_seconds(extra, args.jobs, url, tmp, name.split()[0])
                base = base or secs / args.jobs
                print(f"| {name} | {secs:.1f} | {secs / args.jobs:.2f} | {secs / args.jobs / base:.2f}x |")
            print(f"\n| {args.jobs} sc_width jobs (µP, width 128, 800 steps) | wall time (s) | jobs per minute | speed-up vs basic |")
            print("|---|---|---|---|")
            base = None
            for name in ("basic (in-process)", "parallel (joblib, one job per core)"):
                secs = sweep_seconds(LAUNCHERS[name], args.jobs, url, tmp, "train-" + name.split()[0], SC_WIDTH_JOB)
                base = base or secs
                print(f"| {name} | {secs:.1f} | {60 * args.jobs / secs:.1f} | {base / secs:.2f}x |")
            batched = logging_rate(url, args.points, batched=True)
            single = logging_rate(url, args.points // 4, batched=False)
            print("\n| MLflow over HTTP | points/s | vs per-point |")
            print("|---|---|---|")
            print(f"| log_batch (1000 per request) | {batched:.0f} | {batched / single:.0f}x |")
            print(f"| one request per point | {single:.0f} | 1x |")
        finally:
            mlflow_server.stop(tmp / "server")


if __name__ == "__main__":
    main()
