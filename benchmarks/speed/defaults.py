"""The defaults' step time against optax's: ``python -m benchmarks.speed.defaults``.

Each optimizer runs ``--steps`` steps inside one ``lax.scan`` with the parameters and the
state donated, so the figure is the step and not the allocator; the best of ``--reps``
calls is kept. ``--rounds`` rounds time every optimizer in turn, and the ratio to
``optax.adam`` is the median over rounds of the ratio within a round: on a shared machine
the bandwidth drifts by tens of percent between minutes, less within a round. Each
optimizer is timed with two gradients (``GRADIENTS``): a buffer, as a training step gets
it from backpropagation, and a scaled gradient that XLA fuses into the optimizer's kernels,
which favours an optimizer whose every kernel is elementwise. Writes
``results/speed_defaults.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from .. import _common

GRADIENTS = {
    "buffer": "a gradient buffer that changes in one element every step, as backpropagation "
    "leaves it",
    "scaled": "the gradient times a per-step scale, which XLA fuses into every kernel that "
    "reads it",
}


def _compiled(tx, params, steps: int, gradients: str):
    import jax
    import optax

    def run(params, state, grads):
        def body(carry, scale):
            params, state, grads = carry
            if gradients == "buffer":
                # Each step writes one element: the gradient is a buffer that the step reads
                # (nothing is loop-invariant), and writing it costs nothing.
                grads = jax.tree.map(lambda g: g.at[0].set(scale * 1e-3), grads)
                step_grads = grads
            else:
                # The scale keeps XLA from hoisting anything out of the loop; an optimizer
                # whose kernels all read g gets it for free, one with a kernel XLA cannot fuse
                # it into (a reduction) writes the scaled gradient once.
                step_grads = jax.tree.map(lambda g: scale * g, grads)
            updates, state = tx.update(step_grads, state, params)
            return (optax.apply_updates(params, updates), state, grads), None

        scales = 1.0 + jax.numpy.arange(steps, dtype=jax.numpy.float32) / steps
        return jax.lax.scan(body, (params, state, grads), scales)[0]

    compiled = jax.jit(run, donate_argnums=(0, 1, 2))
    params = jax.tree.map(jax.numpy.copy, params)
    grads = jax.tree.map(lambda p: jax.numpy.full_like(p, 1e-3), params)
    carry = compiled(params, tx.init(params), grads)
    jax.block_until_ready(carry)
    return [compiled, carry]


def _timed(program, steps: int, reps: int) -> float:
    """Best seconds per step over ``reps`` calls; the program keeps its donated carry."""
    import jax

    compiled, carry = program
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        carry = compiled(*carry)
        jax.block_until_ready(carry)
        best = min(best, (time.perf_counter() - start) / steps)
    program[1] = carry
    return best


def _cores() -> str:
    """Which CPU cores the run had, as the report states it (``taskset -c 1`` gives one)."""
    import jax

    if jax.default_backend() != "cpu" or not hasattr(os, "sched_getaffinity"):
        return ""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) == 1:
        return f" Run pinned to core {cores[0]}."
    return f" Run on {len(cores)} cores (not pinned; `taskset -c 1` pins it to one)."


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=float, default=10e6, help="parameters (float32)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="an optimizer to keep, named as in the report (repeatable; optax.adam always runs)",
    )
    parser.add_argument("--out", default=str(_common.RESULTS), help="folder for NAME.md")
    parser.add_argument("--name", default="speed_defaults", help="file name stem of the report")
    args = parser.parse_args(argv)
    meta = _common.run_meta("python -m benchmarks.speed.defaults", argv)
    start = time.perf_counter()

    import jax.numpy as jnp
    import optax

    import lrr_optax

    half = int(args.size) // 2
    params = {"a": jnp.zeros((half,), jnp.float32), "b": jnp.zeros((half,), jnp.float32)}
    candidates = {
        "optax.adam(1e-3)": optax.adam(1e-3),
        "lrr_adam(1e-3)": lrr_optax.lrr_adam(1e-3),
        "lrr_adam(1e-3, horizon=0.5)": lrr_optax.lrr_adam(1e-3, horizon=0.5),
        'lrr_adam(1e-3, granularity="parameter")': lrr_optax.lrr_adam(
            1e-3, granularity="parameter"
        ),
        'lrr_adam(1e-3, granularity="parameter", spike_rescale=False)': lrr_optax.lrr_adam(
            1e-3, granularity="parameter", spike_rescale=False
        ),
        'lrr_adam(1e-3, granularity="parameter", element_share=0.1, anchor=0.01)': (
            lrr_optax.lrr_adam(1e-3, granularity="parameter", element_share=0.1, anchor=0.01)
        ),
        "optax.sgd(1e-3)": optax.sgd(1e-3),
        "learning_rate_rates(1e-3)": lrr_optax.learning_rate_rates(1e-3),
        "lrr_sgd(1e-3)": lrr_optax.lrr_sgd(1e-3),
    }
    if unknown := [name for name in args.only if name not in candidates]:
        # Names hold commas (keyword arguments), so each --only is one whole name.
        parser.error(
            f"--only {unknown[0]!r} names no optimizer; the names are: "
            + ", ".join(repr(name) for name in candidates)
        )
    if args.only:
        keep = {"optax.adam(1e-3)", *args.only}
        candidates = {name: tx for name, tx in candidates.items() if name in keep}
    programs = {
        (name, gradients): _compiled(tx, params, args.steps, gradients)
        for name, tx in candidates.items()
        for gradients in GRADIENTS
    }
    rounds = [
        {key: _timed(program, args.steps, args.reps) for key, program in programs.items()}
        for _ in range(args.rounds)
    ]
    adam = "optax.adam(1e-3)"
    rows = []
    for name in candidates:
        row = [name]
        for gradients in GRADIENTS:
            key = (name, gradients)
            ratios = [r[key] / r[adam, gradients] for r in rounds]
            row += [
                f"{statistics.median(r[key] for r in rounds) * 1e3:.2f}",
                f"{statistics.median(ratios):.2f}×",
                f"{min(ratios):.2f}–{max(ratios):.2f}",
            ]
        rows.append(row)
    meta["load_end"] = _common.load_average()
    meta["wall_s"] = time.perf_counter() - start
    columns = ["optimizer"]
    for gradients in GRADIENTS:
        columns += [f"{gradients}: ms / step", f"{gradients}: × optax.adam", "range"]
    lines = [
        _common.header("Speed of the defaults", meta),
        f"{args.size:.3g} float32 parameters in two leaves, {args.steps} steps in one "
        f"`lax.scan` with donated buffers, best of {args.reps} calls, in each of "
        f"{args.rounds} rounds that time every optimizer in turn; × optax.adam is the "
        "median over rounds of the ratio within a round (range: its smallest and largest)."
        + _cores()
        + " Two gradients: "
        + "; ".join(f"*{name}*, {text}" for name, text in GRADIENTS.items())
        + ".",
        "",
        *_common.table(columns, rows),
        "",
    ]
    path = Path(args.out) / f"{args.name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
