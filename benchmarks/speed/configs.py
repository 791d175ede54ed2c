"""Configurations of the speed benchmark and their byte models.

A configuration is an optimizer (``learning_rate_rates`` at one order, schedule, rule and
granularity, or a baseline) applied to a parameter pytree of a given size. Its *byte
model* is the traffic of one step that moves only the bytes it must: every
parameter-sized buffer it reads read once, every one it writes written once, in one
fused pass over each tensor. For ``learning_rate_rates`` that is, per parameter element
and in units of the state dtype:

* the gradient read, the parameter read and written, d_{n−1} read and written;
* each per-parameter rate η⁽ʲ⁾ read and written (m of them);
* one α slot of each ring read and one written (m − 1 rings): the ring is indexed by
  the step count, so the cost is linear in m whatever the ring lengths;
* the normalised rules' second moment of each order read and written;
* at ``"tensor"`` or ``"global"`` granularity, a rate depends on a reduction over its
  tensor (h⁽⁰⁾ = −Σ g ⊙ d_{n−1}) before any parameter moves, so the gradient and
  d_{n−1} are read twice (a reduction pass, then the update pass).

Baselines: the gradient read, the parameters read and written, each parameter-sized
state buffer read and written (a read-only one, Prodigy's ``params0`` or Mechanic's
``x0``, counted as read only). Prodigy and Mechanic also need global reductions before
the update, which the model does not count: for them it is a lower bound.
"""

from __future__ import annotations

import dataclasses
import inspect
import math

import jax
import jax.numpy as jnp
import optax

import lrr_optax

BASELINES = ("sgd", "adam", "prodigy", "mechanize")
_READ_ONLY_STATE = ("params0", "x0")


@dataclasses.dataclass(frozen=True)
class Config:
    """One optimizer configuration of the benchmark."""

    kind: str  # "lrr" or a baseline name
    order: int = 0
    schedule: str = "simultaneous"
    rule: str = "additive"
    granularity: str = "parameter"

    @property
    def name(self) -> str:
        if self.kind == "lrr default":
            return "lrr defaults (learning_rate_rates(1e-3))"
        if self.kind != "lrr":
            return self.kind
        if self.order == 0:
            return "lrr m=0"
        schedule = "" if self.order == 1 else f" {self.schedule[:4]}"
        return f"lrr m={self.order}{schedule} {self.rule} {self.granularity}"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"name": self.name}


def optimizer(config: Config) -> optax.GradientTransformation:
    """The optax transformation of ``config`` (learning rates fixed, small, positive)."""
    if config.kind == "sgd":
        return optax.sgd(1e-3)
    if config.kind == "adam":
        return optax.adam(1e-3)
    if config.kind == "prodigy":
        return optax.contrib.prodigy()
    if config.kind == "mechanize":
        return optax.contrib.mechanize(optax.adam(1e-3))
    if config.kind == "lrr default":
        return lrr_optax.learning_rate_rates(1e-3)
    # Every option that changes the compiled step spelled out, so that the configuration
    # does not move with the defaults: v0.1.0's choices (no clip, so no spike either), and
    # the safe start and annealing at the values they had when speed.md was first measured.
    rates = tuple(10.0 ** -(3 + j) for j in range(config.order))
    return lrr_optax.learning_rate_rates(
        1e-3,
        rates=rates,
        schedule=config.schedule,
        rule=config.rule,
        granularity=config.granularity,
        clip=None,
        bounds=(0.0, None),
        normalizer_decay=0.99,
        normalizer_eps=1e-30,
        warmup_steps=100,
        warmup_start=1e-3,
        horizon=0.0,
        anneal_steps=30,
        spike_threshold=None,
        spike_rescale=False,
        element_share=None,
        anchor=None,
    )


def shipped_defaults() -> Config:
    """The configuration ``learning_rate_rates(lr)`` runs, read from its signature."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(lrr_optax.learning_rate_rates).parameters.items()
    }
    granularity = defaults["granularity"]
    if not isinstance(granularity, str):  # one per order: the finest sets the traffic
        granularity = min(granularity, key=lrr_optax.GRANULARITIES.index)
    return Config(
        "lrr", len(defaults["rates"]), defaults["schedule"], defaults["rule"], granularity
    )


def _resolved(config: Config) -> Config:
    return shipped_defaults() if config.kind == "lrr default" else config


def ring_slots(config: Config) -> int:
    """Σ L_j: the α buffers of the cache, per rate element."""
    config = _resolved(config)
    m = config.order
    if m < 2:
        return 0
    return m - 1 if config.schedule == "cascade" else m * (m - 1) // 2


def model_floats(config: Config) -> float:
    """Elements moved per parameter element by one step that moves only what it must."""
    config = _resolved(config)
    if config.kind == "sgd":
        return 3
    if config.kind == "adam":
        return 7
    if config.kind == "prodigy":
        return 3 + 2 * 3 + 1  # exp_avg, exp_avg_sq, grad_sum read+written; params0 read
    if config.kind == "mechanize":
        return 3 + 2 * 2 + 1  # mu, nu read+written; x0 read
    m = config.order
    if m == 0:
        return 3  # the gradient read, the parameter read and written
    base = 5  # g read; parameter and d_{n−1} read and written
    if config.granularity != "parameter":
        return base + 1  # g read again after the reduction (d_{n−1}'s re-read is in base)
    moments = 2 * m if config.rule in ("normalized", "log_normalized") else 0
    return base + 2 * m + 2 * (m - 1) + moments


def state_floats_model(config: Config) -> float:
    """Parameter-sized state buffers per parameter element (scalars not counted)."""
    config = _resolved(config)
    if config.kind == "sgd":
        return 0
    if config.kind == "adam":
        return 2
    if config.kind == "prodigy":
        return 4
    if config.kind == "mechanize":
        return 3
    m = config.order
    if m == 0:
        return 0
    if config.granularity != "parameter":
        return 1  # d_{n−1}
    moments = m if config.rule in ("normalized", "log_normalized") else 0
    return 1 + m + ring_slots(config) + moments


def params_of_size(n: int, dtype=jnp.float32):
    """A 4-layer MLP-like pytree of about ``n`` parameters: (w, w) weights and (w,) biases."""
    width = max(1, int(math.sqrt(n / 4)))
    return {
        f"layer{i}": {"w": jnp.zeros((width, width), dtype), "b": jnp.zeros((width,), dtype)}
        for i in range(4)
    }


def count(tree) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(tree))


def nbytes(tree) -> int:
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def plan(sizes, orders, schedules, rules, granularities, baselines, grid: str):
    """(size, Config) pairs in run order.

    ``grid``: ``"full"`` runs every combination at every size; ``"default"`` runs the
    full grid at the smallest size, at larger sizes every order and schedule with the
    additive rule at parameter granularity plus every rule and granularity at orders 1
    and 2 (the shipped default), and at sizes of 50M or more only orders 0, 1, 3, 6
    (additive, parameter, simultaneous) beside the baselines adam and sgd.
    """
    pairs = []
    smallest = min(sizes)
    for size in sizes:
        for kind in baselines:
            if grid == "default" and size >= 50_000_000 and kind not in ("adam", "sgd"):
                continue
            pairs.append((size, Config(kind)))
        if size < 50_000_000 or grid == "full":
            pairs.append((size, Config("lrr default")))
        for m in orders:
            for schedule in schedules if m >= 2 else schedules[:1]:
                for rule in rules if m else rules[:1]:
                    for granularity in granularities if m else granularities[:1]:
                        config = Config("lrr", m, schedule, rule, granularity)
                        if grid == "full" or size == smallest or _in_default(config, size):
                            pairs.append((size, config))
    return pairs


def _in_default(config: Config, size: int) -> bool:
    plain = config.rule == "additive" and config.granularity == "parameter"
    if size >= 50_000_000:
        return plain and config.schedule == "simultaneous" and config.order in (0, 1, 3, 6)
    return plain or config.order in (1, 2)
