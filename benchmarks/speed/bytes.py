"""Compiled bytes per parameter against the byte model, without timing anything.

Run from the repository root::

    python -m benchmarks.speed.bytes                       # per-parameter, m = 1-6, additive
    python -m benchmarks.speed.bytes --rules additive,normalized --size 1M

For each configuration it compiles one donated step (as ``python -m benchmarks.speed``
does) and reads the optimized HLO (``hlo.analyze``): estimated bytes moved per parameter
element, copies, kernels, and the step's temporaries (``memory_analysis``). No step is
run, so the figures do not depend on what else the machine is doing: the measure to
iterate on for issue 13 (per-parameter steps at the byte model) on a shared machine.
It also reports the compile time (best of ``--compile-repeats`` fresh compiles, the
persistent cache off) against optax.adam's, and the compiled memory against the
parameters, gradients and state the step must hold. The report goes to
``benchmarks/results/NAME.md`` with the command, date and machine.
"""

from __future__ import annotations

import argparse
import os
import time

from .. import _common
from .cli import _list, _orders, _size, _size_name, use_speed_flags


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed.bytes",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", default="1M", help="parameter count, e.g. 1M")
    parser.add_argument("--orders", default="1-6", help="orders, e.g. 1-6 or 1,3")
    parser.add_argument("--schedules", default="simultaneous,cascade")
    parser.add_argument("--rules", default="additive")
    parser.add_argument("--granularity", default="parameter")
    parser.add_argument("--baselines", default="adam", help="e.g. sgd,adam ('' for none)")
    parser.add_argument("--out", default=str(_common.RESULTS), help="folder for NAME.md")
    parser.add_argument("--name", default="speed_bytes", help="file name stem of the report")
    parser.add_argument(
        "--compile-repeats", type=int, default=3, help="fresh compiles timed (best kept)"
    )
    parser.add_argument("--hlo-dir", default="", help="also write each optimized HLO there")
    return parser


def _configs(args: argparse.Namespace) -> list:
    from . import configs as models

    chosen = [models.Config(kind) for kind in _list(args.baselines)]
    schedules = _list(args.schedules)
    for m in _orders(args.orders):
        for schedule in schedules if m >= 2 else schedules[:1]:
            for rule in _list(args.rules):
                chosen.append(models.Config("lrr", m, schedule, rule, args.granularity))
    return chosen


def _compile(tx, params, state, grads, repeats: int):
    """The best wall time of ``repeats`` lowerings and compilations, and the last program.

    Each repetition traces a new function object, so neither jit's in-memory caches nor
    the persistent cache (off, see ``main``) can answer it: every one is a full compile.
    """
    import jax

    from . import measure

    best = float("inf")
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        step = jax.jit(measure.step_fn(tx), donate_argnums=(0, 1))
        compiled = step.lower(params, state, grads).compile()
        best = min(best, time.perf_counter() - start)
    return best, compiled


def _row(config, size: int, grads, repeats: int, hlo_dir: str = "") -> dict:
    """Compile one donated step of ``config``: what it moves, its compile time and memory."""
    import jax
    import jax.numpy as jnp

    from . import configs as models
    from . import hlo, measure

    tx = models.optimizer(config)
    params = models.params_of_size(size)
    state = jax.tree.map(jnp.copy, tx.init(params))
    n = models.count(params)
    compile_s, compiled = _compile(tx, params, state, grads, repeats)
    text = compiled.as_text()
    if hlo_dir:
        measure._write_hlo(hlo_dir, config, size, text)
    analysis = hlo.analyze(text)
    memory = measure._memory(compiled)
    itemsize = jax.tree.leaves(params)[0].dtype.itemsize
    return {
        "name": config.name,
        "order": config.order,
        "schedule": config.schedule,
        "rule": config.rule,
        "model": models.model_floats(config) * itemsize,
        "hlo": analysis.bytes_moved / n,
        "copies": analysis.copies,
        "copy_bytes": analysis.copy_bytes / n,
        "kernels": analysis.kernels,
        "temp": memory.get("temp_bytes", 0) / n,
        "compile_s": compile_s,
        "argument": memory.get("argument_bytes", 0) / n,
        "output": memory.get("output_bytes", 0) / n,
        "alias": memory.get("alias_bytes", 0) / n,
        "peak": memory.get("peak_bytes", 0) / n,
        # What the step must hold: parameters, gradients and the state of the byte model.
        "resident": (2 + models.state_floats_model(config)) * itemsize,
    }


def _increments(rows: list[dict], schedule: str, rule: str) -> str:
    """HLO bytes added by each order from m = 1 on, for one schedule and rule."""
    by_order = {
        r["order"]: r["hlo"]
        for r in rows
        if r["rule"] == rule and (r["order"] == 1 or r["schedule"] == schedule)
    }
    orders = sorted(by_order)
    steps = [by_order[b] - by_order[a] for a, b in zip(orders, orders[1:], strict=False)]
    return ", ".join(f"{s:.0f}" for s in steps) or "-"


def _compile_and_memory(rows: list[dict]) -> list[str]:
    """The compile-time table (against adam's) and the compiled memory per parameter."""
    adam = next((r["compile_s"] for r in rows if r["name"] == "adam"), None)
    lines = [
        "",
        "Compile time: best wall seconds of lowering and compiling the step afresh; memory "
        "from `memory_analysis()`, bytes per parameter element. Peak = arguments + "
        "outputs − aliased + temporaries; resident = parameters + gradients + the state "
        "of the model (`configs.state_floats_model`); peak − resident − temp is what the "
        "step holds beyond its temporaries (0: no hidden copy).",
        "",
        "| configuration | compile s | / adam | args B/p | out B/p | alias B/p | temp B/p "
        "| peak B/p | resident B/p | peak − resident − temp |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = "—" if not adam else f"{r['compile_s'] / adam:.2f}"
        extra = r["peak"] - r["resident"] - r["temp"]
        lines.append(
            f"| {r['name']} | {r['compile_s']:.2f} | {ratio} | {r['argument']:.1f} "
            f"| {r['output']:.1f} | {r['alias']:.1f} | {r['temp']:.1f} | {r['peak']:.1f} "
            f"| {r['resident']:.0f} | {extra:.1f} |"
        )
    low = [r for r in rows if 1 <= r["order"] <= 3]
    if adam and low:
        meets = [r["name"] for r in low if r["compile_s"] <= 2 * adam]
        lines += [
            "",
            f"Compile time ≤ 2× adam for m ≤ 3: {len(meets)} of {len(low)} configurations"
            + (f" ({', '.join(meets)})." if meets else "."),
        ]
    return lines


def render(meta: dict, rows: list[dict]) -> str:
    lines = [_common.header("Compiled bytes of one step against the byte model", meta)]
    lines += [
        f"{_size_name(meta['size'])} float32 parameters; bytes per parameter element, from the "
        "optimized HLO of one donated step (`hlo.analyze`); model: `configs.model_floats`.",
        "",
        "| configuration | model B/p | HLO B/p | HLO / model | copies | copied B/p "
        "| kernels | temp B/p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['model']:.0f} | {r['hlo']:.1f} | {r['hlo'] / r['model']:.2f} "
            f"| {r['copies']} | {r['copy_bytes']:.1f} | {r['kernels']} | {r['temp']:.1f} |"
        )
    lines += _compile_and_memory(rows)
    lrr = [r for r in rows if r["order"] >= 1]
    if lrr:
        lines += ["", "HLO bytes added per order (from m = 1 on):", ""]
        for schedule in sorted({r["schedule"] for r in lrr}):
            for rule in sorted({r["rule"] for r in lrr}):
                lines.append(f"- {schedule}, {rule}: {_increments(lrr, schedule, rule)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    use_speed_flags()
    import jax

    from . import measure

    # Compile times are of full compiles: no entry of an earlier run may answer them.
    jax.config.update("jax_enable_compilation_cache", False)
    meta = _common.run_meta("python -m benchmarks.speed.bytes", argv)
    size = _size(args.size)
    meta["size"] = size
    start = time.perf_counter()
    grads = measure.gradients(size)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{args.name}.md")
    rows = []
    for config in _configs(args):
        rows.append(_row(config, size, grads, args.compile_repeats, args.hlo_dir))
        r = rows[-1]
        print(
            f"{r['name']:<40} model {r['model']:4.0f} HLO {r['hlo']:6.1f} B/p "
            f"copies {r['copies']} kernels {r['kernels']} temp {r['temp']:.1f} B/p "
            f"peak {r['peak']:.1f} B/p compile {r['compile_s']:.2f} s",
            flush=True,
        )
        # Rewritten after each row, so a run cut short (a lent GPU's time) leaves its rows.
        meta["wall_s"] = time.perf_counter() - start
        meta["load_end"] = _common.load_average()
        with open(path, "w") as report:
            report.write(render(meta, rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
