"""Where one step's time goes: each compiled kernel's time, from a profiler trace.

Run from the repository root::

    python -m benchmarks.speed.kernels                          # 10M: adam, lrr_adam
    python -m benchmarks.speed.kernels --size 50M --methods adam,lrr-m1-parameter

For each method it compiles one donated step (params and state donated, the gradient a
fixed input, as ``python -m benchmarks.speed`` does) on parameters in two equal leaves,
times ``--steps`` calls without the profiler (CPU time of the process, pinned to one
core), then traces ``--steps`` more with ``jax.profiler`` and reads each kernel's time
from the trace. Every kernel that touches a parameter-sized buffer gets a row: the buffers
it reads and the one it writes (named by the step's pytree paths), its bytes per parameter
element from the optimized HLO (``hlo``), its milliseconds per step and the bandwidth that
makes. A kernel that writes a donated buffer it does not read is marked *write-allocate*:
the CPU reads each cache line of the target before writing it, so such a kernel moves
about one more read than the HLO count says. The report goes to
``benchmarks/results/NAME.md`` with the command, date and machine.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import tempfile
import time

from .. import _common
from .cli import _list, _pin, _size, _size_name, use_speed_flags

METHODS = (
    "adam",
    "sgd",
    "lrr_adam",
    "lrr_sgd",
    "learning_rate_rates",
    "lrr-m1-parameter",
    "lrr_adam-parameter",
)


def _optimizer(method: str):
    import optax

    import lrr_optax

    from . import configs

    factories = {
        "adam": lambda: optax.adam(1e-3),
        "sgd": lambda: optax.sgd(1e-3),
        "lrr_adam": lambda: lrr_optax.lrr_adam(1e-3),
        "lrr_adam-parameter": lambda: lrr_optax.lrr_adam(1e-3, granularity="parameter"),
        "lrr_sgd": lambda: lrr_optax.lrr_sgd(1e-3),
        "learning_rate_rates": lambda: lrr_optax.learning_rate_rates(1e-3),
        # The issue-13 configuration of `python -m benchmarks.speed`, by a shorter name.
        "lrr-m1-parameter": lambda: configs.optimizer(_config("lrr m=1 additive parameter")),
    }
    config = _config(method)
    if config is not None:
        return configs.optimizer(config)
    if method not in factories:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return factories[method]()


_CONFIG_NAME = re.compile(r"lrr m=(\d+)(?: (simu|casc))? (\w+) (\w+)")


def _config(method: str):
    """The ``configs.Config`` a configuration name of ``python -m benchmarks.speed`` stands
    for (``"lrr m=2 casc additive parameter"``), or ``None``."""
    from . import configs

    match = _CONFIG_NAME.fullmatch(method)
    if match is None:
        return None
    order, schedule, rule, granularity = match.groups()
    schedule = "cascade" if schedule == "casc" else "simultaneous"
    return configs.Config("lrr", int(order), schedule, rule, granularity)


def add_methods_argument(parser: argparse.ArgumentParser) -> None:
    """``--methods``, as this tool and ``benchmarks.speed.compile`` take it."""
    parser.add_argument(
        "--methods",
        default="adam,lrr_adam",
        help=f"comma-separated, of {', '.join(METHODS)}, or configuration names of "
        "`python -m benchmarks.speed` ('lrr m=2 casc additive parameter')",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed.kernels",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", default="10M", help="parameter count, e.g. 10M")
    add_methods_argument(parser)
    parser.add_argument("--steps", type=int, default=30, help="steps timed, then traced")
    parser.add_argument("--cpu", default="last", help="core to pin to, or 'none'")
    parser.add_argument("--out", default=str(_common.RESULTS), help="folder for NAME.md")
    parser.add_argument("--name", default="speed_kernels", help="file name stem of the report")
    return parser


_ALIAS = re.compile(r"\{(\d+)\}:\s*\((\d+),")
_PARAMETER_NAME = re.compile(r'parameter\((\d+)\).*op_name="([^"]+)"')


def _entry_buffers(text: str):
    """The entry computation of ``compiled.as_text()``, read for its buffers.

    Returns ``(computations, entry, names, aliases, root)``: ``names`` maps each entry
    parameter instruction to (its parameter number, the pytree path jax gave it),
    ``aliases`` an output index to the donated parameter it overwrites, ``root`` the tuple.
    """
    from . import hlo

    computations, entry = hlo.parse(text)
    names = {}
    for line in text.splitlines():
        match = _PARAMETER_NAME.search(line)
        instruction = re.match(r"\s*%([\w.\-]+)\s*=", line)
        if match and instruction and "ENTRY" not in line:
            label = match.group(2).replace("\\'", "'")  # HLO escapes the quotes of keys
            names[instruction.group(1)] = (int(match.group(1)), label)
    header = text.splitlines()[0]
    aliases = {int(out): int(param) for out, param in _ALIAS.findall(header)}
    root = next(i for i in computations[entry] if i.root)
    return computations, entry, names, aliases, root


def _kernels(text: str, leaf: int, large: int, output_paths: list[str]) -> list[dict]:
    """The entry's kernels that touch a buffer of ``large`` bytes or more (a leaf), with
    the buffers they read and write, and their bytes per element of a leaf (``leaf``)."""
    from . import hlo

    computations, entry, names, aliases, root = _entry_buffers(text)
    body = computations[entry]
    by_name = {i.name: i for i in body}
    params = {name: label for name, (_, label) in names.items() if name in by_name}
    param_index = {name: index for name, (index, _) in names.items()}
    writes_to = {}
    for position, operand in enumerate(root.operands):
        # An output may be a bitcast of the kernel that writes it (a ring slot's shape).
        while operand in by_name and by_name[operand].opcode == "bitcast":
            operand = by_name[operand].operands[0]
        writes_to.setdefault(operand, []).append(position)
    held = {
        name: "new " + ", ".join(output_paths[p] for p in positions)
        for name, positions in writes_to.items()
    }
    rows = []
    for instruction in body:
        if instruction.opcode in ("parameter", "tuple", "constant", "bitcast"):
            continue
        operands = [by_name[o] for o in instruction.operands if o in by_name]
        if max([instruction.nbytes, *(o.nbytes for o in operands)], default=0) < large:
            continue
        if instruction.opcode == "fusion":
            called = hlo._called(instruction, "calls")
            reads, written, _, _ = hlo._fusion_traffic(
                computations.get(called, []), instruction.nbytes
            )
        else:
            reads, written = sum(o.nbytes for o in operands), instruction.nbytes
        sliced = _sliced_operands(computations, instruction)
        read_names = [
            params.get(o.name, held.get(o.name, o.name))
            + (" (one slice)" if position in sliced else "")
            for position, o in enumerate(operands)
            if o.nbytes >= large
        ]
        outputs = writes_to.get(instruction.name, [])
        if outputs:
            target = ", ".join(output_paths[p] for p in outputs)
        else:
            target = "(a temporary)" if instruction.nbytes >= large else "(a scalar)"
        read_params = {param_index[o.name] for o in operands if o.name in param_index}
        allocate = any(p in aliases and aliases[p] not in read_params for p in outputs)
        rows.append(
            {
                "kernel": instruction.name,
                "reads": read_names,
                "writes": target,
                "bytes_per_element": (reads + written) / leaf,
                "write_allocate": allocate,
            }
        )
    return rows


def _sliced_operands(computations: dict, instruction) -> set[int]:
    """Positions of a fusion's operands that its body reads only through slices.

    XLA names the parameters of a fused computation ``param_<operand position>.<id>``.
    """
    from . import hlo

    if instruction.opcode != "fusion":
        return set()
    body = computations.get(hlo._called(instruction, "calls") or "", [])
    users: dict[str, list] = {}
    for inner in body:
        for operand in inner.operands:
            users.setdefault(operand, []).append(inner)
    sliced = set()
    for inner in body:
        position = re.fullmatch(r"param_(\d+)\.\d+", inner.name)
        if inner.opcode != "parameter" or position is None:
            continue
        readers = users.get(inner.name, [])
        if readers and all(r.opcode in ("slice", "dynamic-slice") for r in readers):
            sliced.add(int(position.group(1)))
    return sliced


def _trace_times(folder: str) -> dict[str, list[float]]:
    """Durations in microseconds of each event name in the profiler trace under ``folder``."""
    files = glob.glob(os.path.join(folder, "**", "*.trace.json.gz"), recursive=True)
    if not files:
        raise RuntimeError(f"jax.profiler wrote no trace under {folder}")
    with gzip.open(files[0]) as trace:
        events = json.load(trace)["traceEvents"]
    durations: dict[str, list[float]] = collections.defaultdict(list)
    for event in events:
        if event.get("ph") == "X" and "dur" in event:
            durations[event["name"]].append(event["dur"])
    return durations


def _per_step_ms(durations: list[float], steps: int) -> float:
    """A kernel's milliseconds per step: the median of its runs (robust to the few that
    another process interrupts), times how many times a step runs it."""
    if not durations:
        return 0.0
    return statistics.median(durations) * len(durations) / steps / 1e3


def _measure(method: str, size: int, steps: int) -> dict:
    import jax
    import jax.numpy as jnp

    from . import measure

    tx = _optimizer(method)
    half = size // 2
    params = {"a": jnp.ones((half,), jnp.float32), "b": jnp.ones((half,), jnp.float32)}
    grads = jax.tree.map(lambda p: p * 1e-3, params)
    state = tx.init(params)
    step = jax.jit(measure.step_fn(tx), donate_argnums=(0, 1))
    compiled = step.lower(params, state, grads).compile()
    output_paths = [
        jax.tree_util.keystr(path)
        for path, _ in jax.tree_util.tree_flatten_with_path(
            jax.eval_shape(measure.step_fn(tx), params, state, grads)
        )[0]
    ]
    output_paths = [("params" if p.startswith("[0]") else "state") + p[3:] for p in output_paths]
    kernels = _kernels(compiled.as_text(), half, half * 4, output_paths)
    carry = (params, state)
    for _ in range(3):
        carry = step(*carry, grads)
    jax.block_until_ready(carry)
    cpu = []
    for _ in range(steps):
        start = time.process_time()
        carry = step(*carry, grads)
        jax.block_until_ready(carry)
        cpu.append(time.process_time() - start)
    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder)
        for _ in range(steps):
            carry = step(*carry, grads)
        jax.block_until_ready(carry)
        jax.profiler.stop_trace()
        durations = _trace_times(folder)
    for row in kernels:
        row["ms"] = _per_step_ms(durations.get(row["kernel"], []), steps)
    cpu.sort()
    return {
        "method": method,
        "size": 2 * half,
        "leaf": half,
        "step_ms": cpu[len(cpu) // 2] * 1e3,
        "kernels": kernels,
        "traced_ms": sum(
            _per_step_ms(durations.get(k, []), steps) for k in _all_kernels(compiled.as_text())
        ),
    }


def _all_kernels(text: str) -> list[str]:
    from . import hlo

    computations, entry = hlo.parse(text)
    return [
        i.name
        for i in computations[entry]
        if i.opcode not in ("parameter", "tuple", "constant", "bitcast", "get-tuple-element")
    ]


def render(meta: dict, results: list[dict]) -> str:
    lines = [_common.header("Where one step's time goes, kernel by kernel", meta)]
    size = results[0]["size"] if results else 0
    lines += [
        f"{_size_name(size)} float32 parameters in two leaves `a` and `b`; one donated step "
        f"per call, {meta.get('pinned', 'not pinned')}. *step ms*: median CPU time of a call "
        "without the profiler; *kernels ms*: the sum of every kernel's time in the profiler "
        "trace (per step; each kernel's median over the traced steps). Per kernel: its bytes "
        "per element of its leaf from the optimized HLO (`hlo`), its ms per step in the trace "
        "and the bandwidth that makes; *new x*: "
        "the value another kernel of the step wrote to x; *write-allocate*: it writes a "
        "donated buffer it does not read, so the CPU also reads that buffer's cache lines. "
        "XLA:CPU may run kernels that do not depend on each other concurrently; on one core "
        "each one's time then includes the other's, and *kernels ms* can exceed *step ms*.",
        "",
    ]
    baseline = next((r for r in results if r["method"] == "adam"), None)
    lines += ["| method | step ms | × adam | kernels ms | × adam |", "|---|---|---|---|---|"]
    for r in results:
        step = f"{r['step_ms'] / baseline['step_ms']:.2f}" if baseline else "—"
        traced = f"{r['traced_ms'] / baseline['traced_ms']:.2f}" if baseline else "—"
        lines.append(
            f"| {r['method']} | {r['step_ms']:.2f} | {step} | {r['traced_ms']:.2f} | {traced} |"
        )
    for r in results:
        lines += [
            "",
            f"### {r['method']}",
            "",
            "| kernel | reads | writes | HLO B/p | ms / step | GB/s |",
            "|---|---|---|---|---|---|",
        ]
        for k in r["kernels"]:
            gbps = k["bytes_per_element"] * r["leaf"] / (k["ms"] * 1e6) if k["ms"] else 0.0
            mark = " (write-allocate)" if k["write_allocate"] else ""
            lines.append(
                f"| {k['kernel']} | {', '.join(k['reads']) or '—'} | {k['writes']}{mark} "
                f"| {k['bytes_per_element']:.0f} | {k['ms']:.2f} | {gbps:.1f} |"
            )
        total_bytes = sum(k["bytes_per_element"] * r["leaf"] for k in r["kernels"]) / r["size"]
        allocate = sum(1 for k in r["kernels"] if k["write_allocate"])
        lines += [
            "",
            f"Parameter-sized kernels: {len(r['kernels'])}, {total_bytes:.0f} B/p by the HLO, "
            f"{allocate} write-allocate.",
        ]
    return "\n".join(lines) + "\n"


def checked_methods(text: str) -> list[str]:
    """The comma-separated methods of ``--methods``; an unknown one stops the run."""
    methods = _list(text)
    for method in methods:
        if method not in METHODS and _config(method) is None:
            raise SystemExit(
                f"unknown method {method!r}; choose from {', '.join(METHODS)} or a "
                "configuration of `python -m benchmarks.speed` ('lrr m=2 casc additive parameter')"
            )
    return methods


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    methods = checked_methods(args.methods)
    pinned = _pin(args.cpu)
    use_speed_flags()
    meta = _common.run_meta("python -m benchmarks.speed.kernels", argv)
    meta["pinned"] = pinned
    size = _size(args.size)
    start = time.perf_counter()
    results = []
    for method in methods:
        results.append(_measure(method, size, args.steps))
        r = results[-1]
        print(
            f"{method:<24} step {r['step_ms']:8.2f} ms  kernels {r['traced_ms']:8.2f} ms  "
            f"({len(r['kernels'])} parameter-sized)",
            flush=True,
        )
    _common.write_report(meta, start, args.out, args.name, lambda meta: render(meta, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
