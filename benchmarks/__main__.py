"""The quality benchmark: ``python -m benchmarks`` (quick) or ``python -m benchmarks --full``.

Trains every method on every problem over a grid of initial learning rates and seeds and
writes to ``benchmarks/results/``: a markdown summary (``quick.md`` / ``full.md``), the raw
results (``.json``) and PNG figures. ``--problem NAME`` runs one problem (about two
minutes) and writes ``NAME_quick.*``. See ``--help`` for filters used while exploring.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--full", action="store_true", help="all problems, longer budgets")
    parser.add_argument("--problem", action="append", help="run only this problem (repeatable)")
    parser.add_argument(
        "--methods", action="append", help="run only methods whose name starts with this"
    )
    parser.add_argument(
        "--lrr", action="append", default=[], help="extra lrr method, key=value,... (exploring)"
    )
    parser.add_argument("--seeds", type=int, help="seeds (default 2, or 5 with --full)")
    parser.add_argument("--steps", type=int, help="override every problem's step budget")
    parser.add_argument("--evals", type=int, default=20, help="points on each loss curve")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, one per core")
    parser.add_argument("--out", help="name of the results files (default: by mode)")
    parser.add_argument("--no-plots", action="store_true")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from . import report, runner, suite

    options = {
        "full": args.full,
        "seeds": args.seeds or (5 if args.full else 2),
        "steps": args.steps,
        "n_evals": args.evals,
        "problems": tuple(args.problem or ()),
        "methods": tuple(args.methods or ()),
        "specs": tuple(args.lrr),
    }
    mode = "full" if args.full else "quick"
    name = args.out or ("_".join(options["problems"]) + f"_{mode}" if args.problem else mode)
    # Datasets are built (and cached) once here, not raced for by the workers.
    for problem in options["problems"] or suite.problem_names(options):
        suite.build_problem(problem)
    jobs = suite.jobs(options)

    from tqdm import tqdm

    start, load_before = time.time(), _load()
    with tqdm(total=len(jobs), desc="benchmark jobs", unit="job") as bar:

        def progress(job, status):
            bar.set_postfix_str(f"{job[0]}: {job[1]}" + ("" if status == "ok" else " FAILED"))
            bar.update()

        results, errors = runner.run_parallel(jobs, options, args.workers, progress)
    elapsed = time.time() - start
    for job, message in errors:
        print(f"\n{job} failed:\n{message}", file=sys.stderr)

    meta = _meta(argv, elapsed, options)
    meta["load_average"] = {"before": load_before, "after": _load()}
    scores = report.score(results)
    RESULTS.mkdir(exist_ok=True)
    header = _header(meta)
    markdown = report.markdown(scores, header)
    (RESULTS / f"{name}.md").write_text(markdown)
    report.write_json(RESULTS / f"{name}.json", meta, results, scores)
    written = [RESULTS / f"{name}.md", RESULTS / f"{name}.json"]
    if not args.no_plots:
        written += report.plots(results, scores, RESULTS, name)
    print(markdown.split("\n## Best")[0])
    print("wrote " + ", ".join(str(p) for p in written))
    return 1 if errors else 0


def _meta(argv, elapsed: float, options: dict) -> dict:
    import jax
    import optax

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "command": "python -m benchmarks" + "".join(" " + shlex.quote(a) for a in argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "optax": optax.__version__,
        "commit": commit,
        "wall_seconds": round(elapsed, 1),
        "options": {k: v for k, v in options.items() if v not in (None, (), [])},
    }


def _load() -> list[float]:
    """1, 5 and 15-minute load averages: how shared the machine was during the run."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _header(meta: dict) -> str:
    return (
        f"# Benchmark results\n\n"
        f"Command: `{meta['command']}`  \n"
        f"Date: {meta['date']}  \n"
        f"Machine: {meta['machine']}; Python {meta['python']}, jax {meta['jax']}, "
        f"optax {meta['optax']}  \n"
        f"Commit: {meta['commit'] or 'unknown'} (plus the working tree)  \n"
        f"Wall time: {meta['wall_seconds']:.0f} s (load average before/after: "
        f"{meta['load_average']['before']} / {meta['load_average']['after']})\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
