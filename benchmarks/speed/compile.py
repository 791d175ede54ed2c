"""How compile time grows with the number of parameter leaves, against optax's.

Run from the repository root::

    python -m benchmarks.speed.compile                       # adam, lrr_adam; 2 … 128 leaves
    python -m benchmarks.speed.compile --leaves 8,64 --methods adam,lrr_sgd,learning_rate_rates

A model is a pytree of leaves, and a step is compiled leaf by leaf: XLA:CPU runs each
leaf's update as kernels of its own. ``python -m benchmarks.speed`` measures compile time
on two leaves; a network has tens to hundreds (a transformer block about a dozen). For
each method and leaf count this traces, lowers and compiles the step ``jax.jit(tx.update)``
afresh (the persistent compilation cache off) on that many float32 leaves, shaped like a
stack of two-layer blocks (``SHAPES``, in turn: leaves of one shape repeat as a network's
layers do), and reports the best of ``--repeats`` times of each phase, the traced
program's size (jaxpr equations) and the compiled one's (kernels: fusions in the optimized
HLO's entry). The report goes to ``benchmarks/results/NAME.md`` with the command, date and machine.
"""

from __future__ import annotations

import argparse
import time

from .. import _common
from .cli import _list, use_speed_flags
from .kernels import _optimizer, add_methods_argument, checked_methods

# One block: the kernels and biases of a 64 → 256 → 64 MLP.
SHAPES = ((64, 256), (256,), (256, 64), (64,))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed.compile",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--leaves", default="2,8,32,128", help="comma-separated leaf counts")
    add_methods_argument(parser)
    parser.add_argument("--repeats", type=int, default=2, help="compiles per cell; the best")
    parser.add_argument("--out", default=str(_common.RESULTS), help="folder for NAME.md")
    parser.add_argument("--name", default="speed_compile", help="file name stem of the report")
    return parser


def _measure(method: str, leaves: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    params = {
        f"leaf{i:03d}": jnp.full(SHAPES[i % len(SHAPES)], 0.5, jnp.float32) for i in range(leaves)
    }
    tx = _optimizer(method)
    state = tx.init(params)
    best = None
    for _ in range(repeats):
        # A new function each time: jit's own cache would answer the second call.
        step = jax.jit(lambda grads, state, params: tx.update(grads, state, params))
        start = time.perf_counter()
        traced = step.trace(params, state, params)
        traced_at = time.perf_counter()
        lowered = traced.lower()
        lowered_at = time.perf_counter()
        compiled = lowered.compile()
        done = time.perf_counter()
        times = (traced_at - start, lowered_at - traced_at, done - lowered_at)
        if best is None or sum(times) < sum(best):
            best = times
    text = compiled.as_text()
    entry = text[text.index("ENTRY") :]
    return {
        "method": method,
        "leaves": leaves,
        "trace_s": best[0],
        "lower_s": best[1],
        "compile_s": best[2],
        "total_s": sum(best),
        "equations": len(traced.jaxpr.eqns),
        "kernels": entry.count(" fusion("),
    }


def render(meta: dict, results: list[dict]) -> str:
    lines = [_common.header("Compile time against the number of parameter leaves", meta)]
    lines += [
        "float32 leaves shaped, in turn, "
        + ", ".join(" × ".join(map(str, shape)) for shape in SHAPES)
        + " (a stack of 64 → 256 → 64 MLP blocks); `jax.jit(tx.update)` traced, "
        "lowered and compiled afresh, the persistent compilation cache off; the best of "
        f"{meta['repeats']} compiles per cell. *total*: trace + lower + compile; *× adam*: "
        "against `optax.adam` on the same leaves; *per leaf*: the growth of total from the "
        "previous leaf count, per added leaf; *equations*: of the traced program (jaxpr); "
        "*kernels*: fusions in the optimized HLO.",
        "",
        "| method | leaves | trace ms | lower ms | compile ms | total ms | × adam | per leaf ms "
        "| equations | kernels |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    adam = {r["leaves"]: r["total_s"] for r in results if r["method"] == "adam"}
    previous: dict[str, dict] = {}
    for r in results:
        ratio = f"{r['total_s'] / adam[r['leaves']]:.1f}" if r["leaves"] in adam else "—"
        before = previous.get(r["method"])
        slope = (
            f"{1e3 * (r['total_s'] - before['total_s']) / (r['leaves'] - before['leaves']):.1f}"
            if before
            else "—"
        )
        previous[r["method"]] = r
        lines.append(
            f"| {r['method']} | {r['leaves']} | {1e3 * r['trace_s']:.0f} | "
            f"{1e3 * r['lower_s']:.0f} | {1e3 * r['compile_s']:.0f} | {1e3 * r['total_s']:.0f} | "
            f"{ratio} | {slope} | {r['equations']} | {r['kernels']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    methods = checked_methods(args.methods)
    leaf_counts = sorted({int(n) for n in _list(args.leaves)})
    if not leaf_counts or leaf_counts[0] < 1 or args.repeats < 1:
        raise SystemExit("--leaves takes positive counts, and --repeats at least 1")
    use_speed_flags()
    import jax

    # Every cell is a full compile: no entry of an earlier run may answer it.
    jax.config.update("jax_enable_compilation_cache", False)
    meta = _common.run_meta("python -m benchmarks.speed.compile", argv)
    meta["repeats"] = args.repeats
    start = time.perf_counter()
    results = []
    for method in methods:
        for leaves in leaf_counts:
            r = _measure(method, leaves, args.repeats)
            results.append(r)
            print(
                f"{method:<24} {leaves:5d} leaves: total {1e3 * r['total_s']:8.0f} ms "
                f"(compile {1e3 * r['compile_s']:.0f}), {r['kernels']} kernels",
                flush=True,
            )
    _common.write_report(meta, start, args.out, args.name, lambda meta: render(meta, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
