"""The benchmark problems, all offline: each is data plus pure functions of it.

A problem's functions take its ``data`` pytree as an argument rather than closing over
it, so that datasets enter the compiled program as inputs, not as constants baked into
it (which makes compiles slow and cache keys huge).

``train_loss`` is the problem's full-batch training objective (for the large text corpus,
a fixed sample of the training split); for ``quadratic_deep`` it is reported as the
excess over the training set's exact minimum, so that "within 2x of the best" means
something there, and so is ``diabetes``. Nothing here ever reads a test split while
training.

``role``: ``"choose"`` problems are the ones the defaults were picked on; ``"confirm"``
problems are held out from that choice, and the report shows them apart.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._common import CACHE
from . import models

BATCH = 128
# sha256 of the pydoc_data.topics corpus built by `_corpus_text` (CPython 3.11.7). Results
# on a different text are not comparable; set LRR_BENCH_ANY_CORPUS=1 to run anyway.
CORPUS_SHA256 = "71f2ff5d99bdc1f9c48c5c2353ad138201c5ca1c377e0226857ef8fa89b8bcee"
CONTEXT = 8  # characters of context of the MLP language model
EVAL_POSITIONS = 4096  # fixed train/test positions the text problems are scored on


class Problem(NamedTuple):
    """A training problem. ``steps`` is the quick-mode budget, ``full_steps`` the long one."""

    name: str
    data: Any
    init: Callable[[jax.Array], Any]  # key -> params
    sample: Callable[[Any, jax.Array], Any]  # (data, key) -> minibatch
    loss: Callable[[Any, Any], jax.Array]  # (params, minibatch) -> scalar
    train_loss: Callable[[Any, Any], jax.Array]  # (data, params) -> full-batch objective
    test_metric: Callable[[Any, Any], jax.Array] | None  # (data, params) -> scalar
    metric: str  # what test_metric measures ("" when there is no test split)
    steps: int
    full_steps: int
    role: str = "choose"  # "choose": the defaults were picked on it; "confirm": held out


# --- synthetic problems -------------------------------------------------------------------


def quadratic_deep() -> Problem:
    """DeepOBS's quadratic_deep: 0.5 (θ − x)ᵀ Q D Qᵀ (θ − x), x ~ N(0, 0.6² I) data."""
    rng = np.random.default_rng(42)
    eigs = np.concatenate([rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10)])
    q, _ = np.linalg.qr(rng.standard_normal((100, 100)))
    hessian = (q * eigs) @ q.T
    x_train = 0.6 * rng.standard_normal((1000, 100))
    x_test = 0.6 * rng.standard_normal((1000, 100))

    def raw(h, theta, x):
        r = theta - x
        return 0.5 * jnp.mean(jnp.einsum("bi,ij,bj->b", r, h, r))

    best = raw(hessian, x_train.mean(0), x_train)
    data = _f32(h=hessian, x=x_train, x_test=x_test, best=best)
    return Problem(
        "quadratic_deep",
        data,
        init=lambda key: jnp.ones(100, jnp.float32) + 0.1 * jax.random.normal(key, (100,)),
        sample=lambda d, key: (d["h"], d["x"][jax.random.randint(key, (BATCH,), 0, 1000)]),
        loss=lambda p, b: raw(b[0], p, b[1]),
        train_loss=lambda d, p: raw(d["h"], p, d["x"]) - d["best"],
        test_metric=lambda d, p: raw(d["h"], p, d["x_test"]),
        metric="test loss",
        steps=500,
        full_steps=3000,
    )


def noisy_quadratic(dim: int = 1000, batch: float = 1.0) -> Problem:
    """Zhang et al. 2019's noisy quadratic model: h_i = 1/i, gradient noise covariance H/B."""
    h = 1.0 / np.arange(1, dim + 1)
    data = _f32(h=h)

    def loss(p, b):
        # 0.5 θᵀHθ + εᵀθ: its gradient is Hθ + ε with ε ~ N(0, H/B).
        return 0.5 * jnp.sum(b[0] * p * p) + jnp.sum(b[1] * p)

    return Problem(
        "noisy_quadratic",
        data,
        init=lambda key: jax.random.normal(key, (dim,)),
        sample=lambda d, key: (d["h"], jnp.sqrt(d["h"] / batch) * jax.random.normal(key, (dim,))),
        loss=loss,
        train_loss=lambda d, p: 0.5 * jnp.sum(d["h"] * p * p),
        test_metric=None,
        metric="",
        steps=500,
        full_steps=5000,
    )


def rosenbrock() -> Problem:
    """DeepOBS's noisy 2-D Rosenbrock: (1−u)² + 100(v−u²)² + u·x + v·y, (x, y) ~ N(0, 1)."""

    def clean(p):
        return (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2

    return Problem(
        "rosenbrock",
        {},
        init=lambda key: jnp.asarray([-0.5, 1.5], jnp.float32),
        sample=lambda d, key: jnp.mean(jax.random.normal(key, (BATCH, 2)), 0),
        loss=lambda p, b: clean(p) + jnp.dot(p, b),
        train_loss=lambda d, p: clean(p),
        test_metric=None,
        metric="",
        steps=1000,
        full_steps=5000,
    )


# --- classification -----------------------------------------------------------------------


def _classification(name, arrays, init, apply, steps, full_steps, role="choose") -> Problem:
    x_train, y_train, x_test, y_test = arrays
    n = x_train.shape[0]
    data = {"x": x_train, "y": y_train, "x_test": x_test, "y_test": y_test}

    def loss(p, b):
        return optax.softmax_cross_entropy_with_integer_labels(apply(p, b[0]), b[1]).mean()

    def sample(d, key):
        idx = jax.random.randint(key, (BATCH,), 0, n)
        return d["x"][idx], d["y"][idx]

    def accuracy(d, p):
        return jnp.mean(jnp.argmax(apply(p, d["x_test"]), -1) == d["y_test"])

    return Problem(
        name,
        data,
        init,
        sample,
        loss,
        train_loss=lambda d, p: loss(p, (d["x"], d["y"])),
        test_metric=accuracy,
        metric="test accuracy",
        steps=steps,
        full_steps=full_steps,
        role=role,
    )


def _digits_arrays():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    parts = train_test_split(x, y.astype(np.int32), test_size=0.3, random_state=0)
    return tuple(jnp.asarray(a) for a in (parts[0], parts[2], parts[1], parts[3]))


def _mnist1d_arrays():
    path = CACHE / "mnist1d.npz"
    if not path.exists():
        from mnist1d.data import get_dataset_args, make_dataset

        d = make_dataset(get_dataset_args())  # generated locally from a fixed seed
        CACHE.mkdir(exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.npz")
        np.savez(tmp, x=d["x"], y=d["y"], x_test=d["x_test"], y_test=d["y_test"])
        tmp.replace(path)
    d = np.load(path)
    return (
        jnp.asarray(d["x"], jnp.float32),
        jnp.asarray(d["y"], jnp.int32),
        jnp.asarray(d["x_test"], jnp.float32),
        jnp.asarray(d["y_test"], jnp.int32),
    )


def logreg_digits() -> Problem:
    sizes = (64, 10)
    return _classification(
        "logreg_digits",
        _digits_arrays(),
        lambda key: models.init_mlp(key, sizes, scale=0.01),
        models.apply_mlp,
        steps=500,
        full_steps=3000,
    )


def mlp_digits() -> Problem:
    sizes = (64, 128, 128, 10)
    return _classification(
        "digits",
        _digits_arrays(),
        lambda key: models.init_mlp(key, sizes),
        models.apply_mlp,
        steps=500,
        full_steps=3000,
    )


def mlp_mnist1d() -> Problem:
    sizes = (40, 100, 100, 10)
    return _classification(
        "mnist1d",
        _mnist1d_arrays(),
        lambda key: models.init_mlp(key, sizes),
        models.apply_mlp,
        steps=500,
        full_steps=6000,
    )


def cnn_mnist1d() -> Problem:
    return _classification(
        "mnist1d_cnn",
        _mnist1d_arrays(),
        models.init_cnn1d,
        models.apply_cnn1d,
        steps=1000,
        full_steps=6000,
        role="confirm",
    )


# --- regression with unscaled targets -----------------------------------------------------


def diabetes() -> Problem:
    """Linear least squares on scikit-learn's diabetes set, the targets left raw (25 … 346).

    The features are standardised, the targets are not: the loss starts near 3e4 and the
    Hessian's largest eigenvalue is about 8, so SGD diverges from initial rates of about
    0.25 up while Adam, whose steps do not scale with the loss, needs rates near the
    targets' scale to get anywhere. Reported as the excess over the exact least-squares
    minimum of the training split.
    """
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    x, y = load_diabetes(return_X_y=True, scaled=False)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0)
    mean, std = x_train.mean(0), x_train.std(0)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    design = np.hstack([x_train, np.ones((len(x_train), 1))])
    solution = np.linalg.lstsq(design, y_train, rcond=None)[0]
    best = np.mean((design @ solution - y_train) ** 2)
    n = x_train.shape[0]
    data = _f32(x=x_train, y=y_train, x_test=x_test, y_test=y_test, best=best)

    def mse(p, x, y):
        return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)

    def sample(d, key):
        idx = jax.random.randint(key, (BATCH,), 0, n)
        return d["x"][idx], d["y"][idx]

    return Problem(
        "diabetes",
        data,
        init=lambda key: {
            "w": 0.01 * jax.random.normal(key, (x.shape[1],), jnp.float32),
            "b": jnp.zeros((), jnp.float32),
        },
        sample=sample,
        loss=lambda p, b: mse(p, *b),
        train_loss=lambda d, p: mse(p, d["x"], d["y"]) - d["best"],
        test_metric=lambda d, p: mse(p, d["x_test"], d["y_test"]),
        metric="test MSE",
        steps=500,
        full_steps=3000,
        role="confirm",
    )


# --- character-level language models on pydoc_data's text --------------------------------


def _corpus_text() -> str:
    from pydoc_data import topics

    return "\n\n".join(topics.topics[key] for key in sorted(topics.topics))


def corpus() -> np.ndarray:
    """The pinned corpus as symbol ids: printable ASCII and newline, anything else one id."""
    text = _corpus_text()
    digest = hashlib.sha256(text.encode()).hexdigest()
    if digest != CORPUS_SHA256 and os.environ.get("LRR_BENCH_ANY_CORPUS") != "1":
        raise AssertionError(
            f"pydoc_data.topics text has sha256 {digest}, not the pinned {CORPUS_SHA256}: "
            "this Python ships a different text, so the language-model results would not be "
            "comparable with the committed ones. Set LRR_BENCH_ANY_CORPUS=1 to run anyway."
        )
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32).astype(np.int64)
    ids = np.where((codes >= 32) & (codes < 127), codes - 31, 96)  # 1..95 printable, 96 other
    return np.where(codes == 10, 0, ids).astype(np.int32)  # 0 is newline


VOCAB = 97


def _text_problem(
    name,
    init,
    apply,
    context,
    steps,
    full_steps,
    role="choose",
    *,
    batch=BATCH,
    eval_windows=EVAL_POSITIONS,
) -> Problem:
    ids = corpus()
    split = int(0.9 * ids.size)
    rng = np.random.default_rng(0)
    train_pos = rng.integers(0, split - context - 1, eval_windows)
    test_pos = rng.integers(split, ids.size - context - 1, eval_windows)
    data = {
        "ids": jnp.asarray(ids),
        "train_pos": jnp.asarray(train_pos, jnp.int32),
        "test_pos": jnp.asarray(test_pos, jnp.int32),
    }
    offsets = jnp.arange(context + 1)

    def windows(d, pos):
        return d["ids"][pos[:, None] + offsets]  # (batch, context + 1)

    def loss(p, w):
        logits = apply(p, w[:, :-1])
        # The MLP predicts the last character; the transformer every next character.
        targets = w[:, 1:] if logits.ndim == 3 else w[:, -1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    return Problem(
        name,
        data,
        init,
        sample=lambda d, key: windows(d, jax.random.randint(key, (batch,), 0, split - context - 1)),
        loss=loss,
        train_loss=lambda d, p: loss(p, windows(d, d["train_pos"])),
        test_metric=lambda d, p: loss(p, windows(d, d["test_pos"])),
        metric="test loss",
        steps=steps,
        full_steps=full_steps,
        role=role,
    )


def char_mlp() -> Problem:
    """An MLP language model: 8 embedded characters -> 256 -> next character."""
    return _text_problem(
        "char_mlp",
        lambda key: models.init_char_mlp(key, VOCAB, CONTEXT),
        models.apply_char_mlp,
        CONTEXT,
        steps=500,
        full_steps=6000,
    )


def char_transformer() -> Problem:
    """A tiny causal transformer language model (2 layers, width 64, context 32).

    It predicts every next character of its window: 16 windows a step (512 predictions)
    and 128 scored windows (4096 predictions, as many as the MLP is scored on).
    """
    return _text_problem(
        "char_transformer",
        lambda key: models.init_transformer(key, VOCAB, 32),
        models.apply_transformer,
        32,
        steps=500,
        full_steps=4000,
        role="confirm",
        batch=16,
        eval_windows=EVAL_POSITIONS // 32,
    )


def _f32(**arrays) -> dict:
    return {k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()}


# Every mode runs every problem; quick mode runs only the core methods on the heavy ones.
NAMES = (
    "quadratic_deep",
    "noisy_quadratic",
    "rosenbrock",
    "logreg_digits",
    "digits",
    "mnist1d",
    "char_mlp",
    "diabetes",
    "mnist1d_cnn",
    "char_transformer",
)
# Quick mode runs only the core methods on these (two cores: minutes per job).
HEAVY = ("mnist1d_cnn", "char_transformer")
BUILDERS: dict[str, Callable[[], Problem]] = {
    "quadratic_deep": quadratic_deep,
    "noisy_quadratic": noisy_quadratic,
    "rosenbrock": rosenbrock,
    "logreg_digits": logreg_digits,
    "digits": mlp_digits,
    "mnist1d": mlp_mnist1d,
    "char_mlp": char_mlp,
    "mnist1d_cnn": cnn_mnist1d,
    "char_transformer": char_transformer,
    "diabetes": diabetes,
}
