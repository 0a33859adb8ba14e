import os

import pytest
from hydra import compose, initialize_config_dir

from lrtransfer.config import register_configs
from lrtransfer.paths import CONF_DIR

# Hub datasets must never be fetched by tests: the machine may have no network at all.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def tracking_uri(tmp_path):
    return f"sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture
def make_cfg(tracking_uri, tmp_path):
    """Compose the real config (as the CLI would) with test-local tracking and caches."""
    register_configs()

    def make(*overrides: str, hydra_config: bool = False):
        base = ["scale=smoke", f"tracking.uri={tracking_uri}", f"data.cache_dir={tmp_path / 'cache'}"]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=base + list(overrides), return_hydra_config=hydra_config)

    return make


def mlflow_client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@pytest.fixture
def browser() -> str:
    from browser import find_browser

    return find_browser()
