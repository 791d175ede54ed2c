"""Small models in plain JAX (no framework, so the benchmark needs only its own extras)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _dense(key, n_in, n_out, scale=None):
    scale = jnp.sqrt(2.0 / n_in) if scale is None else scale
    w = scale * jax.random.normal(key, (n_in, n_out), jnp.float32)
    return {"w": w, "b": jnp.zeros(n_out, jnp.float32)}


def init_mlp(key, sizes, scale=None):
    keys = jax.random.split(key, len(sizes) - 1)
    return [_dense(k, a, b, scale) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def apply_mlp(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


# A 1-D CNN for MNIST-1D: three stride-2 convolutions of width 5, then a linear read-out.
_CHANNELS = (1, 32, 32, 32)


def init_cnn1d(key):
    keys = jax.random.split(key, len(_CHANNELS))
    convs = []
    for k, c_in, c_out in zip(keys, _CHANNELS[:-1], _CHANNELS[1:]):
        w = jnp.sqrt(2.0 / (5 * c_in)) * jax.random.normal(k, (c_out, c_in, 5), jnp.float32)
        convs.append({"w": w, "b": jnp.zeros((c_out, 1), jnp.float32)})
    return {"convs": convs, "out": _dense(keys[-1], 32 * 5, 10)}


def apply_cnn1d(params, x):
    # The convolutions as explicit patch matmuls, channels last: the same function as
    # ``lax.conv_general_dilated(h, w, (2,), "SAME")`` (tests/test_benchmarks.py checks it),
    # but XLA:CPU runs a vmapped convolution inside ``lax.scan`` in channels-first layout,
    # 9x slower than these matmuls (30 runs of one training step: 619 ms against 67 ms on
    # 2026-12-02), which made the long budget cost hours.
    h = x[:, :, None]  # (batch, length 40, channels)
    for conv in params["convs"]:
        h = jax.nn.relu(_conv_same_stride2(h, conv["w"]) + conv["b"][:, 0])
    h = jnp.swapaxes(h, 1, 2).reshape(h.shape[0], -1)  # flattened channel-major, as NCW
    return h @ params["out"]["w"] + params["out"]["b"]


def _conv_same_stride2(h, w):
    """``h`` (batch, length, in) convolved with ``w`` (out, in, width), stride 2, SAME."""
    length, width = h.shape[1], w.shape[-1]
    out = -(-length // 2)
    pad = max((out - 1) * 2 + width - length, 0)
    h = jnp.pad(h, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)))
    patches = jnp.stack([h[:, k : k + 2 * out - 1 : 2] for k in range(width)], axis=2)
    return jnp.einsum("blkc,ock->blo", patches, w)


def init_char_mlp(key, vocab, context, embed=16, hidden=256):
    k_embed, k_hidden, k_out = jax.random.split(key, 3)
    return {
        "embed": jax.random.normal(k_embed, (vocab, embed), jnp.float32),
        "hidden": _dense(k_hidden, context * embed, hidden),
        "out": _dense(k_out, hidden, vocab),
    }


def apply_char_mlp(params, ids):
    x = params["embed"][ids].reshape(ids.shape[0], -1)
    x = jax.nn.relu(x @ params["hidden"]["w"] + params["hidden"]["b"])
    return x @ params["out"]["w"] + params["out"]["b"]


def init_transformer(key, vocab, context, width=64, layers=2):
    keys = iter(jax.random.split(key, 4 + 4 * layers))
    small = 0.02

    def normal(shape, scale=small):
        return scale * jax.random.normal(next(keys), shape, jnp.float32)

    blocks = [
        {
            "qkv": normal((width, 3 * width)),
            "proj": normal((width, width)),
            "up": normal((width, 4 * width)),
            "down": normal((4 * width, width)),
            "ln1": jnp.ones(width, jnp.float32),
            "ln2": jnp.ones(width, jnp.float32),
        }
        for _ in range(layers)
    ]
    return {
        "embed": normal((vocab, width)),
        "pos": normal((context, width)),
        "blocks": blocks,
        "ln": jnp.ones(width, jnp.float32),
        "out": normal((width, vocab)),
    }


def _norm(x, scale):
    return scale * x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)


def apply_transformer(params, ids, heads=4):
    batch, length = ids.shape
    x = params["embed"][ids] + params["pos"][:length]
    width = x.shape[-1]
    mask = jnp.tril(jnp.ones((length, length), bool))
    for block in params["blocks"]:
        q, k, v = jnp.split(_norm(x, block["ln1"]) @ block["qkv"], 3, -1)
        q, k, v = (t.reshape(batch, length, heads, width // heads) for t in (q, k, v))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(width // heads)
        logits = jnp.where(mask, logits, -1e9)
        attended = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, -1), v)
        x = x + attended.reshape(batch, length, width) @ block["proj"]
        x = x + jax.nn.gelu(_norm(x, block["ln2"]) @ block["up"]) @ block["down"]
    return _norm(x, params["ln"]) @ params["out"]
