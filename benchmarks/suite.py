"""Which problems and methods a run covers, by mode, and the jobs that make it up."""

from __future__ import annotations

from typing import Any

from . import methods as m
from . import problems as p

_PROBLEMS: dict[str, p.Problem] = {}
ORDER_STUDY_QUICK = ("quadratic_deep", "noisy_quadratic", "rosenbrock", "logreg_digits")


def build_problem(name: str) -> p.Problem:
    if name not in _PROBLEMS:
        _PROBLEMS[name] = p.BUILDERS[name]()
    return _PROBLEMS[name]


def parse_spec(spec: str) -> m.Method:
    """An lrr method from ``key=value`` pairs, e.g. ``direction=adam,rates=1e-1/1e-2,clip=1``.

    Keys: direction (sgd | adam), rates (``/``-separated), rule, schedule, granularity,
    clip, bounds (``lo/hi``, ``none`` for no bounds), normalizer_decay. For exploring.
    """
    options: dict[str, Any] = {}
    direction = "sgd"
    for item in spec.split(","):
        key, value = item.split("=", 1)
        if key == "direction":
            direction = value
        elif key == "rates":
            options["rates"] = tuple(float(v) for v in value.split("/")) if value else ()
        elif key in ("clip", "normalizer_decay"):
            options[key] = float(value)
        elif key == "bounds":
            options[key] = (
                None
                if value == "none"
                else tuple(None if v == "" else float(v) for v in value.split("/"))
            )
        elif key == "granularity" and "/" in value:
            options[key] = tuple(value.split("/"))
        else:
            options[key] = value
    return m.Method(spec, m.lrr(direction, **options), "lrr", None, records_etas=True)


def all_methods(options: dict) -> list[m.Method]:
    full = options["full"]
    lrs = m.FULL_LRS if full else m.QUICK_LRS
    methods = m.baselines() + m.defaults() + m.lrr_variants(full=full) + m.lr_free(sweep=full)
    methods += m.order_study()
    methods += [parse_spec(spec) for spec in options.get("specs", ())]
    return m.with_grid(methods, lrs)


def find_method(name: str, options: dict) -> m.Method:
    for method in all_methods(options):
        if method.name == name:
            return method
    raise KeyError(name)


def problem_names(options: dict) -> tuple[str, ...]:
    return options.get("problems") or (p.FULL if options["full"] else p.QUICK)


def jobs(options: dict) -> list[tuple[str, str]]:
    """(problem, method) pairs. Quick mode runs the order study on the cheaper problems."""
    selected = options.get("methods")
    chosen = [
        method
        for method in all_methods(options)
        if not selected
        or method.name in options.get("specs", ())
        or any(method.name.startswith(s) for s in selected)
    ]
    return [
        (problem, method.name)
        for problem in problem_names(options)
        for method in chosen
        if method.family != "order" or options["full"] or problem in ORDER_STUDY_QUICK
    ]
