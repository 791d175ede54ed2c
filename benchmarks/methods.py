"""The optimizers compared: optax baselines, hypergradient descent, lrr_optax, LR-free ones.

Every method is built from a vector of hyperparameters ``hp`` that may be traced, so one
compiled program serves a whole grid (vmapped): ``hp[0]`` is the initial learning rate
for the grid methods, the top rate for the order study (``hp[1]`` its initial learning
rate), and unused by the learning-rate-free methods, which run at their defaults.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import optax
from optax import contrib

import lrr_optax

QUICK_LRS = tuple(10.0**e for e in range(-6, 2))  # 1e-6 … 10, decades
FULL_LRS = tuple(10.0 ** (e / 2) for e in range(-12, 3))  # 1e-6 … 10, half decades
ORDER_TOPS = tuple(10.0**e for e in range(-6, 1))  # top rates of the order study
ORDER_LRS = (1e-5, 1e-1)  # initial learning rates the order study starts from
BAYDIN_BETA = {"sgd": 1e-3, "adam": 1e-7}  # the hypergradient rates of Baydin et al.


class Method(NamedTuple):
    """An optimizer and the grid of hyperparameters it is run over."""

    name: str
    make: Callable[[Any], optax.GradientTransformationExtraArgs]  # hp -> transformation
    family: str  # "optax", "hd", "lrr", "default", "lr-free", "order"
    grid: np.ndarray  # (points, hp size)
    needs_value: bool = False  # update needs value=loss (Polyak-type methods)
    eval_params: Callable[[Any, Any], Any] | None = None  # (state, params) -> scored params
    records_etas: bool = False  # state is a LearningRateRatesState whose rates we log


ALIASES = {"sgd": lrr_optax.lrr_sgd, "adam": lrr_optax.lrr_adam}


def lrr(direction: str, **options) -> Callable[[Any], optax.GradientTransformationExtraArgs]:
    """``lrr_sgd(hp[0], **options)`` or ``lrr_adam(hp[0], **options)``: library defaults
    for every option not given."""
    return lambda hp: ALIASES[direction](hp[0], **options)


def _grid(lrs) -> np.ndarray:
    return np.asarray(lrs, np.float32)[:, None]


def default_rates(direction: str = "sgd") -> tuple:
    return tuple(inspect.signature(ALIASES[direction]).parameters["rates"].default)


def library_rates(order: int, direction: str = "sgd", top=None) -> tuple:
    """The alias's default rates stretched or cut to ``order`` ≥ 1, optionally with a new top.

    The default initial rates below the top are kept and the new intermediate orders start
    at the default top rate, so order m + 1 is order m with its top rate made adaptive.
    """
    defaults = default_rates(direction)
    lower = (defaults[:-1] + (defaults[-1],) * order)[: order - 1]
    return (*lower, defaults[-1] if top is None else top)


# Other rules, each at order 2 with its own options: how the shipped default compares.
ALTERNATIVES: dict[str, dict[str, Any]] = {
    "additive (seed)": {
        "rule": "additive",
        "rates": (1e-3, 1e-5),
        "granularity": "parameter",
        "clip": None,
    },
    "normalized": {"rule": "normalized", "rates": (1e-3, 1e-3), "clip": 1.0},
    "per-parameter": {"granularity": "parameter"},
}
FULL_ONLY = ("per-parameter",)  # kept out of quick mode to fit its time budget


def lrr_variants(orders=(1, 2, 3), directions=("sgd", "adam"), full=True) -> list[Method]:
    """The library's defaults at other orders and schedules, and with other rules."""
    methods = []
    for direction in directions:
        for order in orders:
            for schedule in ("simultaneous", "cascade") if order > 1 else ("simultaneous",):
                rates = library_rates(order, direction)
                if order == len(default_rates(direction)) and schedule == "simultaneous":
                    continue  # that is the default itself
                tag = f"lrr-{direction} m{order}" + (" casc" if schedule == "cascade" else "")
                make = lrr(direction, rates=rates, schedule=schedule)
                methods.append(Method(tag, make, "lrr", None, records_etas=True))
        for name, options in ALTERNATIVES.items():
            if full or name not in FULL_ONLY:
                make = lrr(direction, **options)
                methods.append(
                    Method(f"lrr-{direction} {name}", make, "lrr", None, records_etas=True)
                )
    return methods


def baselines() -> list[Method]:
    return [
        Method("sgd", lambda hp: optax.sgd(hp[0]), "optax", None),
        Method("adam", lambda hp: optax.adam(hp[0]), "optax", None),
        Method(
            "sgd-hd",
            lrr("sgd", rates=(BAYDIN_BETA["sgd"],), granularity="global", bounds=None),
            "hd",
            None,
            records_etas=True,
        ),
        Method(
            "adam-hd",
            lrr("adam", rates=(BAYDIN_BETA["adam"],), granularity="global", bounds=None),
            "hd",
            None,
            records_etas=True,
        ),
    ]


def defaults() -> list[Method]:
    """The library exactly as shipped: only the initial learning rate is given."""
    return [
        Method(
            "lrr (defaults)",
            lambda hp: lrr_optax.learning_rate_rates(hp[0]),
            "default",
            None,
            records_etas=True,
        ),
        Method(
            "lrr_adam (defaults)",
            lambda hp: lrr_optax.lrr_adam(hp[0]),
            "default",
            None,
            records_etas=True,
        ),
    ]


def lr_free(sweep: bool = False) -> list[Method]:
    """optax.contrib's learning-rate-free optimizers at their defaults (``hp`` unused).

    With ``sweep`` they are also run over a grid of their own learning-rate knob.
    """
    sf_eval = lambda state, params: contrib.schedule_free_eval_params(state, params)
    specs = [
        ("prodigy", lambda lr: contrib.prodigy(lr), False, None, 1.0),
        ("dadapt_adamw", lambda lr: contrib.dadapt_adamw(lr), False, None, 1.0),
        ("dog", lambda lr: contrib.dog(lr), False, None, 1.0),
        ("mechanize", lambda lr: contrib.mechanize(optax.adam(lr)), False, None, 1.0),
        ("cocob", lambda lr: optax.with_extra_args_support(contrib.cocob(lr)), False, None, 1.0),
        ("schedule_free_adamw", lambda lr: contrib.schedule_free_adamw(lr), False, sf_eval, 2.5e-3),
        ("momo_adam", lambda lr: contrib.momo_adam(lr), True, None, 1e-2),
    ]
    methods = []
    for name, build, needs_value, eval_params, default in specs:
        methods.append(
            Method(
                name,
                lambda hp, build=build, default=default: build(default),
                "lr-free",
                _grid([1.0]),
                needs_value=needs_value,
                eval_params=eval_params,
            )
        )
        if sweep:
            grid = _grid(np.asarray([1e-2, 1e-1, 1.0, 10.0, 100.0]) * default)
            methods.append(
                Method(
                    f"{name} (lr sweep)",
                    lambda hp, build=build: build(hp[0]),
                    "lr-free sweep",
                    grid,
                    needs_value,
                    eval_params,
                )
            )
    return methods


def order_study(orders=(1, 2, 3, 4), directions=("sgd", "adam")) -> list[Method]:
    """The defaults at order m, over a grid of top rates × initial learning rates."""
    grid = np.asarray([(top, lr) for lr in ORDER_LRS for top in ORDER_TOPS], np.float32)
    methods = []
    for direction in directions:
        for order in orders:

            def make(hp, order=order, direction=direction):
                return ALIASES[direction](hp[1], library_rates(order, direction, top=hp[0]))

            methods.append(
                Method(f"order m{order} {direction}", make, "order", grid, records_etas=True)
            )
    return methods


def with_grid(methods: list[Method], lrs) -> list[Method]:
    """Give the initial-learning-rate grid to the methods that have none yet."""
    return [m._replace(grid=_grid(lrs)) if m.grid is None else m for m in methods]
