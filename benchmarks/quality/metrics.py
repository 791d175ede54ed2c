"""Scores computed from the raw results of a run (pure numpy, no jax)."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

# The learning rate each baseline is "at its default" with (Keras's SGD and Adam defaults).
DEFAULT_LR = {"sgd": 1e-2, "adam": 1e-3}
GOAL_RANGE = (1e-6, 1.0)  # initial learning rates the defaults must cope with
LOW_RANGE = (1e-6, 1e-2)  # the same without the two largest, where Adam's first steps wreck
WITHIN = 2.0  # "within 2x of the best"
DIVERGED = 1.5  # a run ending above this multiple of its initial loss diverged
HIDDEN = 10.0  # a run ending above this multiple of its grid point's seed median
LEARNED, LOST = 0.1, 0.5  # a run that fell below LEARNED × its initial loss, ended above LOST ×


def medians(result: dict) -> np.ndarray:
    """Seed-median final loss per grid point; a non-finite run counts as +inf."""
    final = np.asarray(result["final"], float)
    final = np.where(np.isfinite(final), final, np.inf)
    return np.median(final, axis=1)


def hidden_by_median(result: dict) -> np.ndarray:
    """Per run: whether it ends above ``HIDDEN`` times its grid point's seed median (or is
    not finite where the median is). A late collapse of one seed in five leaves the median,
    and every table of seed medians, unchanged. Losses below a millionth of the initial
    loss count as equal, so that a median of 0 does not make every other seed an outlier."""
    final = np.asarray(result["final"], float)
    final = np.where(np.isfinite(final), final, np.inf)
    floor = 1e-6 * np.asarray(result["initial"], float)
    median = medians(result)[:, None]
    return np.isfinite(median) & (final > np.maximum(HIDDEN * median, floor))


def lost(result: dict) -> np.ndarray:
    """Per run: whether it learned (some evaluation below ``LEARNED`` times its initial loss)
    and then lost it (ends above ``LOST`` times, or not finite): a late collapse, such as a
    network back at chance, told apart from a run that never got going."""
    initial = np.asarray(result["initial"], float)
    curve = np.asarray(result["curve"], float)
    final = curve[..., -1]
    learned = np.nanmin(np.where(np.isfinite(curve), curve, np.nan), axis=-1) < LEARNED * initial
    return learned & (~np.isfinite(final) | (final > LOST * initial))


def lr_axis(result: dict) -> np.ndarray:
    return np.asarray(result["grid"], float)[:, 0]


def by_problem(results: list[dict]) -> dict[str, dict[str, dict]]:
    table: dict[str, dict[str, dict]] = defaultdict(dict)
    for result in results:
        table[result["problem"]][result["method"]] = result
    return table


def spacing(lrs: np.ndarray) -> float:
    return float(np.median(np.diff(np.log10(lrs)))) if lrs.size > 1 else 1.0


def width(losses: np.ndarray, lrs: np.ndarray, best: float) -> float:
    """Decades of the grid whose loss is within 2x of ``best`` (each point one grid cell)."""
    return float(np.sum(losses <= WITHIN * best) * spacing(lrs))


def first_step_below(curve: np.ndarray, steps: list[int], target: float) -> int | None:
    below = np.nonzero(curve <= target)[0]
    return int(steps[below[0]]) if below.size else None


def late_max(curve: np.ndarray) -> np.ndarray:
    """The largest loss after each run's best point (the best itself when it comes last):
    a late spike. ``curve``: (..., evals); non-finite losses count as +inf."""
    curve = np.where(np.isfinite(curve), curve, np.inf)
    best = np.argmin(curve, axis=-1)[..., None]
    after = np.arange(curve.shape[-1]) >= best
    return np.max(np.where(after, curve, -np.inf), axis=-1)


def score_problem(methods: dict[str, dict]) -> dict[str, Any]:
    """Every metric of one problem, per method, plus the problem's references."""
    grid_methods = {n: r for n, r in methods.items() if r["family"] != "order"}
    best = min(float(np.min(medians(r))) for r in grid_methods.values())
    adam = methods.get("adam")
    adam_best = float(np.min(medians(adam))) if adam else math.nan
    rows = {}
    for name, result in grid_methods.items():
        med = medians(result)
        lrs = lr_axis(result)
        i = int(np.argmin(med))
        final = np.asarray(result["final"], float)
        initial = np.asarray(result["initial"], float)
        diverged = ~np.isfinite(final) | (final > DIVERGED * initial)
        curves = np.asarray(result["curve"], float)
        curve = np.median(curves[i], axis=0)
        late = np.median(late_max(curves), axis=1)
        test = np.asarray(result["test"], float)
        # The worst initial rate of the goal's range: a swept method's weakest use case.
        in_goal = (lrs >= GOAL_RANGE[0] * 0.999) & (lrs <= GOAL_RANGE[1] * 1.001)
        swept = result["lr_mode"] == "swept" and bool(in_goal.any())
        worst = int(np.argmax(np.where(in_goal, med, -np.inf))) if swept else i
        row = {
            "family": result["family"],
            "lr_mode": result["lr_mode"],
            "best_lr": float(lrs[i]) if result["lr_mode"] != "default" else None,
            "final": float(med[i]),
            "late_max": float(late[i]),
            "worst_lr": float(lrs[worst]) if swept else None,
            "worst_final": float(med[worst]) if swept else None,
            "worst_late_max": float(late[worst]) if swept else None,
            "by_lr": {
                "log10_lr": np.round(np.log10(lrs), 2).tolist(),
                "final": med.tolist(),
                "late_max": late.tolist(),
            }
            if result["lr_mode"] != "default"
            else None,
            "test": float(np.median(test[i])) if np.isfinite(test[i]).any() else None,
            "width": width(med, lrs, best) if result["lr_mode"] != "default" else None,
            "steps_to_adam": first_step_below(curve, result["eval_steps"], 1.5 * adam_best),
            "diverged": int(diverged.sum()),
            "hidden": int(hidden_by_median(result).sum()),
            "lost": int(lost(result).sum()),
            "runs": int(diverged.size),
        }
        if result["lr_mode"] == "default":
            row["at_default"] = float(med[0])
        else:
            # An LR-free optimizer's sweep is over multiples of its default rate.
            default = 1.0 if result["family"] == "lr-free" else DEFAULT_LR[result["direction"]]
            j = int(np.argmin(np.abs(np.log10(lrs) - math.log10(default))))
            row["at_default"] = float(med[j])
        for key, (lo, hi) in (("worst_in_range", GOAL_RANGE), ("worst_in_low", LOW_RANGE)):
            in_range = (lrs >= lo * 0.999) & (lrs <= hi * 1.001)
            row[key] = float(np.max(med[in_range])) if in_range.any() else None
        rows[name] = row
    return {"best": best, "adam_best": adam_best, "methods": rows}


def order_study(methods: dict[str, dict]) -> dict[str, dict[str, list[float]]]:
    """Per direction and order m: the decades of top rate whose final loss is within 2x of
    the study's best (over every order, top rate and initial rate of that direction), one
    number per initial learning rate the study starts from."""
    study = {n: r for n, r in methods.items() if r["family"] == "order"}
    out: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for direction in sorted({r["direction"] for r in study.values()}):
        runs = {f"m{r['order']}": r for r in study.values() if r["direction"] == direction}
        best = min(float(np.min(medians(r))) for r in runs.values())
        for order, result in sorted(runs.items()):
            grid = np.asarray(result["grid"], float)
            med = medians(result)
            widths = []
            for lr in sorted(set(grid[:, 1])):
                rows = grid[:, 1] == lr
                widths.append(width(med[rows], grid[rows, 0], best))
            out[direction][order] = widths
    return dict(out)


def _ratio(loss: float, reference: float) -> float:
    # Long budgets can drive tuned Adam's loss to exactly 0 in float32 on the deterministic
    # problems: a loss above it is then infinitely worse, an equal one on par.
    if reference == 0:
        return 1.0 if loss == 0 else math.inf
    return loss / reference


def goal(scores: dict[str, Any], name: str) -> dict[str, Any]:
    """How a default configuration does against the goal on one problem."""
    row = scores["methods"].get(name)
    if row is None or row["worst_in_range"] is None:
        return {}
    worst, low = row["worst_in_range"], row["worst_in_low"]
    free = [r["final"] for r in scores["methods"].values() if r["lr_mode"] == "default"]
    return {
        "worst_over_adam": _ratio(worst, scores["adam_best"]),
        "met": worst <= WITHIN * scores["adam_best"],
        "low_over_adam": _ratio(low, scores["adam_best"]),
        "low_met": low <= WITHIN * scores["adam_best"],
        "beats_lr_free_worst": sum(worst < v for v in free),
        "beats_lr_free_low": sum(low < v for v in free),
        "lr_free": len(free),
    }


def lr_free_wins(scores: dict[str, Any], name: str) -> dict[str, tuple[int, int]]:
    """For each LR-free optimizer at its defaults: on how many problems ``name``'s worst
    final loss over the initial rates 1e-6 … 1 is below the optimizer's, of how many
    problems ran both."""
    wins: dict[str, list[int]] = {}
    for s in scores.values():
        row = s["methods"].get(name)
        if row is None or row["worst_in_range"] is None:
            continue
        for other, r in s["methods"].items():
            if r["lr_mode"] == "default":
                tally = wins.setdefault(other, [0, 0])
                tally[0] += row["worst_in_range"] < r["final"]
                tally[1] += 1
    return {other: (won, total) for other, (won, total) in wins.items()}
