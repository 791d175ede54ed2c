"""The results files: raw JSON, a markdown summary and the figures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from . import metrics
from .methods import ORDER_LRS

DEFAULT_METHODS = ("lrr (defaults)", "lrr_adam (defaults)")


def _fmt(value, digits=2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}e}" if abs(value) < 1e-2 or abs(value) >= 1e3 else f"{value:.3g}"


def score(results: list[dict]) -> dict[str, Any]:
    scores = {}
    for problem, methods in metrics.by_problem(results).items():
        s = metrics.score_problem(methods)
        s["order_study"] = metrics.order_study(methods)
        s["goal"] = {name: metrics.goal(s, name) for name in DEFAULT_METHODS}
        scores[problem] = s
    return scores


def markdown(scores: dict[str, Any], header: str) -> str:
    problems = list(scores)
    lines = [header, ""]
    lines += _goal_table(scores, problems)
    lines += _overview(scores, problems)
    lines += _order_table(scores, problems)
    for problem in problems:
        lines += _problem_table(problem, scores[problem])
    return "\n".join(lines) + "\n"


def _goal_table(scores, problems) -> list[str]:
    lines = [
        "## The goal: the defaults, untouched, at every initial learning rate 1e-6 … 1",
        "",
        "Worst seed-median final train loss over the initial learning rates 1e-6 … 1 (and "
        "over 1e-6 … 1e-2), divided by grid-tuned Adam's best final loss: the goal is at "
        "most 2 (✓). Then how many of the learning-rate-free optimizers, at their defaults, "
        "end above that worst case (1e-6 … 1 / 1e-6 … 1e-2).",
        "",
        "| problem | tuned Adam | "
        + " | ".join(f"{n}: worst/Adam 1e-6…1, 1e-6…1e-2; beats LR-free" for n in DEFAULT_METHODS)
        + " |",
        "|---" * (2 + len(DEFAULT_METHODS)) + "|",
    ]
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
                f"{_fmt(g['worst_over_adam'])} {marks[0]}, {_fmt(g['low_over_adam'])} "
                f"{marks[1]}; {g['beats_lr_free_worst']}/{g['lr_free']}, "
                f"{g['beats_lr_free_low']}/{g['lr_free']}"
            )
        lines.append(f"| {problem} | {_fmt(s['adam_best'])} | " + " | ".join(cells) + " |")
    return lines + [""]


def _overview(scores, problems) -> list[str]:
    names: list[str] = []
    for problem in problems:
        for name in scores[problem]["methods"]:
            if name not in names:
                names.append(name)
    lines = [
        "## Best final train loss (sensitivity width in decades)",
        "",
        "Seed median at the best initial learning rate of the grid; LR-free methods at "
        "their defaults. Width: decades of initial learning rate within 2x of the "
        "problem's best.",
        "",
        "| method | " + " | ".join(problems) + " |",
        "|---" * (1 + len(problems)) + "|",
    ]
    for name in names:
        cells = []
        for problem in problems:
            row = scores[problem]["methods"].get(name)
            if row is None:
                cells.append("")
                continue
            w = "" if row["width"] is None else f" ({row['width']:g})"
            cells.append(_fmt(row["final"]) + w)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def _order_table(scores, problems) -> list[str]:
    if not any(scores[p]["order_study"] for p in problems):
        return []
    lines = [
        "## Order study: decades of top rate within 2x of the best",
        "",
        "The defaults at order m (the new intermediate rates start at the default top "
        "rate), top rate "
        "swept over 1e-6 … 1, from initial learning rates "
        + " and ".join(f"{lr:g}" for lr in ORDER_LRS)
        + " (shown as `a / b`). Within 2x of the best final loss of the whole study "
        "(every order, top rate and initial rate of that direction).",
        "",
        "| problem | direction | m=1 | m=2 | m=3 | m=4 |",
        "|---|---|---|---|---|---|",
    ]
    for problem in problems:
        for direction, orders in scores[problem]["order_study"].items():
            cells = [" / ".join(f"{w:g}" for w in orders.get(f"m{m}", [])) for m in range(1, 5)]
            lines.append(f"| {problem} | {direction} | " + " | ".join(cells) + " |")
    return lines + [""]


def _problem_table(problem, s) -> list[str]:
    lines = [
        f"## {problem}",
        "",
        f"Best final train loss of any method: {_fmt(s['best'])}; tuned Adam: "
        f"{_fmt(s['adam_best'])}.",
        "",
        "| method | best lr | final train loss | test | width | at default lr | "
        "worst lr in 1e-6…1 | worst lr in 1e-6…1e-2 | steps to 1.5x Adam | diverged |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in s["methods"].items():
        width = "—" if r["width"] is None else f"{r['width']:g}"
        lines.append(
            f"| {name} | {_fmt(r['best_lr'], 0)} | {_fmt(r['final'])} | {_fmt(r['test'])} | "
            f"{width} | {_fmt(r['at_default'])} | {_fmt(r['worst_in_range'])} | "
            f"{_fmt(r['worst_in_low'])} | "
            f"{_fmt(r['steps_to_adam'])} | {r['diverged']}/{r['runs']} |"
        )
    return lines + [""]


def write_json(path: Path, meta: dict, results: list[dict], scores: dict) -> None:
    def rounded(value):
        if isinstance(value, float):
            return float(f"{value:.5g}") if math.isfinite(value) else str(value)
        if isinstance(value, list):
            return [rounded(v) for v in value]
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        return value

    payload = {"meta": meta, "scores": scores, "results": results}
    path.write_text(json.dumps(rounded(payload), separators=(",", ":")))


def plots(results: list[dict], scores: dict, directory: Path, prefix: str) -> list[Path]:
    from . import figures

    return figures.all_figures(metrics.by_problem(results), scores, directory, prefix)
