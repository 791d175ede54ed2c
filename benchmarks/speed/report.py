"""The markdown report of the speed benchmark (``speed.md``) from its raw results."""

from __future__ import annotations

import statistics

import lrr_optax

from .._common import ratio as _ratio
from .._common import table

_NOTES = """\
## How to read this

- **step ms**: one call of the jitted step (params and state donated, the gradient a
  fixed input), called step after step: the median CPU time of the process, pinned to one
  core, on a CPU backend (time the core spends on other processes is not counted; **wall
  ms** is the median wall time, which is), the median wall time on an accelerator.
  **scan ms**: a step inside a compiled loop (`lax.fori_loop`, the `while` loop that
  `lax.scan` lowers to, with a runtime trip count): the time of a call of 1 + k steps minus
  that of 1 step, over k, so per-call work (dispatch, work that XLA hoists out of the loop
  because the gradient is the same every step) is not counted.
- **model B/p**: bytes per parameter a step must move if each buffer is read once and
  written once in one fused pass (`benchmarks/speed/configs.py`); for `learning_rate_rates`
  that is linear in the order m: 4·(4m + 1) B at parameter granularity (the α ring is read
  and written at one slot per order and step, whatever its length), 4·6 B at tensor or
  global granularity (a reduction pass, then the update pass). **GB/s** = model bytes /
  time, and **% roof** compares that with the copy bandwidth measured in the same run at
  the same size (`roofline` below: bytes read + written per second of a copy).
- **HLO B/p**, **copies**, **kernels**: what the compiled step does, read from its optimized
  HLO (`benchmarks/speed/hlo.py`): every kernel's operands and result, a ring slot counted
  as a slot. HLO B/p over model B/p is the traffic XLA adds to the algorithm's.
- **state B/p**: optimizer state per parameter, model (parameter-sized buffers) / measured
  (all leaves). **peak MB**: `compiled.memory_analysis()` of the step (arguments +
  outputs − donated aliases + temporaries). **RSS MB**: peak RSS (VmHWM) of a fresh
  process that draws the gradient, builds the params and state and runs two steps (only
  for the sizes in `--rss-sizes`).
- **compile s**: `jit(step).lower(...)` + `.compile()`, persistent compilation cache off.

## What the HLO shows (XLA:CPU)

- XLA:CPU has no multi-output fusion: each buffer a step writes is its own loop over the
  tensor, reading what it needs. Adam is three loops per tensor (μ, ν, then the parameter,
  which re-reads μ and ν), so no optimizer reaches its one-pass model on this backend.
- XLA:CPU duplicates cheap elementwise producers into every consumer: the hypergradient
  chain h⁽ʲ⁾ = h⁽ʲ⁻¹⁾ ⊙ α is recomputed in each kernel that needs it (the rate of order j,
  its α ring write, every order above), re-reading g, d_{n−1} and the ring slots below.
  At parameter granularity the bytes a compiled step moves grow faster than linearly in m
  (see HLO B/p), although the ring itself is read and written at one slot per order.
- XLA:CPU's copy insertion orders kernels by data dependencies only, and
  `lax.optimization_barrier` is dropped before it runs. A state buffer read by one kernel
  and overwritten in place by another without a data path between them is copied first
  (the copies column). The library orders the write of d_n after the new η⁽⁰⁾ by data,
  which removes every parameter-sized copy at order 1 and at tensor and global
  granularity (scalar rates are still copied: bytes); the rates and rings of orders ≥ 2
  at parameter granularity still get copies. The flag
  `--xla_cpu_copy_insertion_use_region_analysis=true` removes most of the rest (pass it
  with `--xla-flags` to measure it).
- XLA:GPU fuses a leaf's whole step into one kernel with several outputs, and the step
  drops the CPU orderings there (`lrr_optax/_ordering.py`): on an H200 order 1 and 2 and
  cascade additive up to order 5 move exactly the model's bytes. `benchmarks/gpu_check.sh`
  measures there (`speed_gpu.md`, `speed_bytes_gpu.md`).
"""


def _fmt(value, digits: int = 2) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _by_name(records, size):
    return {r["name"]: r for r in records if r["size"] == size and not r.get("skipped")}


def markdown(data: dict, gpu_results: str | None = None) -> str:
    """The report; ``gpu_results`` names the GPU check's report when there is one."""
    meta, records = data["meta"], data["results"]
    cpu = meta.get("cpu") or meta["machine"]  # raw results of older runs: "machine"
    sizes = sorted({r["size"] for r in records})
    lines = [
        "# Speed and memory of one optimizer step",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}  ",
        f"Machine: {cpu['lscpu_model']}, nproc {cpu['nproc']}, "
        f"{meta['pinning']}; {meta['backend']} ({meta['device']})  ",
        f"Software: Python {meta['python']}, jax {meta['jax']}, optax {meta['optax']}; "
        f"XLA_FLAGS=`{meta['xla_flags']}`  ",
        f"Load average (1, 5, 15 min): {_load(meta['load_start'])} at the start, "
        f"{_load(meta.get('load_end'))} at the end; wall time {meta.get('wall_s', '?')} s",
        "",
        "```",
        "$ lscpu | head -n 20",
        cpu["lscpu_head"],
        "$ free -g | head -n 2",
        cpu.get("memory", ""),
        "```",
        "",
        (
            f"GPU: see [{gpu_results}]({gpu_results}) (from `benchmarks/gpu_check.sh`)."
            if gpu_results
            else "GPU: `benchmarks/gpu_check.sh` is prepared (oracle subset + reduced table, "
            "roofline from a device-to-device copy) and has not been run: no GPU was lent."
        )
        if meta["backend"] == "cpu"
        else "",
        "",
        "Copy roofline (GB/s, bytes read + written): "
        + "; ".join(
            f"{_size_name(int(size))}: "
            + ", ".join(f"{k.replace('_gbps', '')} {v}" for k, v in roof.items())
            for size, roof in data["roofline"].items()
        ),
        "",
    ]
    lines += _targets(records, sizes, data["roofline"])
    for size in sizes:
        lines += _table(records, size)
    # The notes on what XLA:CPU's programs do are of no use beside another backend's.
    notes = _NOTES if meta["backend"] == "cpu" else _NOTES.split("## What the HLO shows")[0]
    lines += ["", notes.rstrip()]
    return "\n".join(lines) + "\n"


def _load(load) -> str:
    return ", ".join(f"{x:.2f}" for x in load) if load else "?"


def _size_name(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}K"


def _table(records, size) -> list[str]:
    rows = [r for r in records if r["size"] == size]
    adam = _by_name(records, size).get("adam", {})
    headers = [
        "configuration",
        "step ms",
        "wall ms",
        "scan ms",
        "× adam step",
        "× adam scan",
        "model B/p",
        "HLO B/p",
        "GB/s step",
        "% roof step",
        "% roof scan",
        "copies step/scan",
        "kernels",
        "state B/p model/meas",
        "peak MB",
        "RSS MB",
        "compile s",
        "× adam compile",
    ]
    cells = []
    for r in rows:
        if r.get("skipped"):
            cells.append([r["name"], f"skipped: {r['skipped']}"] + [""] * 16)
            continue
        scan_body = r.get("hlo_scan_body") or {}
        rss = r.get("rss", {}).get("max_rss_mb", "")
        cells.append(
            [
                r["name"],
                _fmt(r["step_ms"], 3),
                _fmt(r.get("step_wall_ms"), 3),
                _fmt(r.get("scan_ms"), 3),
                _fmt(_ratio(r["step_ms"], adam.get("step_ms"))),
                _fmt(_ratio(r.get("scan_ms"), adam.get("scan_ms"))),
                f"{r['model_bytes_per_param']:.0f}",
                f"{r['hlo_step']['bytes_moved'] / r['params']:.0f}",
                _fmt(r["step_gbps"], 1),
                f"{r['step_roofline']:.0%}",
                f"{r['scan_roofline']:.0%}" if "scan_roofline" in r else "",
                f"{r['hlo_step']['copies']}/{scan_body.get('copies', '')}",
                str(r["hlo_step"]["kernels"]),
                f"{r['state_bytes_per_param_model']:.0f}/{r['state_bytes_per_param']:.1f}",
                f"{r['peak_bytes'] / 1e6:.0f}",
                _fmt(rss, 0) if isinstance(rss, float) else str(rss),
                _fmt(r["compile_s"]),
                _fmt(_ratio(r["compile_s"], adam.get("compile_s"))),
            ]
        )
    title = f"## {_size_name(size)} parameters ({rows[0]['params']:,} float32)"
    return ["", title, "", *table(headers, cells)]


def _targets(records, sizes, roofline) -> list[str]:
    lines = ["## Targets", ""]
    # 1. Additive order 1 within 1.1x of Adam.
    parts = []
    for size in sizes:
        named = _by_name(records, size)
        m1, adam = named.get("lrr m=1 additive parameter"), named.get("adam")
        if m1 and adam:
            step = _ratio(m1["step_ms"], adam["step_ms"])
            scan = _ratio(m1.get("scan_ms"), adam.get("scan_ms"))
            parts.append(
                f"{_size_name(size)}: {step:.2f}× (step)"
                + (f", {scan:.2f}× (scan)" if scan else "")
                + f", HLO {m1['hlo_step']['bytes_moved'] / m1['params']:.0f} vs "
                f"{adam['hlo_step']['bytes_moved'] / adam['params']:.0f} B/p"
            )
    if parts:
        lines.append("- Additive order 1 (parameter) ≤ 1.1× `optax.adam`: " + "; ".join(parts))
    parts = []
    for size in sizes:
        named = _by_name(records, size)
        default = next((r for n, r in named.items() if n.startswith("lrr defaults")), None)
        adam = named.get("adam")
        if default and adam:
            scan = _ratio(default.get("scan_ms"), adam.get("scan_ms"))
            parts.append(
                f"{_size_name(size)}: {default['step_ms'] / adam['step_ms']:.2f}× (step)"
                + (f", {scan:.2f}× (scan)" if scan else "")
            )
    if parts:
        lines.append("- The shipped defaults against `optax.adam`: " + "; ".join(parts))
    # 2. Linear in the order.
    for schedule in lrr_optax.SCHEDULES:
        for size in sizes:
            named = _by_name(records, size)
            series = []
            for m in range(0, 7):
                name = (
                    "lrr m=0"
                    if m == 0
                    else "lrr m=1 additive parameter"
                    if m == 1
                    else f"lrr m={m} {schedule[:4]} additive parameter"
                )
                if name in named:
                    series.append((m, named[name]))
            if len(series) < 3:
                continue
            ms = ", ".join(f"m={m}: {r['step_ms']:.2f}" for m, r in series)
            hlo = ", ".join(f"{r['hlo_step']['bytes_moved'] / r['params']:.0f}" for m, r in series)
            model = ", ".join(f"{r['model_bytes_per_param']:.0f}" for m, r in series)
            increments = [
                b["step_ms"] - a["step_ms"] for (_, a), (_, b) in zip(series[1:], series[2:])
            ]
            spread = (
                f"; step increments from m=1 on {min(increments):.2f}-{max(increments):.2f} ms"
                if increments
                else ""
            )
            lines.append(
                f"- Linear in m ({schedule}, additive, parameter, {_size_name(size)}): "
                f"ms {ms}{spread}; model B/p {model}; HLO B/p {hlo}"
            )
    # 3. Roofline at 10M.
    for size in sizes:
        if not 5_000_000 <= size <= 20_000_000:
            continue
        named = _by_name(records, size)
        parts = []
        for name in (
            "sgd",
            "adam",
            "lrr m=0",
            "lrr m=1 additive parameter",
            "lrr m=2 simu additive parameter",
            "lrr m=1 additive tensor",
        ):
            r = named.get(name)
            if r:
                scan = f", scan {r['scan_roofline']:.0%}" if "scan_roofline" in r else ""
                parts.append(f"{name} step {r['step_roofline']:.0%}{scan}")
        if parts:
            lines.append(
                f"- ≥ 80 % of the copy bandwidth at {_size_name(size)} "
                f"({roofline[str(size)]['roofline_gbps']} GB/s), model bytes: " + "; ".join(parts)
            )
    # 4. Per-parameter steps at the byte model: HLO bytes and time against the model's.
    for size in sizes:
        rows = [
            r
            for r in _by_name(records, size).values()
            if r["kind"] == "lrr" and r.get("granularity") == "parameter" and r["order"] >= 1
        ]
        if not rows:
            continue
        hlo_ratio = {
            r["name"]: r["hlo_step"]["bytes_moved"] / r["params"] / r["model_bytes_per_param"]
            for r in rows
        }
        worst = max(hlo_ratio, key=hlo_ratio.get)
        line = (
            f"- Per-parameter at {_size_name(size)}: HLO ≤ 1.25× model bytes in "
            f"{sum(x <= 1.25 for x in hlo_ratio.values())} of {len(rows)} "
            f"(worst {hlo_ratio[worst]:.2f}×, {worst})"
        )
        for mode in ("step", "scan"):
            roof = {r["name"]: r[f"{mode}_roofline"] for r in rows if f"{mode}_roofline" in r}
            if roof:
                slow = min(roof, key=roof.get)
                line += (
                    f"; {mode} ≤ 1.5× the model time at the roofline in "
                    f"{sum(x >= 1 / 1.5 for x in roof.values())} of {len(roof)} "
                    f"(worst {1 / roof[slow]:.2f}×, {slow})"
                )
        lines.append(line)
    # 5. Compile time.
    ratios = []
    for size in sizes:
        adam = _by_name(records, size).get("adam")
        if not adam:
            continue
        for r in records:
            if r["size"] == size and r["kind"] == "lrr" and r["order"] <= 3:
                ratios.append((r["compile_s"] / adam["compile_s"], r["name"], size))
    if ratios:
        worst = max(ratios)
        median = statistics.median(x for x, _, _ in ratios)
        lines.append(
            f"- Compile ≤ 2× `optax.adam` for m ≤ 3: median {median:.2f}×, worst {worst[0]:.2f}× "
            f"({worst[1]}, {_size_name(worst[2])}) over {len(ratios)} configurations"
        )
    return lines
