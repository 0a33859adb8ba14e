"""The training loop: seeded, checkpointed, divergence-aware, logging every step to MLflow."""

from __future__ import annotations

import math
import os
import platform
import random
import sys
import tempfile
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .checkpoint import load_checkpoint, save_checkpoint
from .config import fingerprint
from .data import load_data
from .flerm_base import base_changed_since, base_key, mapped_base_series, searched_base, target_base_key
from .fslr import FunctionSpaceLR
from .measurements import FslrHook, SpectraHook, StepHook
from .errors import UserError, one_line
from .models import LinearNet, ResConvNet, ResMLP, ScalableModel, SimpleConvNet, Transformer
from .optim import build_optimizer, schedule_factor, set_learning_rates
from .parametrization import Parametrization
from .preemption import PreemptionGuard, Requeued, terminate_as_exit
from .spectra import SpectraSettings
from .tracking import READS_BASE_KEY, RunTracker, client_for, find_finished_run, flatten, job_status, note_reused_run



def processor(device: torch.device) -> dict[str, str]:
    """Tags naming the hardware, which the last bits of a seeded run depend on: the GPU's name, or the CPU's
    and the vector instructions torch's CPU kernels use (AVX2 and AVX512 kernels sum in different orders;
    a chaotic large-LR run then ends elsewhere)."""
    if device.type == "cuda":
        return {"processor": torch.cuda.get_device_name(device)}
    return {"processor": _cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:  # not Linux
        name = ""
    return name or platform.processor() or platform.machine()


def value(x: Any) -> Any:
    """Enum members from typed configs -> their plain value."""
    return getattr(x, "value", x)


def resolve_device(name: str) -> torch.device:
    name = value(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device='cuda': no CUDA device is available (use device=auto or device=cpu)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: DictConfig, data) -> ScalableModel:
    m, p = cfg.model, Parametrization(value(cfg.param.name), cfg.param.alpha, cfg.param.readout_zero_init)
    name = value(m.name)
    common = dict(base_width=m.base_width, param=p)
    scaling = dict(base_depth=m.base_depth, branch_scale=value(m.branch_scale), init_scale=m.init_scale,
                   branch_mult=m.branch_mult)
    if name == "transformer":
        if data.task != "language":
            raise UserError(f"model.name=transformer needs a language dataset, not data.name={value(cfg.data.name)}")
        return Transformer(data.vocab_size, data.seq_len, m.width, m.depth, head_dim=m.head_dim,
                           norm=value(m.norm), norm_affine=m.norm_affine, qk_norm=m.qk_norm, bias=m.bias, **common, **scaling)
    if data.task == "language":
        raise UserError(f"model.name={name} needs an array dataset, not data.name={value(cfg.data.name)}")
    if name == "linear":
        return LinearNet(data.in_dim, data.out_dim, m.width, **common)
    if name == "simple_convnet":
        return SimpleConvNet(data.in_shape, data.out_dim, m.width, bias=m.bias, init_scale=m.init_scale, task=data.task,
                             **common)
    if name == "convnet":
        return ResConvNet(data.in_shape, data.out_dim, m.width, m.depth, layers_per_block=m.layers_per_block,
                          bias=m.bias, task=data.task, **common, **scaling)
    return ResMLP(data.in_dim, data.out_dim, m.width, m.depth, layers_per_block=m.layers_per_block, bias=m.bias,
                  init=value(m.init), task=data.task, **common, **scaling)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable,
               inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One optimizer step; the LRs are whatever the optimizer's groups hold."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def evaluate(model: torch.nn.Module, loss_fn: Callable, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    was_training = model.training
    model.eval()
    try:
        return float(loss_fn(model(inputs), targets))
    finally:
        model.train(was_training)


@dataclass
class LoopSettings:
    steps: int
    lr: float
    batch_size: int
    warmup_steps: int = 0
    schedule: str = "constant"
    divergence_loss: float = 10.0
    eval_every: int = 0
    checkpoint_every: int = 0
    flush_every: int = 100
    progress: bool = True


@dataclass
class TrainState:
    step: int = 0
    window: deque = field(default_factory=deque)
    diverged_at: int | None = None


# Keys that do not change what a run computes, left out of its configuration hash.
_NOT_HASHED = ("tracking", "reuse", "stages", "device")
_NOT_HASHED_TRAIN = ("progress", "checkpoint_every", "checkpoint_dir")


# Bumped when runs start to record something that reports or searches rely on, so that runs recorded
# before are not reused or reported as if they had it. 2: final/fixed_train_loss and the fslr_base_key tag.
RECORD_VERSION = 2


def config_hash(cfg: DictConfig) -> str:
    """A fingerprint of everything that determines a run's result and record (``reuse=true`` matches on it)."""
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for key in _NOT_HASHED:
        container.pop(key, None)
    for key in _NOT_HASHED_TRAIN:
        container.get("train", {}).pop(key, None)
    if container.get("fslr", {}).get("mode") == "off":  # nothing is estimated, so no fslr setting changes the run
        container.pop("fslr")
    return fingerprint({"config": container, "record_version": RECORD_VERSION})


def run_tags(cfg: DictConfig) -> dict[str, str]:
    tags = {"scale": cfg.scale, "config_hash": config_hash(cfg), "model": value(cfg.model.name),
            "param": value(cfg.param.name), "width": cfg.model.width, "depth": cfg.model.depth, "lr": cfg.optim.lr, "optim": value(cfg.optim.name), "seed": cfg.seed,
            "data": value(cfg.data.name), "init_scale": float(cfg.model.init_scale),
            "fslr_mode": value(cfg.fslr.mode)}
    if tags["fslr_mode"] == "record":  # what FLeRM targets of this base model search for
        tags["fslr_base_key"] = base_key(cfg, cfg.model.width, cfg.model.depth, cfg.model.init_scale)
    elif tags["fslr_mode"] == "flerm" and searched_base(cfg):  # the records it reads (a rerun checks their age)
        tags[READS_BASE_KEY] = target_base_key(cfg)
    if value(cfg.model.name) == "transformer":
        tags["norm"] = value(cfg.model.norm)
    return {str(k): str(v) for k, v in {**tags, **(cfg.tags or {})}.items()}


def default_run_name(cfg: DictConfig) -> str:
    return (f"{value(cfg.param.name)}-{value(cfg.model.name)}-w{cfg.model.width}-d{cfg.model.depth}"
            f"-lr{cfg.optim.lr:g}-s{cfg.seed}")


def run_training(cfg: DictConfig, output_dir: str | Path, *, parent_run_id: str | None = None,
                 hydra_config: dict | None = None) -> dict[str, Any]:
    """Train one job and record it in MLflow; returns the final metrics, status and run id.

    A diverged run ends early with status FINISHED and tag ``diverged=true``; its final losses are
    set to ``train.divergence_loss`` (the rule LR-transfer curves use: divergence counts as the cap).
    Any exception marks the run FAILED (traceback logged as an artifact) and is re-raised.
    """
    t = cfg.train
    tags = run_tags(cfg)
    # One folder per configuration: a job only ever resumes its own run, also where several jobs share
    # a checkpoint_dir or a job directory is reused with other overrides.
    ckpt_dir = Path(t.checkpoint_dir or Path(output_dir) / "checkpoint") / tags["config_hash"]
    ckpt = load_checkpoint(ckpt_dir)
    if cfg.reuse and ckpt is None:
        done = find_finished_run(cfg.tracking.uri, cfg.tracking.experiment, tags["config_hash"])
        if done is not None and tags["fslr_mode"] == "flerm" and \
                base_changed_since(cfg, client_for(cfg.tracking.uri), done):
            print(f"note: a base record finished after FLeRM run {done.info.run_id} started; training it again",
                  file=sys.stderr)
            done = None
        if done is not None:
            if parent_run_id:
                try:  # only the sweep summary needs it; the job itself is done
                    note_reused_run(client_for(cfg.tracking.uri), parent_run_id, done)
                except Exception as exc:
                    print(f"warning: the sweep summary will miss reused run {done.info.run_id}: {one_line(exc)}",
                          file=sys.stderr)
            return reused_result(done)
    tracker = open_run(cfg, parent_run_id, tags, run_id=ckpt["run_id"] if ckpt else None)
    try:
        if ckpt is None:
            container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
            tracker.log_params(flatten(container))
            tracker.log_dict(OmegaConf.to_container(cfg, resolve=False, enum_to_str=True), "config/composed.yaml")
            tracker.log_dict(container, "config/resolved.yaml")
            if hydra_config:
                tracker.log_dict(hydra_config, "config/hydra.yaml")
            tracker.set_tags({"output_dir": str(output_dir)})
        else:
            tracker.set_tags({"requeued": int(tracker.tags().get("requeued", 0)) + 1})
        if "SLURM_JOB_ID" in os.environ:
            array = os.environ.get("SLURM_ARRAY_JOB_ID")
            job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
            tracker.set_tags({"slurm_job_id": job})
        with terminate_as_exit():
            result = _train(cfg, tracker, ckpt_dir, ckpt)
    except Requeued:
        tracker.finish("SCHEDULED")  # checkpointed; Slurm runs it again and it resumes this run
        raise
    except BaseException as exc:
        tracker.set_tags({"error": f"{type(exc).__name__}: {str(exc).strip()[:500]}"})
        tracker.log_text(traceback.format_exc(), "error.txt")
        tracker.finish("KILLED" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "FAILED")
        raise
    tracker.finish("FINISHED")
    return {**result, "run_id": tracker.run_id, "status": "DIVERGED" if result["diverged"] else "FINISHED"}


def open_run(cfg: DictConfig, parent_run_id: str | None, tags: dict[str, str], run_id: str | None = None) -> RunTracker:
    """The job's MLflow run: a new one, or ``run_id`` reopened (a resumed job)."""
    return RunTracker(cfg.tracking.uri, cfg.tracking.experiment, run_id=run_id,
                      run_name=cfg.tracking.run_name or default_run_name(cfg), parent_run_id=parent_run_id, tags=tags)


def record_rejected_job(cfg: DictConfig, error: str, parent_run_id: str | None = None) -> None:
    """A FAILED run (tag ``error``) for a sweep job whose configuration was rejected before it could start,
    so that the sweep's record and summary count it.  Best effort: a configuration too broken to reach
    MLflow (a bad tracking URI) is only reported on stderr."""
    try:
        tracker = open_run(cfg, parent_run_id, run_tags(cfg))
    except Exception:
        return
    tracker.set_tags({"error": error})
    tracker.finish("FAILED")


def reused_result(run) -> dict[str, Any]:
    m = run.data.metrics
    return {**{k: m.get(k, math.nan) for k in ("final/train_loss", "final/fixed_train_loss", "final/eval_loss")},
            "diverged": run.data.tags.get("diverged") == "true", "run_id": run.info.run_id,
            "status": job_status(run, reused=True)}


def _train(cfg: DictConfig, tracker: RunTracker, ckpt_dir: Path, ckpt: dict | None) -> dict[str, Any]:
    t, o = cfg.train, cfg.optim
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    data = load_data(cfg.data).to(device)
    model = build_model(cfg, data).to(device)
    optimizer = build_optimizer(model, value(o.name), o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                betas=tuple(o.betas), eps=o.eps)
    batch_gen = torch.Generator().manual_seed(cfg.seed)
    eval_x, eval_y = data.eval_batch(t.eval_batch_size)
    hooks = build_hooks(cfg, model, optimizer, data, tracker)
    state = TrainState(window=deque(maxlen=t.final_window))
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        batch_gen.set_state(ckpt["batch_gen"])
        for hook, hook_state in zip(hooks, ckpt["hooks"]):
            hook.load_state_dict(hook_state)
        state = TrainState(ckpt["step"], deque(ckpt["window"], maxlen=t.final_window), None)
        torch.set_rng_state(ckpt["torch_rng"])
    else:
        tracker.log_metric("eval/loss", evaluate(model, data.loss, eval_x, eval_y), 0)
        # CPU threads change the summation order, so the last bits of every result (launcher-dependent)
        tracker.set_tags({"n_params": sum(p.numel() for p in model.parameters()), "device": str(device),
                          "torch_threads": torch.get_num_threads(), **processor(device)})

    def checkpoint() -> None:
        save_checkpoint(ckpt_dir, {"step": state.step, "model": model.state_dict(),
                                   "optimizer": optimizer.state_dict(), "batch_gen": batch_gen.get_state(),
                                   "window": list(state.window), "torch_rng": torch.get_rng_state(),
                                   "hooks": [h.state_dict() for h in hooks], "run_id": tracker.run_id})

    loop = LoopSettings(t.steps, o.lr, t.batch_size, t.warmup_steps, value(t.schedule), t.divergence_loss,
                        t.eval_every, t.checkpoint_every, cfg.tracking.flush_every, t.progress)
    with PreemptionGuard() as guard:
        train_loop(model, optimizer, data, batch_gen, state, tracker, loop, (eval_x, eval_y), checkpoint, guard,
                   hooks)
    write_hook_artifacts(hooks, tracker)

    diverged = state.diverged_at is not None
    if diverged:
        final_train = final_fixed = final_eval = t.divergence_loss
        tracker.set_tags({"diverged": "true", "diverged_at_step": state.diverged_at})
    else:
        final_train = float(np.mean(state.window))
        final_fixed = evaluate(model, data.loss, *fixed_train_batch(data, t.eval_batch_size))
        final_eval = evaluate(model, data.loss, eval_x, eval_y)
        tracker.set_tags({"diverged": "false"})
    final = {"final/train_loss": final_train, "final/fixed_train_loss": final_fixed, "final/eval_loss": final_eval,
             "final/diverged": float(diverged)}
    tracker.log_metrics(final, state.step)
    return {**final, "diverged": diverged, "steps": state.step}


def train_loop(model: torch.nn.Module, optimizer: torch.optim.Optimizer, data, batch_gen: torch.Generator,
               state: TrainState, tracker: RunTracker, s: LoopSettings, eval_batch: tuple,
               checkpoint: Callable[[], None], guard: PreemptionGuard | None = None,
               hooks: Sequence[StepHook] = ()) -> None:
    """Steps ``state.step`` .. ``s.steps``-1; stops at the first diverged step (``state.diverged_at``).

    When ``guard`` saw Slurm's warning signal, the step in flight finishes, a checkpoint is saved and
    the guard hands the job back to Slurm (this function then does not return).
    """
    progress = _progress(s.steps, state.step, enabled=s.progress, desc=tracker.run_id[:8])
    model.train()
    for step in range(state.step, s.steps):
        set_learning_rates(optimizer, s.lr, schedule_factor(step, s.steps, s.warmup_steps, s.schedule))
        for hook in hooks:
            tracker.log_metrics(hook.before_step(step), step)
        loss = float(train_step(model, optimizer, data.loss, *data.batch(batch_gen, s.batch_size)))
        tracker.log_metric("train/loss", loss, step)
        if not math.isfinite(loss) or loss > s.divergence_loss:
            state.diverged_at = step
            break
        for hook in hooks:
            tracker.log_metrics(hook.after_step(step), step)
        state.window.append(loss)
        state.step = step + 1
        if s.eval_every and state.step % s.eval_every == 0:
            tracker.log_metric("eval/loss", evaluate(model, data.loss, *eval_batch), state.step)
        if guard is not None and guard.requested:
            tracker.flush()
            checkpoint()
            guard.hand_over()
        if s.checkpoint_every and state.step % s.checkpoint_every == 0:
            tracker.flush()  # metrics first: a resumed run skips what is already stored
            checkpoint()
        elif state.step % s.flush_every == 0:
            tracker.flush()
        progress.update(1)
        if state.step % 10 == 0:
            progress.set_postfix(loss=f"{loss:.4f}", refresh=False)
    progress.close()


FIXED_TRAIN_BATCH_SEED = 20_241_124  # one constant, not tied to cfg.seed: every run sees the same examples


def fixed_train_batch(data, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training examples the final fixed-batch train loss is computed on: the same ones for every run
    (seed, width, LR), so that the argmin over LRs compares like with like (Super Consistency's A1)."""
    return data.batch(torch.Generator().manual_seed(FIXED_TRAIN_BATCH_SEED), size)


def measurement_batch(cfg: DictConfig, data) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed batch spectra are measured on: drawn once from the training data, own generator."""
    return data.batch(torch.Generator().manual_seed(cfg.seed + 10_000), cfg.measure.spectra.batch_size)


def build_hooks(cfg: DictConfig, model: ScalableModel, optimizer: torch.optim.Optimizer, data,
                tracker: RunTracker) -> list[StepHook]:
    """The measurements ``measure.spectra`` and ``fslr`` ask for; FLeRM's base is resolved here,
    before the first step, so a missing base record fails the run at once."""
    hooks: list[StepHook] = []
    sp, f, o = cfg.measure.spectra, cfg.fslr, cfg.optim
    if sp.every:
        settings = SpectraSettings(every=sp.every, k=sp.k, method=value(sp.method), tol=sp.tol, max_iter=sp.max_iter,
                                   trace=sp.trace, trace_probes=sp.trace_probes, ggn=sp.ggn, ntk=sp.ntk,
                                   preconditioned=sp.preconditioned, directional=sp.directional, seed=cfg.seed)
        hooks.append(SpectraHook(model, data.loss, measurement_batch(cfg, data), settings, optimizer,
                                 value(o.name), o.lr))
    mode = value(f.mode)
    if mode != "off":
        base = None
        if mode == "flerm":
            base, source = mapped_base_series(cfg, tracker.client, value, [n for n, _ in model.named_parameters()])
            tracker.set_tags({"fslr_base": source})
        gens = {"batches": torch.Generator().manual_seed(cfg.seed + 20_000),
                "functional": torch.Generator(device=next(model.parameters()).device).manual_seed(cfg.seed + 30_000)}
        fslr = FunctionSpaceLR(model, optimizer, mode, base=base, every=f.every,
                               first_step_only=f.first_step_only if mode == "flerm" else False,
                               warmup_samples=f.warmup_samples, method=value(f.method), beta=f.beta,
                               generator=gens["functional"])
        meta = {"model": value(cfg.model.name), "param": value(cfg.param.name), "optim": value(o.name),
                "width": cfg.model.width, "depth": cfg.model.depth, "init_scale": cfg.model.init_scale,
                "lr": o.lr, "seed": cfg.seed, "every": f.every, "method": value(f.method), "run_id": tracker.run_id}
        hooks.append(FslrHook(fslr, lambda: data.batch(gens["batches"], cfg.train.batch_size)[0], gens, meta))
    return hooks


def write_hook_artifacts(hooks: Sequence[StepHook], tracker: RunTracker) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for hook in hooks:
            for path in hook.write_artifacts(Path(tmp)):
                tracker.log_artifact(path, hook.artifact_dir)


def _progress(total: int, initial: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, leave=False, mininterval=1.0)
