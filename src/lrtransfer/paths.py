"""Where the project's Hydra configs live (the repository's top-level ``conf/``)."""

from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_DIR / "conf"
