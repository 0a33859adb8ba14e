import math

import numpy as np
from PIL import Image

from lrtransfer.report.figures import excess_over_row_best, grid_heatmaps


def test_grid_cells_are_read_against_their_own_rows_best():
    loss = np.array([[2.0, 1.0, math.inf, math.nan],
                     [0.3, 0.2, 0.25, math.inf],
                     [math.inf, math.inf, math.nan, math.nan]])  # a row where every LR diverged
    excess = excess_over_row_best(loss)
    np.testing.assert_allclose(excess[0], [1.0, 0.0, np.nan, np.nan])
    np.testing.assert_allclose(excess[1], [0.5, 0.0, 0.25, np.nan])
    assert np.isnan(excess[2]).all()


def test_grid_heatmaps_draws_diverged_and_missing_cells(tmp_path):
    loss = np.array([[2.0, 1.0, math.inf], [math.inf, math.inf, math.nan]])
    name = grid_heatmaps(tmp_path / "grid.png", {"SP": ([32, 128], [0.25, 0.5, 1.0], loss)}, "width")
    with Image.open(tmp_path / name) as image:
        assert image.size[0] > 200 and image.size[1] > 100
