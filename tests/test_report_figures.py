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


def test_every_parameter_of_our_models_falls_in_the_papers_tensor_groups():
    from lrtransfer.models import ResMLP, Transformer
    from lrtransfer.report.flerm import tensor_group

    transformer = Transformer(13, 10, 32, 2, head_dim=8, qk_norm=True)
    groups = {n: tensor_group(n, "transformer") for n, _ in transformer.named_parameters()}
    assert {n for n, g in groups.items() if g == "QK"} == {f"blocks.{i}.branch.{x}.weight" for i in (0, 2) for x in "qk"}
    assert {n for n, g in groups.items() if g == "VO"} == {f"blocks.{i}.branch.{x}.weight" for i in (0, 2) for x in "vo"}
    assert [groups[f"blocks.{i}.branch.{j}.weight"] for i in (1, 3) for j in (0, 2)] == ["FF in", "FF out"] * 2
    assert {g for n, g in groups.items() if n.endswith(".bias") and "norm" not in n} == {"biases"}
    assert {groups["tok.weight"], groups["pos.weight"], groups["readout.weight"]} == {"embedding", "readout"}
    assert "hidden" not in groups.values()

    resmlp = ResMLP(40, 10, 32, 3, layers_per_block=2)
    groups = {n: tensor_group(n, "resmlp") for n, _ in resmlp.named_parameters()}
    assert groups["input.weight"] == "input" and groups["readout.weight"] == "readout"
    assert {g for n, g in groups.items() if n.startswith("blocks.") and n.endswith(".weight")} == {"hidden"}
