"""Overhead of lrtransfer's training loop against a bare PyTorch loop on the same model and batch.

Both loops run in this process, alternating, on identical models/optimizers; the ratio is ours/bare
steps per second.  Target: overhead <= 5%.  Usage: python scripts/bench_train.py [--steps N]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from lrtransfer.data import ArrayData, TokenData
from lrtransfer.models import ResMLP, Transformer
from lrtransfer.optim import build_optimizer
from lrtransfer.tracking import RunTracker
from lrtransfer.trainer import LoopSettings, TrainState, train_loop


def bare_loop(model, data, steps, batch_size):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, y = data.batch(gen, batch_size)
        opt.zero_grad(set_to_none=True)
        data.loss(model(x), y).backward()
        opt.step()


def our_loop(model, data, steps, batch_size, tracker):
    """The trainer's own loop: schedule, per-tensor LRs, loss sync, divergence check, batched logging."""
    opt = build_optimizer(model, "adam", 1e-3)
    settings = LoopSettings(steps, 1e-3, batch_size, warmup_steps=10, schedule="cosine", eval_every=0,
                            flush_every=100, progress=False)
    train_loop(model, opt, data, torch.Generator().manual_seed(0), TrainState(), tracker, settings, (),
               checkpoint=lambda: None)
    tracker.flush()


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def bench(name, make_model, data, batch_size, steps, repeats, tracker):
    torch.manual_seed(0)
    bare_model, our_model = make_model(), make_model()
    bare_loop(bare_model, data, 5, batch_size)  # warm up allocator and kernels
    bare, ours = [], []
    for _ in range(repeats):  # alternate so drift in machine load hits both
        bare.append(timed(bare_loop, bare_model, data, steps, batch_size))
        ours.append(timed(our_loop, our_model, data, steps, batch_size, tracker))
    b, o = steps / min(bare), steps / min(ours)
    print(f"| {name} | {b:.1f} | {o:.1f} | {b / o:.3f} | {100 * (b / o - 1):+.1f}% |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    g = torch.Generator().manual_seed(0)
    arrays = ArrayData(torch.randn(4096, 40, generator=g), torch.randint(0, 10, (4096,), generator=g),
                       torch.randn(256, 40), torch.randint(0, 10, (256,)), "classification")
    tokens = TokenData(torch.randint(0, 65, (200_000,), generator=g), torch.randint(0, 65, (5_000,)), 65, 128)
    with tempfile.TemporaryDirectory() as tmp:
        tracker = RunTracker(f"sqlite:///{tmp}/bench.db", "bench")
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps, best of {args.repeats}")
        print("| model | bare steps/s | lrtransfer steps/s | time ratio (ours/bare) | overhead |")
        print("|---|---|---|---|---|")
        bench("ResMLP w512 d4, batch 256", lambda: ResMLP(40, 10, 512, 4, param="mup", base_width=128),
              arrays, 256, args.steps, args.repeats, tracker)
        bench("Transformer w128 2 blocks, seq 128, batch 16",
              lambda: Transformer(65, 128, 128, 2, param="mup", base_width=64), tokens, 16,
              max(20, args.steps // 4), args.repeats, tracker)
        tracker.finish()


if __name__ == "__main__":
    main()
