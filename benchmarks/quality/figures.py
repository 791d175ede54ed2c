"""The PNG figures: loss against initial learning rate, loss curves, and the rates over time."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import metrics

MAIN = ("sgd", "adam", "sgd-hd", "adam-hd", "lrr_sgd (defaults)", "lrr_adam (defaults)")
STYLE = {
    "sgd": ("tab:gray", "--"),
    "adam": ("black", "--"),
    "sgd-hd": ("tab:olive", ":"),
    "adam-hd": ("tab:brown", ":"),
    "lrr_sgd (defaults)": ("tab:blue", "-"),
    "lrr_adam (defaults)": ("tab:red", "-"),
}
BAD_LR = 1e-5  # the "bad" initial learning rate of the curve and rate figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _axes(plt, n, width=4.0, height=3.2):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def _final(result):
    final = np.asarray(result["final"], float)
    return np.where(np.isfinite(final), final, np.inf)


def _clip(values, floor):
    return np.clip(values, floor, 1e12)


def _limit(ax, methods, floor):
    """Diverged runs sit on the top edge: 10x the initial loss."""
    initial = max(float(np.max(r["initial"])) for r in methods.values())
    ax.set_ylim(floor, 10 * initial)


def sensitivity(table, scores, path: Path, names=MAIN) -> None:
    """Final train loss against initial learning rate, one panel per problem (DeepOBS style)."""
    plt = _pyplot()
    fig, axes = _axes(plt, len(table))
    for ax, (problem, methods) in zip(axes, table.items()):
        floor = max(scores[problem]["best"] * 0.2, 1e-12)
        for name in names:
            if name not in methods:
                continue
            r = methods[name]
            lrs, final = metrics.lr_axis(r), _final(r)
            color, line = STYLE.get(name, (None, "-"))
            ax.plot(
                lrs, _clip(np.median(final, 1), floor), line, color=color, marker=".", label=name
            )
            ax.fill_between(
                lrs, _clip(final.min(1), floor), _clip(final.max(1), floor), color=color, alpha=0.15
            )
        free = [(n, r) for n, r in methods.items() if r["lr_mode"] == "default"]
        for k, (name, r) in enumerate(free):
            final = _final(r)[0]
            color = f"C{k % 10}"
            lo, hi = _clip(final.min(), floor), _clip(final.max(), floor)
            ax.axhspan(lo, hi * 1.02, color=color, alpha=0.25, label=name)
        ax.axhline(2 * scores[problem]["adam_best"], color="black", lw=0.5, ls=":")
        _limit(ax, methods, floor)
        ax.set(
            xscale="log",
            yscale="log",
            title=problem,
            xlabel="initial learning rate",
            ylabel="final train loss",
        )
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def variants(table, scores, path: Path) -> None:
    """Every lrr_optax variant's final loss against initial learning rate."""
    plt = _pyplot()
    fig, axes = _axes(plt, len(table))
    for ax, (problem, methods) in zip(axes, table.items()):
        floor = max(scores[problem]["best"] * 0.2, 1e-12)
        for k, (name, r) in enumerate(
            n for n in methods.items() if n[1]["family"] in ("lrr", "default", "variant")
        ):
            line = "-" if "adam" not in name else "--"
            ax.plot(
                metrics.lr_axis(r),
                _clip(metrics.medians(r), floor),
                line,
                color=f"C{k % 10}",
                lw=1,
                label=name,
            )
        _limit(ax, methods, floor)
        if "adam" in methods:
            ax.plot(
                metrics.lr_axis(methods["adam"]),
                _clip(metrics.medians(methods["adam"]), floor),
                "k:",
                lw=2,
                label="adam",
            )
        ax.set(
            xscale="log",
            yscale="log",
            title=problem,
            xlabel="initial learning rate",
            ylabel="final train loss",
        )
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", fontsize=5, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def curves(table, scores, path: Path, names=MAIN) -> None:
    """Train loss over training at tuned Adam's learning rate and at a bad one (1e-5)."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(table), 2, figsize=(9, 2.6 * len(table)), squeeze=False)
    for row, (problem, methods) in enumerate(table.items()):
        adam = methods.get("adam")
        good = metrics.lr_axis(adam)[int(np.argmin(metrics.medians(adam)))] if adam else 1e-3
        for col, lr in enumerate((good, BAD_LR)):
            ax = axes[row, col]
            for name in names:
                if name not in methods:
                    continue
                r = methods[name]
                i = int(np.argmin(np.abs(np.log10(metrics.lr_axis(r)) - math.log10(lr))))
                curve = np.median(np.asarray(r["curve"], float)[i], 0)
                color, line = STYLE.get(name, (None, "-"))
                ax.plot(r["eval_steps"], curve, line, color=color, label=name)
            for k, (name, r) in enumerate(
                n for n in methods.items() if n[1]["lr_mode"] == "default"
            ):
                ax.plot(
                    r["eval_steps"],
                    np.median(np.asarray(r["curve"], float)[0], 0),
                    color=f"C{k}",
                    lw=0.7,
                    alpha=0.6,
                    label=name,
                )
            ax.set(
                yscale="log",
                title=f"{problem}, initial lr {lr:.0e}",
                xlabel="step",
                ylabel="train loss",
            )
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", fontsize=7, ncol=5)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def rates(table, path: Path, name: str) -> None:
    """Quantiles (10/50/90 %) of each order's rates over training, for ``name``."""
    plt = _pyplot()
    problems = [p for p, m in table.items() if name in m and m[name]["etas"] is not None]
    if not problems:
        return
    fig, axes = plt.subplots(len(problems), 2, figsize=(9, 2.6 * len(problems)), squeeze=False)
    for row, problem in enumerate(problems):
        r = table[problem][name]
        lrs = metrics.lr_axis(r)
        etas = np.asarray(r["etas"], float)  # (points, seeds, evals, orders, quantiles)
        best = lrs[int(np.argmin(metrics.medians(r)))]
        for col, lr in enumerate((best, BAD_LR)):
            ax = axes[row, col]
            i = int(np.argmin(np.abs(np.log10(lrs) - math.log10(lr))))
            q = np.median(etas[i], 0)  # seed median of each quantile
            for j in range(q.shape[1]):
                if np.all(np.isnan(q[:, j, 1])):
                    continue
                ax.plot(r["eval_steps"], q[:, j, 1], color=f"C{j}", label=f"η⁽{j}⁾")
                ax.fill_between(r["eval_steps"], q[:, j, 0], q[:, j, 2], color=f"C{j}", alpha=0.2)
            ax.set(yscale="log", title=f"{problem}, initial lr {lrs[i]:.0e}", xlabel="step")
            ax.legend(fontsize=7)
    fig.suptitle(f"{name}: median and 10-90 % quantiles of each order's rates")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def all_figures(table, scores, directory: Path, prefix: str) -> list[Path]:
    paths = {
        "sensitivity": directory / f"{prefix}.png",
        "variants": directory / f"{prefix}_variants.png",
        "curves": directory / f"{prefix}_curves.png",
    }
    sensitivity(table, scores, paths["sensitivity"])
    variants(table, scores, paths["variants"])
    curves(table, scores, paths["curves"])
    written = list(paths.values())
    for name, tag in (
        ("lrr_sgd (defaults)", "sgd"),
        ("lrr_adam (defaults)", "adam"),
        ("lrr-adam m3", "adam_m3"),
    ):
        path = directory / f"{prefix}_rates_{tag}.png"
        rates(table, path, name)
        if path.exists():
            written.append(path)
    return written
