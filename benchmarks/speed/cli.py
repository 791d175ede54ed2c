"""Speed and memory of one optimizer step, against the machine's copy bandwidth.

Run from the repository root::

    python -m benchmarks.speed                      # the full table (about 10 min, quiet CPU)
    python -m benchmarks.speed --quick              # 1M parameters, a few configurations
    python -m benchmarks.speed --sizes 10M --orders 0,1,3 --rules additive

For each parameter count (a float32 MLP-like pytree of four layers) and each
configuration (``learning_rate_rates`` at orders 0-6, both schedules, every rule and
granularity, beside ``optax.sgd``, ``optax.adam``, ``optax.contrib.prodigy`` and
``optax.contrib.mechanize``) it measures:

* ms/step of one jitted step with donated params and state, called step after step,
  and of a step inside a compiled loop (``lax.fori_loop``, the ``while`` loop of
  ``lax.scan``, timed as the difference of two loop lengths): the median CPU time of
  the process on a CPU backend, which other processes sharing the core do not inflate
  (the median wall time is recorded too), wall time elsewhere;
* the bytes-per-parameter model of the step (``configs``: what a step that reads
  and writes each buffer once moves) and the GB/s that makes, against the copy
  bandwidth measured in the same run at the same size (the roofline);
* what the compiled step really does (``hlo``, from the optimized HLO):
  kernels, copies, estimated bytes moved;
* state bytes per parameter, model and measured; the peak memory of the step
  (``compiled.memory_analysis()``: arguments + outputs − aliased + temporaries) and, for
  the sizes in ``--rss-sizes``, the peak RSS (VmHWM) of a fresh process running it;
* the compile time of the step (``lower`` + ``compile``, persistent cache off).

The report goes to ``benchmarks/results/speed.md`` with the exact command, date, machine and
load; the raw measurements to ``benchmarks/.cache/raw/speed.json`` (``--render`` rewrites the
report from them). The process pins itself to one core (``--cpu``) so that XLA's
thread pool does not fight other work for the second one.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import lrr_optax

from .. import _common

SUFFIXES = {"K": 1_000, "M": 1_000_000, "G": 1_000_000_000}


def _size(text: str) -> int:
    text = text.strip().upper()
    if text[-1] in SUFFIXES:
        return int(float(text[:-1]) * SUFFIXES[text[-1]])
    return int(text)


def _size_name(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}K"


def _list(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def _orders(text: str) -> list[int]:
    orders = []
    for part in _list(text):
        low, _, high = part.partition("-")
        orders.extend(range(int(low), int(high or low) + 1))
    return orders


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", default="1M,10M,50M", help="parameter counts, e.g. 1M,10M")
    parser.add_argument("--orders", default="0-6", help="orders, e.g. 0-3 or 0,1,3,6")
    parser.add_argument("--schedules", default=",".join(lrr_optax.SCHEDULES))
    parser.add_argument("--rules", default=",".join(lrr_optax.RULES))
    parser.add_argument("--granularities", default=",".join(lrr_optax.GRANULARITIES))
    parser.add_argument("--baselines", default="sgd,adam,prodigy,mechanize")
    parser.add_argument(
        "--grid",
        choices=("default", "full"),
        default="default",
        help="full: every combination at every size; default: see configs.plan",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1M parameters, orders 0-3, additive, parameter granularity, sgd and adam",
    )
    parser.add_argument("--no-scan", action="store_true", help="skip the in-loop timing")
    parser.add_argument(
        "--scan-steps", type=int, default=8, help="extra steps of the longer timed loop"
    )
    parser.add_argument(
        "--min-time", type=float, default=0.2, help="seconds of timed calls per mode (at least)"
    )
    parser.add_argument(
        "--cpu",
        default="last",
        help="core to pin to: a number, 'last' (of the allowed ones) or 'none'",
    )
    parser.add_argument(
        "--rss-sizes",
        default="50M",
        help="sizes whose configurations also run in a fresh process for max RSS ('' for none)",
    )
    parser.add_argument(
        "--max-gb",
        type=float,
        default=10.0,
        help="skip a configuration whose step needs more memory than this (memory_analysis)",
    )
    parser.add_argument("--xla-flags", default="", help="appended to XLA_FLAGS")
    parser.add_argument("--out", default=str(_common.RESULTS), help="folder for NAME.md")
    parser.add_argument("--raw", default=str(_common.RAW), help="folder for NAME.json (raw)")
    parser.add_argument("--name", default="speed", help="file name stem of the results")
    parser.add_argument("--hlo-dir", default="", help="also write each optimized HLO there")
    parser.add_argument(
        "--render", default="", help="only rewrite NAME.md from this results JSON, no run"
    )
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    return parser


def use_speed_flags(extra: str = "") -> None:
    """Append the speed benchmark's XLA flags (and ``extra``) to ``XLA_FLAGS``, before jax
    starts: every entry point of ``benchmarks.speed`` then compiles the same programs."""
    flags = " ".join(f for f in ["--xla_cpu_multi_thread_eigen=false", extra] if f)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()


def _pin(cpu: str) -> str:
    if cpu == "none" or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    allowed = sorted(os.sched_getaffinity(0))
    core = allowed[-1] if cpu == "last" else int(cpu)
    os.sched_setaffinity(0, {core})
    return f"pinned to core {core} of {allowed}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.quick:
        args.sizes, args.orders, args.rules = "1M", "0-3", "additive"
        args.granularities, args.baselines, args.rss_sizes = "parameter", "sgd,adam", ""
    if args.render:
        return _render(Path(args.render), Path(args.out), args.name)
    machine = _machine()  # before pinning, which nproc would see
    pinning = _pin(args.cpu)
    use_speed_flags(args.xla_flags)
    if args.child:
        return _child(args)

    import jax

    # The compile times are measured with the persistent cache off (measure.py).
    _common.enable_compilation_cache(0.0)
    from . import configs as models
    from . import measure as run

    sizes = [_size(s) for s in _list(args.sizes)]
    pairs = models.plan(
        sizes,
        _orders(args.orders),
        tuple(_list(args.schedules)),
        tuple(_list(args.rules)),
        tuple(_list(args.granularities)),
        tuple(_list(args.baselines)),
        args.grid,
    )
    rss_sizes = {_size(s) for s in _list(args.rss_sizes)}
    meta = _common.run_meta("python -m benchmarks.speed", argv) | {
        "cpu": machine,
        "pinning": pinning,
        "xla_flags": os.environ["XLA_FLAGS"],
        "device": str(jax.devices()[0].device_kind),
        "configurations": len(pairs),
    }
    command = meta["command"]
    print(f"{command}\n{machine['lscpu_model']}, {pinning}, jax {jax.__version__}")
    print(f"{len(pairs)} configurations, load {meta['load_start']}", flush=True)
    start = time.perf_counter()
    roofline = {}
    for size in sizes:
        roofline[size] = run.copy_bandwidth(size, args.min_time)
        print(f"copy roofline at {_size_name(size)}: {roofline[size]}", flush=True)
    out, raw = Path(args.out), Path(args.raw)
    out.mkdir(parents=True, exist_ok=True)
    raw.mkdir(parents=True, exist_ok=True)
    records = []

    def save() -> None:
        # After each configuration, so a run cut short (a lent GPU's time) leaves its rows.
        meta["wall_s"] = round(time.perf_counter() - start, 1)
        meta["load_end"] = _common.load_average()
        data = {
            "meta": meta,
            "roofline": {str(k): v for k, v in roofline.items()},
            "results": records,
        }
        (raw / f"{args.name}.json").write_text(json.dumps(data, indent=1) + "\n")

    save()
    grads_by_size = {}
    for size, config in pairs:
        if size not in grads_by_size:
            grads_by_size.clear()
            gc.collect()
            grads_by_size[size] = run.gradients(size)
        record = run.measure(
            config,
            size,
            grads_by_size[size],
            roofline[size],
            scan=not args.no_scan,
            scan_steps=_scan_steps(args.scan_steps, size),
            min_time=args.min_time,
            max_bytes=args.max_gb * 1e9,
            hlo_dir=args.hlo_dir,
        )
        if size in rss_sizes and not record.get("skipped"):
            record["rss"] = _rss(config, size, argv)
        records.append(record)
        print(run.line(record), flush=True)
        save()
    return _render(raw / f"{args.name}.json", out, args.name)


def _render(results: Path, out: Path, name: str) -> int:
    from . import report

    data = json.loads(results.read_text())
    out.mkdir(parents=True, exist_ok=True)
    gpu = out / "speed_gpu.md"
    markdown = report.markdown(data, gpu.name if gpu.exists() else None)
    (out / f"{name}.md").write_text(markdown)
    print(markdown)
    print(f"wrote {out / name}.md ({data['meta'].get('wall_s', '?')} s of measurements)")
    return 0


def _scan_steps(steps: int, size: int) -> int:
    """Fewer steps per scan call at large sizes, where one step takes long enough."""
    if size >= 50_000_000:
        return min(steps, 2)
    if size >= 5_000_000:
        return min(steps, 4)
    return steps


def _machine() -> dict:
    def shell(command: str) -> str:
        try:
            return subprocess.run(
                command, shell=True, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    lscpu = shell("lscpu | head -n 20")
    model = next(
        (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line),
        platform.processor(),
    )
    caches = shell("lscpu | grep -E '^L[23] cache'")
    l3 = next((line.split(":", 1)[1].strip() for line in caches.splitlines() if "L3" in line), "")
    return {
        "lscpu_head": lscpu + ("\n" + caches if caches else ""),
        "lscpu_model": f"{model} (L3 {l3})" if l3 else model,
        "nproc": shell("nproc"),
        "platform": platform.platform(),
        "memory": shell("free -g | head -n 2"),
    }


def _rss(config, size: int, argv: list[str]) -> dict:
    """Max RSS of a fresh process that builds the state and runs two steps."""
    child = json.dumps({"config": config.as_dict(), "size": size})
    command = [sys.executable, "-m", "benchmarks.speed", "--child", child, *argv]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parent.parent
        )
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as error:
        return {"error": str(error)[:200]}


def _child(args) -> int:
    import jax

    from . import configs as models
    from . import measure as run

    spec = json.loads(args.child)
    fields = {k: v for k, v in spec["config"].items() if k != "name"}
    config = models.Config(**fields)
    grads = run.gradients(spec["size"])
    before = _current_rss()
    tx = models.optimizer(config)
    params = models.params_of_size(spec["size"])
    state = jax.tree.map(jax.numpy.copy, tx.init(params))
    step = jax.jit(run.step_fn(tx), donate_argnums=(0, 1))
    for _ in range(2):
        params, state = step(params, state, grads)
    jax.block_until_ready((params, state))
    # VmHWM, the high-water mark of this process's own memory: ru_maxrss would include
    # the parent's, which Linux carries over when the parent forks and the child execs.
    peak = _status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"max_rss_mb": round(peak / 1e6, 1), "before_mb": round(before / 1e6, 1)}))
    return 0


def _current_rss() -> int:
    return _status("VmRSS")


def _status(field: str) -> int:
    """A memory field of /proc/self/status in bytes (0 where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
