"""The digits MLP problem of the quick benchmark (scikit-learn's bundled data, offline)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lrr_optax

BATCH = 128


def load():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0)
    return jnp.asarray(x_train), jnp.asarray(y_train), jnp.asarray(x_test), jnp.asarray(y_test)


def init_mlp(key, sizes=(64, 128, 128, 10)):
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        w = jax.random.normal(sub, (n_in, n_out), jnp.float32) * jnp.sqrt(2.0 / n_in)
        params.append({"w": w, "b": jnp.zeros(n_out, jnp.float32)})
    return params


def apply_mlp(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def loss_fn(params, x, y):
    logits = apply_mlp(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


METHODS = {
    "adam": lambda lr: optax.adam(lr),
    "lrr (defaults)": lambda lr: lrr_optax.learning_rate_rates(lr),
}


def train(make_tx, lr, seed, steps, data):
    x_train, y_train, x_test, y_test = data
    key = jax.random.key(seed)
    params = init_mlp(key)
    tx = make_tx(lr)
    state = tx.init(params)

    def body(carry, key):
        params, state = carry
        idx = jax.random.randint(key, (BATCH,), 0, x_train.shape[0])
        grads = jax.grad(loss_fn)(params, x_train[idx], y_train[idx])
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    keys = jax.random.split(jax.random.fold_in(key, 1), steps)
    (params, state), _ = jax.lax.scan(body, (params, state), keys)
    train_loss = loss_fn(params, x_train, y_train)
    accuracy = jnp.mean(jnp.argmax(apply_mlp(params, x_test), -1) == y_test)
    return train_loss, accuracy


def sweep(methods, lrs, *, seeds, steps):
    data = load()
    table = {}
    for name, make_tx in methods.items():
        run = jax.jit(
            jax.vmap(
                jax.vmap(lambda lr, seed, f=make_tx: train(f, lr, seed, steps, data), (None, 0)),
                (0, None),
            )
        )
        losses, accs = run(jnp.asarray(lrs, jnp.float32), jnp.arange(seeds))
        table[name] = (np.median(np.asarray(losses), 1), np.median(np.asarray(accs), 1))
    return table


def markdown_table(table, lrs):
    head = "| method | " + " | ".join(f"lr={lr:.0e}" for lr in lrs) + " |\n"
    head += "|---" * (len(lrs) + 1) + "|\n"
    rows = ""
    for name, (losses, accs) in table.items():
        cells = " | ".join(f"{loss:.2e} ({acc:.1%})" for loss, acc in zip(losses, accs))
        rows += f"| {name} | {cells} |\n"
    return (
        "Final full-batch train loss (test accuracy), median over seeds, MLP 64-128-128-10 "
        "on digits.\n\n" + head + rows
    )


def plot(table, lrs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (losses, _) in table.items():
        ax.loglog(lrs, np.maximum(losses, 1e-8), marker="o", label=name)
    ax.set_xlabel("initial learning rate")
    ax.set_ylabel("final train loss")
    ax.set_title("digits MLP")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
