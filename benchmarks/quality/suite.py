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


def all_methods(options: dict[str, Any]) -> list[m.Method]:
    """Every method of the mode, with its learning-rate grid, and the variants given."""
    full = options["full"]
    methods = m.baselines() + m.defaults() + m.orders_and_schedules() + m.variants(full=full)
    methods += m.lr_free(sweep=full) + m.order_study()
    methods += [m.parse_variant(spec) for spec in options.get("variants", ())]
    return m.with_lrs(methods, m.FULL_LRS if full else m.QUICK_LRS)


def problem_names(options: dict[str, Any]) -> tuple[str, ...]:
    return tuple(options.get("problems") or p.NAMES)


def jobs(options: dict[str, Any]) -> list[tuple[str, m.Method]]:
    """(problem, method) pairs. Quick mode runs the order study on the cheaper problems.

    ``options["methods"]``: keep only methods whose name starts with one of these, or is
    exactly the name after a leading ``=`` (the variants given on the command line are
    always kept). On a heavy problem quick mode runs only the core methods: tuned Adam, the
    defaults, the LR-free optimizers and the variants given on the command line.
    """
    selected = options.get("methods")
    chosen = [
        method
        for method in all_methods(options)
        if not selected
        or method.family == "variant"
        or any(_named(method.name, s) for s in selected)
    ]
    return [
        (problem, method)
        for problem in problem_names(options)
        for method in chosen
        if method.family != "order" or options["full"] or problem in ORDER_STUDY_QUICK
        if options["full"] or problem not in p.HEAVY or _core(method)
    ]


def _named(name: str, selector: str) -> bool:
    # "=adam" is Adam alone, where "adam" also selects "adam-hd".
    return name == selector[1:] if selector.startswith("=") else name.startswith(selector)


def _core(method: m.Method) -> bool:
    return method.family in ("default", "lr-free", "variant") or (
        method.family == "optax" and method.direction == "adam"
    )
