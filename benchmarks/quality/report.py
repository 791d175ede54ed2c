"""The results of a quality run: the markdown report, the compact summary and the figures.

The raw results (every loss curve of every run) go to the ignored cache; what is committed
is the report, the summary (scores only, a few tens of KB) and the figures.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .._common import compact, fmt, fmt_ratio, table
from . import metrics
from .methods import ORDER_LRS

DEFAULT_METHODS = ("lrr_sgd (defaults)", "lrr_adam (defaults)")
ROLES = {
    "choose": "Problems the defaults were chosen on",
    "confirm": "Held-out problems (not used to choose the defaults)",
}


def score(results: list[dict], roles: dict[str, str] | None = None) -> dict[str, Any]:
    """Scores per problem; ``roles`` maps a problem to ``"choose"`` or ``"confirm"``."""
    scores = {}
    for problem, methods in metrics.by_problem(results).items():
        s = metrics.score_problem(methods)
        s["role"] = (roles or {}).get(problem, "choose")
        s["order_study"] = metrics.order_study(methods)
        s["goal"] = {name: metrics.goal(s, name) for name in DEFAULT_METHODS}
        scores[problem] = s
    return scores


def markdown(scores: dict[str, Any], header: str) -> str:
    lines = [header, ""]
    for role, title in ROLES.items():
        problems = [p for p in scores if scores[p].get("role", "choose") == role]
        if not problems:
            continue
        lines += [f"## {title}", ""]
        lines += _goal_table(scores, problems)
        lines += _overview(scores, problems)
    lines += _lr_free_table(scores)
    lines += _order_table(scores, list(scores))
    for problem in scores:
        lines += _problem_table(problem, scores[problem])
    return "\n".join(lines) + "\n"


def _goal_table(scores, problems) -> list[str]:
    lines = [
        "### The goal: the defaults, untouched, at every initial learning rate 1e-6 … 1",
        "",
        "Worst seed-median final train loss over the initial learning rates 1e-6 … 1 (and "
        "over 1e-6 … 1e-2), divided by grid-tuned Adam's best final loss: the goal is at "
        "most 2 (✓). Then how many of the learning-rate-free optimizers, at their defaults, "
        "end above that worst case (1e-6 … 1 / 1e-6 … 1e-2).",
        "",
    ]
    headers = ["problem", "tuned Adam"] + [
        f"{n}: worst/Adam 1e-6…1, 1e-6…1e-2; beats LR-free" for n in DEFAULT_METHODS
    ]
    rows = []
    for problem in problems:
        s = scores[problem]
        cells = []
        for name in DEFAULT_METHODS:
            g = s["goal"].get(name)
            if not g:
                cells.append("—")
                continue
            marks = ["✓" if g[k] else "✗" for k in ("met", "low_met")]
            cells.append(
                f"{fmt(g['worst_over_adam'])} {marks[0]}, {fmt(g['low_over_adam'])} "
                f"{marks[1]}; {g['beats_lr_free_worst']}/{g['lr_free']}, "
                f"{g['beats_lr_free_low']}/{g['lr_free']}"
            )
        rows.append([problem, fmt(s["adam_best"]), *cells])
    return lines + table(headers, rows) + [""]


def _lr_free_table(scores) -> list[str]:
    tallies = {name: metrics.lr_free_wins(scores, name) for name in DEFAULT_METHODS}
    others = list(dict.fromkeys(o for t in tallies.values() for o in t))
    if not others:
        return []
    lines = [
        "### The defaults' worst case against each learning-rate-free optimizer",
        "",
        "On how many problems (all roles) the worst seed-median final loss over the initial "
        "rates 1e-6 … 1 is below the optimizer's at its defaults.",
        "",
    ]
    rows = [
        [name] + [f"{t[o][0]}/{t[o][1]}" if o in t else "—" for o in others]
        for name, t in tallies.items()
    ]
    return lines + table(["defaults", *others], rows) + [""]


def _cell(row: dict) -> str:
    """Final loss, ↑ the largest loss after the best point, (width in decades)."""
    if row["lr_mode"] == "swept" and row["worst_final"] is not None:
        final, late = row["worst_final"], row["worst_late_max"]
        text = f"{fmt(final)} ↑{fmt(late)} @{fmt(row['worst_lr'], 0)}"
    else:
        text = f"{fmt(row['final'])} ↑{fmt(row['late_max'])}"
    return text + ("" if row["width"] is None else f" ({row['width']:g})")


def _overview(scores, problems) -> list[str]:
    names: list[str] = []
    for problem in problems:
        for name in scores[problem]["methods"]:
            if name not in names:
                names.append(name)
    lines = [
        "### Final train loss ↑ late maximum (sensitivity width in decades)",
        "",
        "Seed medians. Methods whose learning rate is *tuned* (optax's): at the best initial "
        "learning rate of the grid. Methods whose initial rate is *swept* (lrr_optax's): at "
        "the worst initial rate in 1e-6 … 1 (`@`). LR-free methods: at their defaults. "
        "↑: the largest loss after the run's best point (a late spike when above the final "
        "loss; curves are sampled at 20 points). Width: decades of initial learning rate "
        "within 2x of the problem's best.",
        "",
    ]
    rows = []
    for name in names:
        cells = []
        for problem in problems:
            row = scores[problem]["methods"].get(name)
            cells.append("" if row is None else _cell(row))
        rows.append([name, *cells])
    return lines + table(["method", *problems], rows) + [""]


def _order_table(scores, problems) -> list[str]:
    if not any(scores[p]["order_study"] for p in problems):
        return []
    lines = [
        "## Order study: decades of top rate within 2x of the best",
        "",
        "The defaults at order m (the new intermediate rates start at the default top "
        "rate), top rate swept over 1e-6 … 1, from initial learning rates "
        + " and ".join(f"{lr:g}" for lr in ORDER_LRS)
        + " (shown as `a / b`). Within 2x of the best final loss of the whole study "
        "(every order, top rate and initial rate of that direction).",
        "",
    ]
    rows = []
    for problem in problems:
        for direction, orders in scores[problem]["order_study"].items():
            cells = [" / ".join(f"{w:g}" for w in orders.get(f"m{m}", [])) for m in range(1, 5)]
            rows.append([problem, direction, *cells])
    headers = ["problem", "direction", "m=1", "m=2", "m=3", "m=4"]
    return lines + table(headers, rows) + [""]


def _problem_table(problem, s) -> list[str]:
    lines = [
        f"## {problem} ({s.get('role', 'choose')})",
        "",
        f"Best final train loss of any method: {fmt(s['best'])}; tuned Adam: "
        f"{fmt(s['adam_best'])}.",
        "",
    ]
    headers = [
        "method",
        "best lr",
        "final train loss",
        "late max",
        "test",
        "width",
        "at default lr",
        "worst lr in 1e-6…1 (late max)",
        "worst lr in 1e-6…1e-2",
        "steps to 1.5x Adam",
        "diverged",
        f"above {metrics.HIDDEN:g}x the seed median",
        f"learned, then lost (below {metrics.LEARNED:g}x, then above {metrics.LOST:g}x the "
        "initial loss)",
    ]
    rows = []
    for name, r in s["methods"].items():
        worst = fmt(r["worst_in_range"])
        if r.get("worst_late_max") is not None:
            worst += f" ({fmt(r['worst_late_max'])})"
        rows.append(
            [
                name,
                fmt(r["best_lr"], 0),
                fmt(r["final"]),
                fmt(r["late_max"]),
                fmt(r["test"]),
                "—" if r["width"] is None else f"{r['width']:g}",
                fmt(r["at_default"]),
                worst,
                fmt(r["worst_in_low"]),
                fmt(r["steps_to_adam"]),
                f"{r['diverged']}/{r['runs']}",
                "—" if r.get("hidden") is None else f"{r['hidden']}/{r['runs']}",
                "—" if r.get("lost") is None else f"{r['lost']}/{r['runs']}",
            ]
        )
    return lines + table(headers, rows) + [""]


def headline(scores: dict[str, Any], lrs, swept: list[str], reference: list[str]) -> str:
    """The demo's table: each swept method from each initial rate in ``lrs``, as final loss
    and ratio to tuned Adam, beside tuned Adam and the ``reference`` (LR-free) methods."""
    headers = ["problem", "method", *(f"from {lr:g}" for lr in lrs), "tuned Adam (lr)"]
    headers += reference
    rows = []
    for problem, s in scores.items():
        adam = s["methods"].get("adam")
        adam_cell = "—" if adam is None else f"{fmt(adam['final'])} ({fmt(adam['best_lr'], 0)})"
        refs = []
        for name in reference:
            r = s["methods"].get(name)
            refs.append("—" if r is None else f"{fmt(r['final'])} ({_ratio(r, s)})")
        for name in swept:
            r = s["methods"].get(name)
            if r is None:
                continue
            cells = []
            for lr in lrs:
                final, late = _at(r["by_lr"], lr)
                spike = f" ↑{fmt(late)}" if late is not None and late > 1.5 * final else ""
                cells.append(f"{fmt(final)} ({fmt_ratio(final, s['adam_best'])}){spike}")
            rows.append([f"{problem} ({s['role']})", name, *cells, adam_cell, *refs])
    return "\n".join(table(headers, rows))


def _at(by_lr: dict, lr: float) -> tuple[float | None, float | None]:
    """Final loss and late maximum at the grid's initial rate ``lr`` (None if not on it)."""
    for i, x in enumerate(by_lr["log10_lr"]):
        if abs(x - math.log10(lr)) < 1e-3:
            return by_lr["final"][i], by_lr["late_max"][i]
    return None, None


def _ratio(row, s) -> str:
    return fmt_ratio(row["final"], s["adam_best"])


def summary(meta: dict, scores: dict[str, Any]) -> dict[str, Any]:
    """What is committed beside the report: the run's metadata and its scores (to the 3
    significant digits the report shows, which keeps a full run's summary near 150 KB)."""
    return {"meta": meta, "scores": compact(scores, 3)}


def plots(results: list[dict], scores: dict, directory: Path, prefix: str) -> list[Path]:
    from . import figures

    return figures.all_figures(metrics.by_problem(results), scores, directory, prefix)
