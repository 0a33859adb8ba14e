"""How far FLeRM's first-step estimate of each tensor's function-space LR is from the exact value, by width.

flerm_width's setting: SP ResMLP of 4 blocks on mnist1d (the paper's init; ``--init abc`` the parametrization's
own), Adam's first step at η0 = 2^-7 (the base model's best LR), batch 128.  Per width and seed, the
per-unit-LR update of every weight matrix is measured on one batch of the same size two ways: exactly
(``exact_fslr``, forward mode) and as FLeRM estimates it at step 0 (``kronecker`` statistics averaged over 41
draws of the random output functional; ``full_cov``, unbiased, with as many).
Prints estimate / exact per tensor (median and range over seeds).  FLeRM sets lr_mult = base / estimate, so a
ratio r at the wide model and r0 at the base width leave its LRs r0/r times what exact matching would set.
Usage: python scripts/check_fslr_estimator.py [--widths 32,128,512] [--seeds 4] [--init flerm_resmlp]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from lrtransfer.data import default_cache_dir, load_mnist1d
from lrtransfer.fslr import estimate_fslr, exact_fslr
from lrtransfer.models import ResMLP
from lrtransfer.optim import build_optimizer

LR, BATCH, DRAWS = 2 ** -7, 128, 41


def first_step_update(width: int, seed: int, data, init: str) -> tuple[ResMLP, dict[str, torch.Tensor], torch.Tensor]:
    """A width-``width`` model at init, its first Adam update per unit LR, and a batch it did not train on."""
    torch.manual_seed(seed)
    model = ResMLP(data.in_dim, data.out_dim, width, 4, base_width=32, base_depth=4, param="sp", init=init)
    optimizer = build_optimizer(model, "adam", LR)
    gen = torch.Generator().manual_seed(seed)
    x, y = data.batch(gen, BATCH)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data.loss(model(x), y).backward()
    optimizer.step()
    update = {n: (p.detach() - before[n]) / LR for n, p in model.named_parameters() if n.endswith("weight")}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(before[n])
    return model, update, data.batch(gen, BATCH)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="32,128,512")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--init", default="flerm_resmlp", choices=ResMLP.INITS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_mnist1d(4000, 1000, default_cache_dir())
    ratios: dict[tuple[str, int], dict[str, list[float]]] = {}
    for width in [int(w) for w in args.widths.split(",")]:
        for seed in range(args.seeds):
            model, update, batch = first_step_update(width, seed, data, args.init)
            exact = exact_fslr(model, batch, update)
            for method in ("kronecker", "full_cov"):
                estimate = estimate_fslr(model, batch, update, DRAWS, method,
                                         generator=torch.Generator().manual_seed(seed))
                for name in update:
                    ratios.setdefault((method, width), {}).setdefault(name, []).append(estimate[name] / exact[name])
    names = list(next(iter(ratios.values())))
    print(f"estimate / exact first-step function-space LR (init {args.init}, {DRAWS} draws, one batch of {BATCH}, "
          f"{args.seeds} seeds: median [min, max])\n")
    print("| estimator | width | " + " | ".join(names) + " |")
    print("| --- | ---: |" + " ---: |" * len(names))
    for (method, width), per_name in ratios.items():
        cells = [f"{np.median(v):.3f} [{min(v):.2f}, {max(v):.2f}]" for v in per_name.values()]
        print(f"| {method} | {width} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
