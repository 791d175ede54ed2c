"""Measurements of the speed benchmark: one configuration at one size, and the roofline."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import configs as models
from . import hlo


def gradients(size: int):
    """A fixed gradient pytree: unit normal, so that products of many stay normal floats.

    Drawn with NumPy in float32, which needs no temporaries of the full size (the max RSS
    of a fresh process then measures the step, not the drawing).
    """
    params = models.params_of_size(size)
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(0)
    return treedef.unflatten(
        [jnp.asarray(rng.standard_normal(leaf.shape, np.float32)) for leaf in leaves]
    )


def step_fn(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def loop_fn(tx):
    """``steps`` steps in one compiled loop, ``steps`` a runtime value.

    ``lax.fori_loop`` with a traced trip count is the ``while`` loop ``lax.scan`` lowers
    to; one compiled program then times loops of any length, and the difference of two
    lengths is the time of a step inside the loop, free of the per-call work (dispatch,
    work XLA hoists out of the loop because the gradient is the same every step).
    """
    step = step_fn(tx)

    def run(params, state, grads, steps):
        return jax.lax.fori_loop(0, steps, lambda _, carry: step(*carry, grads), (params, state))

    return run


def _time(call, carry, min_time: float, warmup: int = 2, max_calls: int = 50):
    """Timings of ``carry = call(*carry)`` (donated, so each call feeds the next).

    Returns ``(seconds, wall median, wall best, carry)``, ``seconds`` being the median
    CPU time of the process on a CPU backend (robust to other processes sharing the
    core: time they take is not counted) and the median wall time otherwise.
    """
    for _ in range(warmup):
        carry = call(*carry)
    jax.block_until_ready(carry)
    walls: list[float] = []
    cpus: list[float] = []
    while len(walls) < 3 or (sum(walls) < min_time and len(walls) < max_calls):
        start, cpu = time.perf_counter(), time.process_time()
        carry = call(*carry)
        jax.block_until_ready(carry)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    wall = statistics.median(walls)
    seconds = statistics.median(cpus) if jax.default_backend() == "cpu" else wall
    return seconds, wall, min(walls), carry


def copy_bandwidth(size: int, min_time: float) -> dict:
    """GB/s (bytes read + written) of copying ``size`` float32, in the ways one can.

    ``inplace``: a jitted scale of a donated buffer, ``lax.scan``-ed (the machinery of
    the steps, which update their state in place); ``copy``: a jitted scale into a new
    buffer (a device-to-device copy on an accelerator); ``numpy``: ``np.copyto`` between
    two host arrays (CPU only). Timed like the steps. ``roofline`` is the largest.
    """
    steps = 8 if size < 50_000_000 else 2
    moved = 2 * 4 * size
    x = jnp.ones((size,), jnp.float32)

    def scale(x):
        return jax.lax.scan(lambda y, _: (y * 1.000001, None), x, None, length=steps)[0]

    compiled = jax.jit(scale, donate_argnums=0).lower(x).compile()
    seconds, _, _, (x,) = _time(lambda y: (compiled(y),), (x,), min_time)
    result = {"inplace_gbps": round(moved * steps / seconds / 1e9, 2)}
    copy = jax.jit(lambda y: y * 1.000001).lower(x).compile()
    seconds, _, _, (x,) = _time(lambda y: (copy(y),), (x,), min_time)
    result["copy_gbps"] = round(moved / seconds / 1e9, 2)
    del x
    if jax.default_backend() == "cpu":
        a = np.ones(size, np.float32)
        b = np.empty_like(a)
        times: list[float] = []
        while len(times) < 3 or (sum(times) < min_time and len(times) < 50):
            start = time.process_time()
            np.copyto(b, a)
            times.append(time.process_time() - start)
        result["numpy_gbps"] = round(moved / statistics.median(times) / 1e9, 2)
    result["roofline_gbps"] = max(v for k, v in result.items() if k.endswith("_gbps"))
    return result


def measure(
    config: models.Config,
    size: int,
    grads,
    roofline: dict,
    *,
    scan: bool,
    scan_steps: int,
    min_time: float,
    max_bytes: float,
    hlo_dir: str = "",
) -> dict:
    """One configuration at one size: compile, inspect, time."""
    tx = models.optimizer(config)
    params = models.params_of_size(size)
    # Copied: a state may hold the params themselves (Prodigy's params0), and a buffer
    # cannot be donated twice.
    state = jax.tree.map(jnp.copy, tx.init(params))
    n = models.count(params)
    itemsize = jax.tree.leaves(params)[0].dtype.itemsize
    record = {
        **config.as_dict(),
        "size": size,
        "params": n,
        "model_bytes_per_param": models.model_floats(config) * itemsize,
        "state_bytes_per_param_model": models.state_floats_model(config) * itemsize,
        "state_bytes_per_param": round(models.nbytes(state) / n, 3),
        "load": os.getloadavg()[0],
    }
    # A fresh compile: a name of its own misses the persistent cache (which cannot be
    # switched off once used), and the huge threshold keeps it from being written there.
    step = step_fn(tx)
    step.__name__ = step.__qualname__ = f"step_{os.getpid()}_{time.time_ns()}"
    threshold = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1e9)
    start = time.perf_counter()
    lowered = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    record["lower_s"] = round(lowered_at - start, 3)
    record["compile_s"] = round(time.perf_counter() - start, 3)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", threshold)
    text = compiled.as_text()
    if hlo_dir:
        _write_hlo(hlo_dir, config, size, text)
    record["hlo_step"] = hlo.analyze(text).as_dict()
    record.update(_memory(compiled))
    if record["peak_bytes"] > max_bytes:
        record["skipped"] = f"peak {record['peak_bytes'] / 1e9:.1f} GB > --max-gb"
        return record

    seconds, wall, best, (params, state) = _time(
        lambda p, s: compiled(p, s, grads), (params, state), min_time
    )
    record["step_ms"] = round(seconds * 1e3, 4)
    record["step_wall_ms"] = round(wall * 1e3, 4)
    record["step_wall_best_ms"] = round(best * 1e3, 4)
    if scan:
        run = jax.jit(loop_fn(tx), donate_argnums=(0, 1))
        compiled_loop = run.lower(params, state, grads, 1).compile()
        text = compiled_loop.as_text()
        body = hlo.while_body(text)
        record["hlo_scan_body"] = hlo.analyze(text, body).as_dict() if body else None
        short, _, _, (params, state) = _time(
            lambda p, s: compiled_loop(p, s, grads, 1), (params, state), min_time / 2, warmup=1
        )
        long, wall, _, (params, state) = _time(
            lambda p, s: compiled_loop(p, s, grads, 1 + scan_steps),
            (params, state),
            min_time,
            warmup=1,
        )
        record["scan_steps"] = scan_steps
        record["scan_ms"] = round(max(long - short, 0.0) / scan_steps * 1e3, 4)
        record["scan_call_ms"] = round(long * 1e3, 4)
    del params, state
    model = record["model_bytes_per_param"] * n
    for mode in ("step", "scan"):
        # A loop too short to time (a tiny size) reads 0: no rate from it.
        if record.get(f"{mode}_ms"):
            seconds = record[f"{mode}_ms"] * 1e-3
            record[f"{mode}_gbps"] = round(model / seconds / 1e9, 2)
            record[f"{mode}_roofline"] = round(model / seconds / 1e9 / roofline["roofline_gbps"], 3)
    record["step_hlo_gbps"] = round(
        record["hlo_step"]["bytes_moved"] / (record["step_ms"] * 1e-3) / 1e9, 2
    )
    return record


def _memory(compiled) -> dict:
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        return {"peak_bytes": 0}
    if stats is None:
        return {"peak_bytes": 0}
    argument = stats.argument_size_in_bytes
    output = stats.output_size_in_bytes
    alias = stats.alias_size_in_bytes
    temp = stats.temp_size_in_bytes
    return {
        "argument_bytes": argument,
        "output_bytes": output,
        "alias_bytes": alias,
        "temp_bytes": temp,
        "peak_bytes": argument + output - alias + temp,
    }


def _write_hlo(folder: str, config: models.Config, size: int, text: str) -> None:
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    name = config.name.replace(" ", "_").replace("=", "")
    (path / f"{name}_{size}.hlo.txt").write_text(text)


def line(record: dict) -> str:
    """One progress line."""
    head = f"{record['name']:<40} {record['size'] / 1e6:>5g}M"
    if record.get("skipped"):
        return f"{head}  skipped: {record['skipped']}"
    scan = f" scan {record['scan_ms']:8.3f} ms" if "scan_ms" in record else ""
    return (
        f"{head}  step {record['step_ms']:8.3f} ms{scan}  "
        f"{record['step_gbps']:6.2f} GB/s ({record['step_roofline']:.0%})  "
        f"model {record['model_bytes_per_param']:.0f} B/p, HLO "
        f"{record['hlo_step']['bytes_moved'] / record['params']:.0f} B/p, "
        f"copies {record['hlo_step']['copies']}, compile {record['compile_s']:.2f} s"
    )
