"""The report figures (matplotlib, Agg): each function draws one PNG from already-selected runs."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import matplotlib

matplotlib.use("Agg")  # headless: CI, cluster nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .runs import RunRecord  # noqa: E402

Series = Mapping[str, tuple[np.ndarray, np.ndarray]]  # label -> (x, y)


def _panels(n: int, width: float = 4.2, height: float = 3.4):
    """n panels in a row; with nothing to draw, one panel that says so (a report never lacks its figure)."""
    fig, axes = plt.subplots(1, max(n, 1), figsize=(width * max(n, 1), height), squeeze=False)
    if n == 0:
        axes[0][0].text(0.5, 0.5, "no finished runs", ha="center", va="center")
        axes[0][0].set_axis_off()
    return fig, list(axes[0])


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def loss_vs_lr(path: Path, groups: Mapping[str, list[RunRecord]], scale_key: Callable[[RunRecord], float],
               scale_label: str, ylabel: str = "final train loss") -> str:
    """One panel per group; a curve per scale over log2(η0); diverged runs as crosses on the top edge; where a
    point is a seed mean, its seeds as faint dots (the spread the seed mean hides)."""
    fig, axes = _panels(len(groups))
    for ax, (group, runs) in zip(axes, groups.items()):
        scales = sorted({scale_key(r) for r in runs})
        colours = plt.cm.viridis(np.linspace(0, 0.9, max(len(scales), 1)))
        finite = [r.final_loss for r in runs if not r.diverged and np.isfinite(r.final_loss)]
        # show every curve around its minimum, without letting a few huge losses flatten the rest
        minima = [min((r.final_loss for r in runs if scale_key(r) == s and not r.diverged), default=np.nan) for s in scales]
        top = min(max(finite), 1.6 * np.nanmax(minima)) * 1.05 if finite else 1.0
        for colour, s in zip(colours, scales):
            pts = sorted((r.lr, r.final_loss, r.diverged) for r in runs if scale_key(r) == s)
            ok = [(lr, loss) for lr, loss, d in pts if not d]
            if ok:
                ax.plot(*zip(*ok), "o-", color=colour, label=f"{scale_label} {s:g}", ms=4)
            seeds = [(r.lr, seed.final_loss) for r in runs if scale_key(r) == s and not r.diverged
                     for seed in getattr(r, "seeds", ())]
            if seeds:
                ax.plot(*zip(*seeds), ".", color=colour, alpha=0.45, ms=4)
            bad = [lr for lr, _, d in pts if d]
            if bad:
                ax.plot(bad, [top] * len(bad), "x", color=colour, ms=8, mew=2, clip_on=False)
        ax.set_xscale("log", base=2)
        ax.set_title(group)
        ax.set_xlabel("base learning rate η0")
        ax.set_ylabel(ylabel + " (× on top: diverged)")
        if finite:
            ax.set_ylim(min(finite) * 0.95, top)
        if scales:
            ax.legend(fontsize=7)
    return _save(fig, path)


def trajectories(path: Path, panels: Mapping[str, Series], ylabel: str, *, hlines: Mapping[str, float] | None = None,
                 logy: bool = False, xlabel: str = "step", logx: bool = False,
                 references: Mapping[str, Series] | None = None) -> str:
    """One panel per key of ``panels``, a line per series; optional dashed reference lines per panel: a
    horizontal one (``hlines``) or curves (``references``)."""
    fig, axes = _panels(len(panels))
    for ax, (title, series) in zip(axes, panels.items()):
        colours = plt.cm.viridis(np.linspace(0, 0.9, max(len(series), 1)))
        for colour, (label, (x, y)) in zip(colours, series.items()):
            ax.plot(x, y, "o-", color=colour, label=label, ms=3)
        for label, (x, y) in ((references or {}).get(title) or {}).items():
            ax.plot(x, y, "--", color="red", lw=1, label=label)
        if hlines and title in hlines:
            ax.axhline(hlines[title], color="red", ls="--", lw=1, label=f"{hlines[title]:g}")
        if logy:
            ax.set_yscale("log")
        if logx:
            ax.set_xscale("log", base=2)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    return _save(fig, path)


def stacked_shares(path: Path, panels: Mapping[str, Mapping[str, np.ndarray]], steps: Mapping[str, np.ndarray]) -> str:
    """Per panel, each tensor's (or group's) share of the total function-space LR over steps, stacked to 1."""
    fig, axes = _panels(len(panels), width=5.5)
    for ax, (title, values) in zip(axes, panels.items()):
        names = list(values)
        stack = np.array([values[n] for n in names])
        shares = stack / stack.sum(axis=0, keepdims=True)
        ax.stackplot(steps[title], shares, labels=names, colors=plt.cm.tab20(np.linspace(0, 1, len(names))))
        ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel("share of Σ function-space LR")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)


def excess_over_row_best(loss: np.ndarray) -> np.ndarray:
    """loss / (its row's smallest finite loss) − 1; NaN where the loss is not finite (diverged, no run)."""
    finite = np.where(np.isfinite(loss), loss, np.nan)
    empty = np.isnan(finite).all(axis=1, keepdims=True)
    best = np.nanmin(np.where(empty, 1.0, finite), axis=1, keepdims=True)
    return finite / best - 1.0


def grid_heatmaps(path: Path, panels: Mapping[str, tuple[list[float], list[float], np.ndarray]], scale_label: str) -> str:
    """Per panel a (scale × LR) grid of final losses (inf: diverged, NaN: no run), each cell coloured by how far it
    lies above its row's best (relative, log colour scale from 0.1% to 100%) and labelled with its loss; each
    row's best LR is boxed.  Colouring by the row's own best keeps every row readable when the widths' losses
    differ by far more than the LRs' (an absolute scale painted all but the widest row one colour)."""
    fig, axes = _panels(len(panels), width=5.0, height=0.9 + 0.55 * max((len(v[0]) for v in panels.values()), default=3))
    norm = matplotlib.colors.LogNorm(vmin=1e-3, vmax=1.0, clip=True)
    cmap = plt.cm.magma_r.with_extremes(bad="0.85")
    for ax, (title, (scales, lrs, loss)) in zip(axes, panels.items()):
        excess = excess_over_row_best(loss)
        im = ax.imshow(np.ma.masked_invalid(np.clip(excess, norm.vmin, None)), aspect="auto", cmap=cmap, norm=norm)
        for (i, j), value in np.ndenumerate(loss):
            if np.isinf(value):
                ax.text(j, i, "×", ha="center", va="center", fontsize=10, color="0.35")
            elif np.isfinite(value):
                dark = excess[i, j] > 0.1  # light text on the dark end of the colour scale
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=6, color="white" if dark else "black")
        for i, row in enumerate(excess):
            if np.isfinite(row).any():
                j = int(np.nanargmin(row))
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="cyan", lw=2))
        ax.set_xticks(range(len(lrs)), [f"{np.log2(x):g}" for x in lrs], fontsize=7)
        ax.set_yticks(range(len(scales)), [f"{s:g}" for s in scales])
        ax.set_xlabel("log2 η0")
        ax.set_ylabel(scale_label)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046, label="loss / row's best − 1")
    return _save(fig, path)
