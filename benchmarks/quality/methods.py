"""The optimizers compared, as data: optax baselines, hypergradient descent, lrr_optax, LR-free.

A :class:`Method` is a small frozen record; :func:`build` turns it and a vector of traced
hyperparameters ``hp = (learning rate, top rate)`` into an optax transformation, so that one
compiled program serves a method's whole grid (vmapped). A variant of ``lrr_optax`` is one
line in :data:`VARIANTS`, or ``--variant name:key=value,...`` on the command line.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import numpy as np
import optax
from optax import contrib

import lrr_optax

QUICK_LRS = tuple(10.0**e for e in range(-6, 2))  # 1e-6 … 10, decades
FULL_LRS = tuple(10.0 ** (e / 2) for e in range(-12, 3))  # 1e-6 … 10, half decades
DEMO_LRS = (1e-6, 1e-4, 1e-2, 1.0)  # the initial rates of the demo's headline
ORDER_TOPS = tuple(10.0**e for e in range(-6, 1))  # top rates of the order study
ORDER_LRS = (1e-5, 1e-1)  # initial learning rates the order study starts from
BAYDIN_BETA = {"sgd": 1e-3, "adam": 1e-7}  # the hypergradient rates of Baydin et al.
ALIASES = {"sgd": lrr_optax.lrr_sgd, "adam": lrr_optax.lrr_adam}

LrMode = Literal["tuned", "swept", "default"]


@dataclasses.dataclass(frozen=True)
class Method:
    """One optimizer of the comparison.

    ``family`` says which factory builds it and where the report puts it: ``"optax"``
    (``optax.sgd`` / ``optax.adam``), ``"lr-free"`` (the ``optax.contrib`` optimizer named
    ``contrib``), anything else (``"default"``, ``"hd"``, ``"lrr"``, ``"variant"``,
    ``"order"``) ``lrr_optax.lrr_sgd`` / ``lrr_adam``. ``options`` are the factory's keyword
    arguments. ``lr``: ``"tuned"`` reports the best of the learning-rate grid (a baseline
    someone tuned), ``"swept"`` treats every initial rate as a use case (the point of
    ``lrr``: the worst over the range counts), ``"default"`` runs the optimizer's own default
    once. ``lrs`` overrides the mode's grid; ``tops``, for the order study, traces the top
    rate (the last entry of ``options["rates"]``) over these values too.
    """

    name: str
    family: str
    direction: str = "adam"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    lr: LrMode = "swept"
    contrib: str = ""
    lrs: tuple[float, ...] = ()
    tops: tuple[float, ...] = ()

    @property
    def order(self) -> int | None:
        if self.family in ("optax", "lr-free"):
            return None
        return len(self.options.get("rates", lrr_optax.DEFAULT_RATES))

    def grid(self) -> np.ndarray:
        """(points, 2): the initial learning rate and the top rate (NaN when not traced)."""
        if self.tops:
            return np.asarray([(lr, top) for lr in self.lrs for top in self.tops], np.float32)
        lrs = self.lrs or (math.nan,)
        return np.asarray([(lr, math.nan) for lr in lrs], np.float32)


class Contrib(NamedTuple):
    """An LR-free optimizer of ``optax.contrib`` and how the runner must drive it."""

    build: Callable[[Any], optax.GradientTransformationExtraArgs]  # learning rate -> tx
    default_lr: float
    needs_value: bool = False  # update needs value=loss (Polyak-type methods)
    eval_params: Callable[[Any, Any], Any] | None = None  # (state, params) -> scored params


CONTRIB: dict[str, Contrib] = {
    "prodigy": Contrib(contrib.prodigy, 1.0),
    "dadapt_adamw": Contrib(contrib.dadapt_adamw, 1.0),
    "dog": Contrib(contrib.dog, 1.0),
    "mechanize": Contrib(lambda lr: contrib.mechanize(optax.adam(lr)), 1.0),
    "cocob": Contrib(lambda lr: optax.with_extra_args_support(contrib.cocob(lr)), 1.0),
    "schedule_free_adamw": Contrib(
        contrib.schedule_free_adamw, 2.5e-3, eval_params=contrib.schedule_free_eval_params
    ),
    "momo_adam": Contrib(contrib.momo_adam, 1e-2, needs_value=True),
}


def build(method: Method, hp) -> optax.GradientTransformationExtraArgs:
    """The transformation of ``method`` at hyperparameters ``hp`` (possibly traced)."""
    lr, top = hp[0], hp[1]
    if method.family == "optax":
        return getattr(optax, method.direction)(lr, **method.options)
    if method.family == "lr-free":
        spec = CONTRIB[method.contrib]
        return spec.build(spec.default_lr if method.lr == "default" else lr * spec.default_lr)
    options = dict(method.options)
    if method.tops:
        rates = options.get("rates", lrr_optax.DEFAULT_RATES)
        options["rates"] = (*rates[:-1], top)
    return ALIASES[method.direction](lr, **options)


def needs_value(method: Method) -> bool:
    return method.family == "lr-free" and CONTRIB[method.contrib].needs_value


def eval_params(method: Method):
    spec = CONTRIB.get(method.contrib) if method.family == "lr-free" else None
    return (spec and spec.eval_params) or (lambda state, params: params)


def records_rates(method: Method) -> bool:
    """Whether the state is a ``LearningRateRatesState`` whose rates the runner logs."""
    return method.family not in ("optax", "lr-free")


# --- the methods of the suite ---------------------------------------------------------------


def library_rates(order: int, top: float | None = None) -> tuple:
    """The default rates stretched or cut to ``order`` ≥ 1, optionally with a new top.

    The default initial rates below the top are kept and the new intermediate orders start
    at the default top rate, so order m + 1 is order m with its top rate made adaptive.
    """
    defaults = tuple(lrr_optax.DEFAULT_RATES)
    lower = (defaults[:-1] + (defaults[-1],) * order)[: order - 1]
    return (*lower, defaults[-1] if top is None else top)


# Variants of the defaults at order 2, run in both directions: one line each.
VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "additive (original)",
        {"rule": "additive", "rates": (1e-3, 1e-5), "granularity": "parameter", "clip": None},
    ),
    ("normalized", {"rule": "normalized", "rates": (1e-3, 1e-3), "clip": 1.0}),
    ("per-parameter", {"granularity": "parameter"}),
)
FULL_ONLY = ("per-parameter",)  # kept out of quick mode to fit its time budget
DIRECTIONS = ("sgd", "adam")


def baselines() -> list[Method]:
    hd = {"granularity": "global", "bounds": None}
    return [
        Method("sgd", "optax", "sgd", lr="tuned"),
        Method("adam", "optax", "adam", lr="tuned"),
        *(Method(f"{d}-hd", "hd", d, {"rates": (BAYDIN_BETA[d],), **hd}) for d in DIRECTIONS),
    ]


def defaults() -> list[Method]:
    """The library exactly as shipped: only the initial learning rate is given."""
    return [Method(f"lrr_{d} (defaults)", "default", d) for d in DIRECTIONS]


def orders_and_schedules(orders=(1, 2, 3)) -> list[Method]:
    """The defaults at other orders and with the cascade schedule."""
    methods = []
    for direction in DIRECTIONS:
        for order in orders:
            for schedule in lrr_optax.SCHEDULES if order > 1 else ("simultaneous",):
                if order == len(lrr_optax.DEFAULT_RATES) and schedule == "simultaneous":
                    continue  # that is the default itself
                tag = f"lrr-{direction} m{order}" + (" casc" if schedule == "cascade" else "")
                options = {"rates": library_rates(order), "schedule": schedule}
                methods.append(Method(tag, "lrr", direction, options))
    return methods


def variants(full: bool = True) -> list[Method]:
    return [
        Method(f"lrr-{direction} {name}", "lrr", direction, dict(options))
        for direction in DIRECTIONS
        for name, options in VARIANTS
        if full or name not in FULL_ONLY
    ]


def lr_free(sweep: bool = False) -> list[Method]:
    """optax.contrib's learning-rate-free optimizers at their defaults.

    With ``sweep`` they are also run over a grid of multiples of their default rate.
    """
    methods = [Method(name, "lr-free", lr="default", contrib=name) for name in CONTRIB]
    if sweep:
        lrs = (1e-2, 1e-1, 1.0, 10.0, 100.0)
        methods += [
            Method(f"{name} (lr sweep)", "lr-free", lr="tuned", contrib=name, lrs=lrs)
            for name in CONTRIB
        ]
    return methods


def order_study(orders=(1, 2, 3, 4)) -> list[Method]:
    """The defaults at order m, over a grid of top rates × initial learning rates."""
    return [
        Method(
            f"order m{order} {direction}",
            "order",
            direction,
            {"rates": library_rates(order)},
            lrs=ORDER_LRS,
            tops=ORDER_TOPS,
        )
        for direction in DIRECTIONS
        for order in orders
    ]


def with_lrs(methods: list[Method], lrs) -> list[Method]:
    """Give the initial-learning-rate grid to the methods that have none of their own."""
    return [
        m if m.lrs or m.lr == "default" else dataclasses.replace(m, lrs=tuple(lrs)) for m in methods
    ]


# --- variants from the command line -------------------------------------------------------


def _split(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _value(text: str) -> Any:
    """A Python literal; ``a/b`` as a tuple (``none`` and empty as None); else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    if "/" in text:
        return tuple(
            None if v.strip().lower() in ("", "none") else _value(v) for v in text.split("/")
        )
    return None if text.lower() == "none" else text


def _check(options: dict[str, Any]) -> None:
    """Reject unknown keys and option values before any worker starts."""
    parameters = inspect.signature(lrr_optax.learning_rate_rates).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        unknown = set(options) - set(parameters) - {"learning_rate"}
        if unknown:
            raise ValueError(f"unknown lrr_optax option(s) {sorted(unknown)}")
    allowed = {
        "rule": lrr_optax.RULES,
        "schedule": lrr_optax.SCHEDULES,
        "granularity": lrr_optax.GRANULARITIES,
    }
    for key, names in allowed.items():
        values = options.get(key, names[0])
        for value in values if isinstance(values, (tuple, list)) else (values,):
            if value not in names:
                raise ValueError(f"{key}={value!r} is not one of {names}")


def parse_variant(spec: str) -> Method:
    """An lrr method from ``name:key=value,key=value`` (values Python literals).

    ``direction`` (``sgd`` or ``adam``, default ``adam``) picks ``lrr_sgd`` or ``lrr_adam``;
    every other key is a keyword argument of it. Without ``name:`` the spec is the name.
    Strings need no quotes; ``rates=(0.3,0.01)`` and ``rates=0.3/0.01`` are the same.
    """
    name, sep, body = spec.partition(":")
    if not sep or "=" in name:
        name, body = spec, spec
    options = {}
    for item in _split(body):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"{item!r} in variant {spec!r} is not key=value")
        options[key.strip()] = _value(value.strip())
    direction = options.pop("direction", "adam")
    if direction not in ALIASES:
        raise ValueError(f"direction={direction!r} is not one of {tuple(ALIASES)}")
    if isinstance(options.get("rates"), (int, float)):
        options["rates"] = (options["rates"],)
    _check(options)
    return Method(name.strip(), "variant", direction, options)
