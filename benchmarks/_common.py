"""What both suites share: where results go, the run's metadata, and number formatting."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent
RESULTS = ROOT / "results"  # committed: markdown reports, compact summaries, figures
CACHE = ROOT / ".cache"  # ignored: compilation cache, generated datasets, raw results
RAW = CACHE / "raw"


def enable_compilation_cache(min_compile_seconds: float = 1.0) -> None:
    """jax's persistent compilation cache in ``CACHE``: a rerun compiles nothing again."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(CACHE / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def command(prog: str, argv: list[str] | None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    return prog + "".join(" " + shlex.quote(a) for a in argv)


def load_average() -> list[float]:
    """1, 5 and 15-minute load averages: how shared the machine was during the run."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def run_meta(prog: str, argv: list[str] | None) -> dict:
    """The exact command, date, machine and versions of a run (before it starts)."""
    import jax
    import optax

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "command": command(prog, argv),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "optax": optax.__version__,
        "backend": jax.default_backend(),
        "commit": commit,
        "load_start": load_average(),
    }


def header(title: str, meta: dict) -> str:
    """The markdown header every report starts with: how to reproduce it, and where."""
    wall = meta.get("wall_s")
    lines = [
        f"# {title}",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}  ",
        f"Machine: {meta['machine']}; Python {meta['python']}, jax {meta['jax']}, "
        f"optax {meta['optax']}  ",
        f"Commit: {meta.get('commit') or 'unknown'} (plus the working tree)  ",
        f"Wall time: {'?' if wall is None else f'{wall:.0f}'} s (load average at start/end: "
        f"{meta.get('load_start')} / {meta.get('load_end')})",
        "",
    ]
    return "\n".join(lines)


def fmt(value, digits: int = 2) -> str:
    """A number for a table: 3 significant figures, scientific outside [1e-2, 1e3)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, int):
        return str(value)
    if value == 0:
        return "0"
    return f"{value:.{digits}e}" if abs(value) < 1e-2 or abs(value) >= 1e3 else f"{value:.3g}"


def ratio(a, b) -> float | None:
    if a is None or b is None or not b or not math.isfinite(b):
        return None
    return a / b


def fmt_ratio(a, b) -> str:
    r = ratio(a, b)
    return "—" if r is None else ("inf" if math.isinf(r) else f"{r:.3g}x")


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table as lines."""
    lines = ["| " + " | ".join(headers) + " |", "|---" * len(headers) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def compact(value, digits: int = 4):
    """``value`` with floats rounded and non-finite ones as strings: a small, valid JSON."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [compact(v, digits) for v in value]
    if isinstance(value, dict):
        return {str(k): compact(v, digits) for k, v in value.items()}
    return value


def write_json(path: Path, payload, digits: int = 5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(compact(payload, digits), separators=(",", ":")) + "\n")
    return path


def write_report(meta: dict, start: float, folder: str | Path, name: str, render) -> Path:
    """Close the run's metadata (wall time since ``start``, load at the end) and write
    ``render(meta)`` to ``folder/NAME.md``; returns the path, and says so."""
    import time

    meta["wall_s"] = time.perf_counter() - start
    meta["load_end"] = load_average()
    path = Path(folder) / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(meta))
    print(f"wrote {path}")
    return path
