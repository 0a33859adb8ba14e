"""One load-test job: a run logging POINTS metric points through RunTracker, in batches."""

import sys

from lrtransfer.tracking import RunTracker

uri, experiment, index, points = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tracker = RunTracker(uri, experiment, run_name=f"load-{index}", tags={"load_index": str(index)})
for step in range(points):
    tracker.log_metric("train/loss", index + step / points, step)
    if (step + 1) % 100 == 0:
        tracker.flush()
tracker.finish()
