"""Best-LR summaries, and `make reproduce` end to end at smoke scale."""

import os
import subprocess
import sys

from lrtransfer.paths import PROJECT_DIR
from lrtransfer.transfer import RunResult, argmin_shift, best_lrs, format_table


def test_best_lr_and_shift():
    results = [RunResult("sp", w, lr, loss) for w, lr, loss in [
        (32, 0.1, 1.0), (32, 0.2, 0.5), (32, 0.4, 0.7),
        (128, 0.1, 0.4), (128, 0.2, 0.6), (128, 0.4, 10.0)]]
    results.append(RunResult("mup", 32, 0.2, 0.3))
    best = {(b.group, b.scale): b for b in best_lrs(results)}
    assert best[("sp", 32)].lr == 0.2 and best[("sp", 32)].grid_index == 1
    assert best[("sp", 128)].lr == 0.1 and best[("sp", 128)].grid_index == 0
    assert argmin_shift(list(best.values()), "sp") == -1
    assert "sp: best-LR shift from smallest to largest scale = -1 grid steps" in format_table(list(best.values()))


def test_reproduce_smoke_prints_transfer_table(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "LRTRANSFER_CACHE": str(tmp_path)}
    r = subprocess.run([sys.executable, "scripts/reproduce.py", "--scale", "smoke"], cwd=PROJECT_DIR, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "64 jobs" in r.stdout
    for line in ("mup: best-LR shift", "sp: best-LR shift"):
        assert line in r.stdout
