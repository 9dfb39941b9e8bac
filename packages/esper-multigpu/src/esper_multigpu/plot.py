"""``esper telemetry plot FILE``: the curves of a run, to PNG (matplotlib, headless).

Panels: the return of every episode with its running mean (does the controller learn?),
the final validation accuracy and the accuracy added over the paired fixed host, and
for each slot the stage it was in at every epoch of every episode (episodes down, epochs
across), so the growth policy can be read at a glance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import SLOT_NAMES
from .telemetry import STAGES, read_records


class PlotError(ValueError):
    """A telemetry file with nothing to plot."""


def _running_mean(x: np.ndarray, k: int) -> np.ndarray:
    out = np.empty_like(x)
    for i in range(len(x)):
        out[i] = x[max(0, i - k + 1) : i + 1].mean()
    return out


def plot_telemetry(path: str | Path, output: str | Path) -> dict:
    """Draw the curves of telemetry file ``path`` into ``output`` (PNG); returns a summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from parallel_core.io import atomic_write

    records = read_records(path)
    batches = [r for r in records if r.get("type") == "batch"]
    if not batches:
        raise PlotError(f"{path} has no finished batch records yet: nothing to plot")
    episodes = np.array([e for b in batches for e in b["episodes"]])
    returns = np.array([x for b in batches for x in b["returns"]])
    acc = np.array([x for b in batches for x in b["final_val_acc"]])
    added = np.array([x for b in batches for x in b["added_acc"]])
    order = np.argsort(episodes, kind="stable")
    episodes, returns, acc, added = episodes[order], returns[order], acc[order], added[order]
    n_ep, max_epoch = int(episodes.max()) + 1, 0
    stage_of: dict[str, dict[tuple[int, int], int]] = {s: {} for s in SLOT_NAMES}
    for r in records:
        # a run still going (or cut short) has slot records of a batch not finished yet
        if r.get("type") == "slot" and r["episode"] < n_ep:
            stage_of[r["slot"]][(r["episode"], r["epoch"])] = STAGES.index(r["stage"])
            max_epoch = max(max_epoch, r["epoch"])

    fig, axes = plt.subplots(
        2 + len(SLOT_NAMES), 1, figsize=(8, 3 + 2.2 * (1 + len(SLOT_NAMES))), constrained_layout=True
    )
    k = max(1, len(returns) // 10)
    ax = axes[0]
    ax.plot(episodes, returns, ".", alpha=0.5, label="episode return")
    ax.plot(episodes, _running_mean(returns, k), "-", label=f"running mean ({k})")
    ax.set_ylabel("return")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"{Path(path).name}: {len(returns)} episodes")
    ax = axes[1]
    ax.plot(episodes, acc, ".-", label="final val acc")
    ax.plot(episodes, added, ".-", label="added over fixed host")
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_ylabel("accuracy")
    ax.legend(loc="best", fontsize=8)
    cmap = plt.get_cmap("tab10", len(STAGES))
    for ax, slot in zip(axes[2:], SLOT_NAMES):
        grid = np.full((n_ep, max(max_epoch, 1)), np.nan)
        for (ep, epoch), code in stage_of[slot].items():
            grid[ep, epoch - 1] = code
        im = ax.imshow(
            grid, aspect="auto", interpolation="nearest", cmap=cmap, vmin=-0.5,
            vmax=len(STAGES) - 0.5, extent=(0.5, max_epoch + 0.5, n_ep - 0.5, -0.5),
        )  # fmt: skip
        ax.set_ylabel(f"{slot}\nepisode")
    axes[-1].set_xlabel("epoch")
    bar = fig.colorbar(im, ax=axes[2:], ticks=range(len(STAGES)))
    bar.ax.set_yticklabels(STAGES, fontsize=7)
    with atomic_write(output, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)
    first = returns[: max(1, len(returns) // 4)].mean()
    last = returns[-max(1, len(returns) // 4) :].mean()
    return {
        "file": str(path),
        "output": str(output),
        "episodes": int(len(returns)),
        "return_first_quarter": float(first),
        "return_last_quarter": float(last),
    }
