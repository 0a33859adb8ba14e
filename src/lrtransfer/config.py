"""Typed config schemas (registered in Hydra's ConfigStore) and value checks.

OmegaConf rejects unknown keys and wrong types at compose time; :func:`validate` rejects keys that
Hydra's ``+key=value`` added past the schema, and values that are well-typed but meaningless (a negative
width, a zero LR, ...).  Both surface as one line
through :func:`lrtransfer.errors.one_line`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError


class ModelName(Enum):
    resmlp = "resmlp"
    transformer = "transformer"
    linear = "linear"
    simple_convnet = "simple_convnet"
    convnet = "convnet"


class ParamName(Enum):
    sp = "sp"
    ntp = "ntp"
    mup = "mup"
    depth_mup = "depth_mup"


class OptimName(Enum):
    sgd = "sgd"
    adam = "adam"
    adamw = "adamw"


class NormPlacement(Enum):
    pre = "pre"
    post = "post"
    pre_post_mod = "pre_post_mod"
    none = "none"


class InitStyle(Enum):
    abc = "abc"  # the parametrization's normal weights, zero biases
    flerm_resmlp = "flerm_resmlp"  # the FLeRM paper's ResMLP code on top of them (models/resmlp.py)


class BranchScale(Enum):
    auto = "auto"
    none = "none"
    sqrt_depth = "sqrt_depth"
    depth = "depth"
    sqrt_depth_init = "sqrt_depth_init"


class Schedule(Enum):
    constant = "constant"
    cosine = "cosine"


class DataName(Enum):
    mnist1d = "mnist1d"
    shakespeare = "shakespeare"
    cifar10 = "cifar10"
    wikitext103 = "wikitext103"
    teacher = "teacher"


class EigenMethod(Enum):
    lanczos = "lanczos"
    power = "power"


class FslrMode(Enum):
    off = "off"
    record = "record"
    flerm = "flerm"


class FslrMethod(Enum):
    kronecker = "kronecker"
    full_cov = "full_cov"


class Device(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class ModelConfig:
    name: ModelName = ModelName.resmlp
    width: int = 128
    depth: int = 4
    layers_per_block: int = 1
    base_width: int = 128
    base_depth: int = 4
    norm: NormPlacement = NormPlacement.pre
    norm_affine: bool = True  # LayerNorms with a trainable gain and bias (false: the FLeRM paper's Transformer)
    branch_scale: BranchScale = BranchScale.auto
    branch_mult: float = 1.0  # residual-branch multiplier at the base depth; branch_scale scales it with depth
    head_dim: int = 16
    qk_norm: bool = False
    bias: bool = True
    init_scale: float = 1.0
    init: InitStyle = InitStyle.abc


@dataclass
class ParamConfig:
    name: ParamName = ParamName.sp
    alpha: float = 0.5  # depth exponent of depth-µP: branch multiplier L^-alpha
    readout_zero_init: bool = False  # start the readout at zero (small initial outputs and sharpness)


@dataclass
class OptimConfig:
    name: OptimName = OptimName.adam
    lr: float = 1e-3  # the base LR η0
    momentum: float = 0.0
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class TrainConfig:
    steps: int = 500
    batch_size: int = 128
    warmup_steps: int = 0
    schedule: Schedule = Schedule.constant
    final_window: int = 50
    eval_every: int = 100
    eval_batch_size: int = 512
    divergence_loss: float = 10.0  # a loss above this (or non-finite) marks the run diverged
    checkpoint_every: int = 0  # 0 = no checkpoints
    checkpoint_dir: Optional[str] = None  # default: <job output dir>/checkpoint
    progress: bool = True


@dataclass
class DataConfig:
    name: DataName = DataName.mnist1d
    n_train: int = 4000
    n_test: int = 1000
    seq_len: int = 64
    path: Optional[str] = None  # local files for the hub datasets (parquet/arrow), instead of the hub
    cache_dir: Optional[str] = None  # default: ~/.cache/lrtransfer
    in_dim: int = 100  # teacher data only
    out_dim: int = 1  # teacher data only
    target_scale: float = 1.0  # teacher data only: the teacher's outputs have this standard deviation


@dataclass
class TrackingConfig:
    uri: str = "${oc.env:MLFLOW_TRACKING_URI,sqlite:///${cwd:}/outputs/mlflow.db}"
    experiment: str = "default"
    run_name: Optional[str] = None
    parent_run_id: Optional[str] = None
    flush_every: int = 100  # per-step metrics are sent with log_batch every this many steps


@dataclass
class SpectraConfig:
    every: int = 0  # 0 = off; else at step 0 and every this many steps, on the fixed measurement batch
    batch_size: int = 256  # size of that batch, drawn once from the training data
    k: int = 1  # top-k Hessian eigenvalues
    method: EigenMethod = EigenMethod.lanczos  # power = PyHessian's deflated power iteration
    tol: Optional[float] = None  # None: the method's default (lanczos: residual ≤ √eps·λ, 3e-4 in float32; power 1e-3)
    max_iter: Optional[int] = None
    trace: bool = False
    trace_probes: int = 99
    ggn: bool = False
    ntk: int = 0  # top-k NTK eigenvalues (0 = none)
    preconditioned: bool = False  # Adam: lambda_max(P^-1 H) and its threshold
    directional: bool = False


@dataclass
class MeasureConfig:
    spectra: SpectraConfig = field(default_factory=SpectraConfig)


@dataclass
class FslrBaseConfig:
    run_id: Optional[str] = None  # an explicit base run (its fslr/record.json)
    path: Optional[str] = None  # or a record file
    experiment: Optional[str] = None  # where to search for base runs; default tracking.experiment
    init_scale: float = 1.0  # the base model's model.init_scale


@dataclass
class FslrConfig:
    mode: FslrMode = FslrMode.off
    every: int = 100  # periodic estimates (record mode; flerm with first_step_only=false)
    warmup_samples: int = 41  # estimates of the first step's update
    method: FslrMethod = FslrMethod.kronecker
    beta: float = 0.9
    first_step_only: bool = True  # flerm: set the LRs once at step 0 (the paper's main variant)
    split_depth: bool = True  # flerm, deeper target: split a base block's value over its copies (false: ablation)
    base: FslrBaseConfig = field(default_factory=FslrBaseConfig)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    param: ParamConfig = field(default_factory=ParamConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    fslr: FslrConfig = field(default_factory=FslrConfig)
    scale: str = "small"
    seed: int = 0
    device: Device = Device.auto
    tags: dict[str, str] = field(default_factory=dict)
    # Reuse a FINISHED run of the same experiment whose configuration hash matches, instead of training.
    reuse: bool = False
    # Sweeps that `make reproduce` runs in order, each over the experiment's grid (hydra.sweeper.params)
    # with these overrides on top, e.g. {base: {model.width: 32, fslr.mode: record}, flerm: {fslr.mode: flerm}}.
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)


def compose_experiment(experiment: str, scale: str, *overrides: str, return_hydra_config: bool = False):
    """The composed configuration of ``experiment`` at ``scale`` (as its jobs see it, before sweeping)."""
    from hydra import compose, initialize_config_dir

    from .paths import CONF_DIR

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[f"experiment={experiment}", f"scale={scale}", *overrides],
                       return_hydra_config=return_hydra_config)


def register_configs() -> None:
    if not OmegaConf.has_resolver("cwd"):
        OmegaConf.register_new_resolver("cwd", os.getcwd)
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)


def fingerprint(container: Any) -> str:
    """A short stable hash of plain (JSON-serialisable) config values."""
    return hashlib.sha1(json.dumps(container, sort_keys=True).encode()).hexdigest()[:16]


def _check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


# Models without residual branches, for which model.layers_per_block, branch_scale and branch_mult mean nothing.
NO_RESIDUAL_BRANCHES = ("linear", "simple_convnet")

# Tracking stores: a SQLite file, an MLflow server, or a database MLflow's SQL store speaks directly.
TRACKING_SCHEMES = ("sqlite:///", "http://", "https://", "postgresql", "mysql", "mssql")


def unknown_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Dotted keys of ``node`` that its schema does not declare (free-form dicts such as ``tags`` take any)."""
    schema = OmegaConf.get_type(node)
    if not is_dataclass(schema):
        return []
    declared = {f.name for f in fields(schema)}
    found = []
    for key in node.keys():
        if key not in declared:
            found.append(f"{prefix}{key}")
        elif isinstance(child := node._get_node(key), DictConfig):
            found += unknown_keys(child, f"{prefix}{key}.")
    return found


def validate(cfg: Any) -> None:
    """Reject keys outside the schema and well-typed but invalid values before any work starts."""
    for key in unknown_keys(cfg):
        _check(False, key, OmegaConf.select(cfg, key), "no such configuration key (a typo? `+` adds keys the "
               "schema does not know, and nothing would read it)")
    m, o, t, d = cfg.model, cfg.optim, cfg.train, cfg.data
    _check(m.width >= 1, "model.width", m.width, "must be a positive integer")
    _check(m.base_width >= 1, "model.base_width", m.base_width, "must be a positive integer")
    _check(m.depth >= 1, "model.depth", m.depth, "must be at least 1")
    _check(m.base_depth >= 1, "model.base_depth", m.base_depth, "must be at least 1")
    _check(m.layers_per_block >= 1, "model.layers_per_block", m.layers_per_block, "must be at least 1")
    _check(m.init_scale > 0, "model.init_scale", m.init_scale, "must be positive")
    _check(m.branch_mult > 0, "model.branch_mult", m.branch_mult, "must be positive")
    _check(d.target_scale > 0, "data.target_scale", d.target_scale, "must be positive")
    if _name(m.name) in NO_RESIDUAL_BRANCHES:  # their branch keys would silently do nothing
        _check(_name(m.branch_scale) == "auto", "model.branch_scale", _name(m.branch_scale),
               f"model.name={_name(m.name)} has no residual branches to scale")
        _check(m.branch_mult == 1, "model.branch_mult", m.branch_mult,
               f"model.name={_name(m.name)} has no residual branches to multiply")
    _check(_name(m.init) == "abc" or _name(m.name) == "resmlp", "model.init", _name(m.init),
           f"only model.name=resmlp has it, not {_name(m.name)}")
    if _name(m.name) == "simple_convnet":  # two fixed conv layers: no depth axis to sweep
        _check(m.depth == 1, "model.depth", m.depth,
               "must be 1 for model.name=simple_convnet (it has no residual blocks)")
        _check(m.base_depth == 1, "model.base_depth", m.base_depth, "must be 1 for model.name=simple_convnet")
    if _name(m.name) == "convnet":  # blocks split evenly over three stages
        _check(m.depth % 3 == 0, "model.depth", m.depth,
               "must be a multiple of 3 for model.name=convnet (three stages)")
        _check(m.base_depth % 3 == 0, "model.base_depth", m.base_depth,
               "must be a multiple of 3 for model.name=convnet")
    if _name(m.name) == "transformer":
        _check(m.head_dim >= 1, "model.head_dim", m.head_dim, "must be a positive integer")
        _check(m.width % m.head_dim == 0, "model.width", m.width,
               f"must be divisible by model.head_dim={m.head_dim}")
    _check(o.lr > 0, "optim.lr", o.lr, "must be positive")
    _check(0 <= o.momentum < 1, "optim.momentum", o.momentum, "must be in [0, 1)")
    _check(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "must be non-negative")
    _check(o.eps >= 0, "optim.eps", o.eps, "must be non-negative")
    _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas", list(o.betas),
           "must be two numbers in [0, 1)")
    _check(cfg.param.alpha > 0, "param.alpha", cfg.param.alpha, "must be positive")
    _check(t.steps >= 1, "train.steps", t.steps, "must be at least 1")
    _check(t.batch_size >= 1, "train.batch_size", t.batch_size, "must be at least 1")
    _check(t.warmup_steps >= 0, "train.warmup_steps", t.warmup_steps, "must be non-negative")
    _check(t.final_window >= 1, "train.final_window", t.final_window, "must be at least 1")
    _check(t.eval_every >= 0, "train.eval_every", t.eval_every, "must be non-negative")
    _check(t.checkpoint_every >= 0, "train.checkpoint_every", t.checkpoint_every, "must be non-negative")
    _check(t.divergence_loss > 0, "train.divergence_loss", t.divergence_loss, "must be positive")
    _check(t.eval_batch_size >= 1, "train.eval_batch_size", t.eval_batch_size, "must be at least 1")
    _check(0 <= cfg.seed < 2**32, "seed", cfg.seed, "must be in [0, 2**32)")
    _check(d.n_train >= t.batch_size or _name(d.name) in ("shakespeare", "wikitext103"), "data.n_train",
           d.n_train, f"must be at least train.batch_size={t.batch_size}")
    _check(d.seq_len >= 2, "data.seq_len", d.seq_len, "must be at least 2")
    sp = cfg.measure.spectra
    _check(sp.every >= 0, "measure.spectra.every", sp.every, "must be non-negative (0 = off)")
    _check(sp.batch_size >= 1, "measure.spectra.batch_size", sp.batch_size, "must be at least 1")
    _check(sp.k >= 1, "measure.spectra.k", sp.k, "must be at least 1")
    _check(sp.ntk >= 0, "measure.spectra.ntk", sp.ntk, "must be non-negative")
    _check(sp.tol is None or sp.tol > 0, "measure.spectra.tol", sp.tol, "must be positive (or null: the default)")
    _check(sp.max_iter is None or sp.max_iter >= max(sp.k, sp.ntk), "measure.spectra.max_iter", sp.max_iter,
           f"must be at least measure.spectra.k and .ntk ({max(sp.k, sp.ntk)}), or null")
    _check(sp.trace_probes >= 1, "measure.spectra.trace_probes", sp.trace_probes, "must be at least 1")
    _check(not sp.preconditioned or _name(o.name) != "sgd", "measure.spectra.preconditioned", True,
           "needs optim=adam or adamw")
    f = cfg.fslr
    _check(f.every >= 1, "fslr.every", f.every, "must be at least 1")
    _check(f.warmup_samples >= 1, "fslr.warmup_samples", f.warmup_samples, "must be at least 1")
    _check(0 <= f.beta < 1, "fslr.beta", f.beta, "must be in [0, 1)")
    if _name(f.mode) == "flerm":
        _check(m.depth % m.base_depth == 0, "model.depth", m.depth,
               f"must be a multiple of model.base_depth={m.base_depth} for FLeRM's depth mapping")
    _check(cfg.tracking.flush_every >= 1, "tracking.flush_every", cfg.tracking.flush_every, "must be at least 1")
    _check(bool(str(cfg.tracking.experiment).strip()), "tracking.experiment", cfg.tracking.experiment,
           "must be a non-empty name")
    _check(str(cfg.tracking.uri).startswith(TRACKING_SCHEMES), "tracking.uri", cfg.tracking.uri,
           f"must start with one of {', '.join(TRACKING_SCHEMES)}")


def _name(value: Any) -> str:
    return value.value if isinstance(value, Enum) else str(value)
