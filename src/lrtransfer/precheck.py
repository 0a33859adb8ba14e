"""Compose and validate every configuration a command line would run, before anything runs.

Hydra reports composition errors as multi-line blocks, and only once a job starts; a sweep of 200
jobs with one bad value would fail 200 times.  Here each value of each sweep axis (command line
and the experiment's ``hydra.sweeper.params``) is composed once and validated, and the tracking
server is checked, so the user gets one line naming the bad key and value.
"""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from .config import register_configs, validate
from .paths import CONF_DIR
from .tracking import check_experiment, check_tracking_uri

# Hydra flags that take a value, and flags that mean "do not run".
_FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                     "--cfg", "-c", "--package", "-p", "--experimental-rerun"}
_NO_RUN = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc"}


def split_args(argv: list[str]) -> tuple[list[str], bool, bool]:
    """-> (overrides, is_multirun, will_run)."""
    overrides, multirun, runs, skip = [], False, True, False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            flag = arg.split("=")[0]
            multirun |= flag in ("-m", "--multirun")
            runs &= flag not in _NO_RUN
            skip = flag in _FLAGS_WITH_VALUE and "=" not in arg
            continue
        overrides.append(arg)
    return overrides, multirun, runs


def _variants(overrides: list[str], sweep_params: dict[str, str]) -> list[list[str]]:
    """Override lists covering every value of every sweep axis (first value elsewhere)."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides + [f"{k}={v}" for k, v in sweep_params.items()
                                                 if not any(o.split("=")[0].lstrip("+~") == k for o in overrides)])
    axes = []
    for o in parsed:
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        axes.append((key, values))
    base = [f"{k}={vals[0]}" for k, vals in axes if vals]
    variants = [base]
    for i, (key, vals) in enumerate(axes):
        for v in vals[1:]:
            variants.append(base[:i] + [f"{key}={v}"] + base[i + 1:])
    return variants


def precheck(argv: list[str], config_name: str = "config") -> None:
    overrides, multirun, runs = split_args(argv)
    if not runs:
        return
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        first = compose(config_name, overrides=[first_value(o) for o in overrides], return_hydra_config=True)
        sweep_params = dict(first.hydra.sweeper.get("params") or {}) if multirun else {}
        variants = _variants(overrides, sweep_params) if multirun else [overrides]
        for variant in variants:
            cfg = compose(config_name, overrides=variant)
            validate(cfg)
    check_tracking_uri(OmegaConf.select(first, "tracking.uri"))
    check_experiment(OmegaConf.select(first, "tracking.uri"), OmegaConf.select(first, "tracking.experiment"))


def first_value(override: str) -> str:
    """`k=a,b` -> `k=a` so that the sweep's base composes (Hydra's compose rejects sweeps)."""
    parsed = OverridesParser.create().parse_overrides([override])[0]
    if not parsed.is_sweep_override():
        return override
    first = next(iter(parsed.sweep_string_iterator()), None)
    return f"{override.split('=')[0]}={first}"
