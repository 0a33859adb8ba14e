"""Embedded datasets, and the hub loaders on small files written here (offline)."""

import numpy as np
import pytest
import torch

from lrtransfer.data import load_cifar10, load_mnist1d, load_shakespeare, load_teacher, load_wikitext103, shakespeare_text
from lrtransfer.errors import DataUnavailableError


def test_mnist1d_is_generated_cached_and_deterministic(tmp_path):
    a = load_mnist1d(300, 100, tmp_path)
    assert a.x_train.shape == (300, 40) and a.x_test.shape == (100, 40) and a.out_dim == 10
    assert (tmp_path / "mnist1d-300-100").exists()
    b = load_mnist1d(300, 100, tmp_path)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)


def test_mnist1d_sizes_that_are_not_multiples_of_ten(tmp_path):
    """mnist1d rounds its sample count down to a multiple of 10; the loader asks for enough."""
    data = load_mnist1d(1024, 101, tmp_path)
    assert (len(data.x_train), len(data.x_test)) == (1024, 101)
    assert set(data.y_train.tolist()) == set(range(10))


def test_shakespeare_text_is_stripped_and_tokenised(tmp_path):
    text = shakespeare_text()
    assert len(text) > 4_000_000 and "**" not in text and "\n#" not in text
    assert "To be, or not to be" in text
    data = load_shakespeare(32, tmp_path)
    x, y = data.batch(torch.Generator().manual_seed(0), 4)
    assert x.shape == (4, 32) and torch.equal(x[:, 1:], y[:, :-1])
    assert data.vocab_size < 100 and int(data.train.max()) < data.vocab_size


def test_teacher_is_a_linear_function():
    d = load_teacher(64, 16, 10, 2)
    sol = torch.linalg.lstsq(d.x_train, d.y_train).solution
    assert torch.allclose(d.x_test @ sol, d.y_test, atol=1e-4) and d.task == "regression"
    scaled = load_teacher(64, 16, 10, 2, target_scale=3.0)
    assert torch.equal(scaled.x_train, d.x_train) and torch.allclose(scaled.y_train, 3 * d.y_train)


def write_cifar_like(path, n):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    rng = np.random.default_rng(0)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    for split in ("train", "test"):
        imgs = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
        ds = datasets.Dataset.from_dict({"img": imgs, "label": list(rng.integers(0, 10, n))}, features=features)
        ds.to_parquet(str(path / f"{split}-00000.parquet"))


def test_cifar10_loader_reads_local_parquet(tmp_path):
    write_cifar_like(tmp_path, 12)
    data = load_cifar10(10, 5, str(tmp_path), tmp_path / "cache")
    assert data.x_train.shape == (10, 3, 32, 32) and data.x_test.shape == (5, 3, 32, 32) and data.in_dim == 3072
    assert data.x_train.min() >= -1 and data.x_train.max() <= 1 and data.out_dim <= 10


def test_wikitext_loader_reads_local_parquet(tmp_path):
    import datasets

    for split in ("train", "test"):
        datasets.Dataset.from_dict({"text": [" = Heading = \n", "Some text here.\n" * 20]}).to_parquet(
            str(tmp_path / f"{split}.parquet"))
    data = load_wikitext103(8, 100, str(tmp_path), tmp_path / "cache")
    assert data.vocab_size == 256 and len(data.train) == 100
    x, y = data.eval_batch(3)
    assert x.shape == (3, 8)


def test_unavailable_hub_dataset_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataUnavailableError) as info:
        load_cifar10(10, 10, None, tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and "dataset 'cifar10'" in msg and "python -m lrtransfer.data cifar10" in msg
    with pytest.raises(DataUnavailableError, match="no train\\* files"):
        load_cifar10(10, 10, str(tmp_path / "empty"), tmp_path)


def test_paper_convnet_trains_on_cifar10_images(make_cfg, tmp_path):
    """sc_width's paper-scale network on (N, 3, 32, 32) images from local parquet files, spectra included."""
    from lrtransfer.trainer import run_training

    write_cifar_like(tmp_path, 40)
    cfg = make_cfg("data=cifar10", f"data.path={tmp_path}", "data.n_train=40", "data.n_test=8", "model=simple_convnet",
                   "model.width=16", "model.base_width=8", "param=mup", "optim=sgd", "optim.lr=0.1",
                   "train.steps=3", "train.batch_size=8", "train.eval_batch_size=8", "measure.spectra.every=2",
                   "measure.spectra.batch_size=16")
    result = run_training(cfg, tmp_path / "run")
    assert result["status"] == "FINISHED"
