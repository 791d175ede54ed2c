"""The quality benchmark: ``python -m benchmarks`` (quick), ``--full``, or ``--demo``.

Trains every method on every problem over a grid of initial learning rates and seeds.
Writes to ``benchmarks/results/``: a markdown report (``quick.md`` / ``full.md``), a compact
summary of its scores (``.json``) and PNG figures; the raw results (every loss curve) go to
``benchmarks/.cache/raw/``. ``--problem NAME`` runs one problem (about two minutes) and
writes ``NAME_quick.*``. ``--demo`` (1-2 minutes) prints the headline table: lrr_adam at
its defaults from initial learning rates 1e-6 … 1 against grid-tuned Adam and Prodigy.
``--variant name:key=value,...`` adds an lrr method (values are Python literals, e.g.
``--variant 'no warmup:warmup=0'`` or ``--variant 'top 0.1:rates=(0.3,0.1),direction=sgd'``).
``--report NAME`` redoes the report, summary and figures of ``NAME`` from its raw results
without training (a run's own report is rendered the same way, from the file it wrote).
"""

from __future__ import annotations

import argparse
import sys
import time

from .. import _common

DEMO_PROBLEMS = ("digits", "diabetes")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--full", action="store_true", help="all problems, longer budgets")
    parser.add_argument("--demo", action="store_true", help="the headline table, 2 problems")
    parser.add_argument("--problem", action="append", help="run only this problem (repeatable)")
    parser.add_argument(
        "--methods",
        action="append",
        help="run only methods whose name starts with this, or is exactly NAME given as =NAME",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="extra lrr method (repeatable); direction=sgd|adam (default adam) picks the alias",
    )
    parser.add_argument("--lrr", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--seeds", type=int, help="seeds (default 2, or 5 with --full)")
    parser.add_argument("--steps", type=int, help="override every problem's step budget")
    parser.add_argument("--evals", type=int, default=20, help="points on each loss curve")
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes, one per core (0: in this process)"
    )
    parser.add_argument("--out", help="name of the results files (default: by mode)")
    parser.add_argument(
        "--results", default=str(_common.RESULTS), help="folder of the committed results"
    )
    parser.add_argument("--raw", default=str(_common.RAW), help="folder of the raw results")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--report", metavar="NAME", help="redo the report of NAME from its raw results, no training"
    )
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from pathlib import Path

    if args.report:
        raw = Path(args.raw) / f"{args.report}.json"
        if not raw.exists():
            sys.exit(f"no raw results {raw}: run the benchmark with --out {args.report} first")
        _report(raw, args, demo=args.report == "demo" or args.demo)
        return 0

    from . import methods, runner, suite

    # Parsed here, so that a typo fails before any worker starts.
    variants = [methods.parse_variant(spec) for spec in args.variant + args.lrr]
    options = {
        "full": args.full,
        "seeds": args.seeds or (5 if args.full else 2),
        "steps": args.steps,
        "n_evals": args.evals,
        "problems": tuple(args.problem or (DEMO_PROBLEMS if args.demo else ())),
    }
    if args.demo:
        mode = "demo"
        jobs = _demo_jobs(options, variants)
    else:
        mode = "full" if args.full else "quick"
        options["methods"] = tuple(args.methods or ())
        options["variants"] = tuple(args.variant + args.lrr)
        jobs = suite.jobs(options)
    name = args.out or (
        "_".join(options["problems"]) + f"_{mode}" if args.problem and not args.demo else mode
    )
    meta = _common.run_meta("python -m benchmarks", argv)
    # Datasets are built (and cached) once here, not raced for by the workers.
    names = suite.problem_names(options)
    roles = {problem: suite.build_problem(problem).role for problem in names}

    from tqdm import tqdm

    start = time.time()
    with tqdm(total=len(jobs), desc=f"{mode} jobs", unit="job", file=sys.stderr) as bar:

        def progress(job, status):
            bar.set_postfix_str(f"{job[0]}: {job[1]}" + ("" if status == "ok" else " FAILED"))
            bar.update()

        results, errors = runner.run_parallel(jobs, options, args.workers, progress)
    for job, message in errors:
        print(f"\n{job} failed:\n{message}", file=sys.stderr)
    meta["wall_s"] = round(time.time() - start, 1)
    meta["load_end"] = _common.load_average()
    meta["options"] = {
        k: v for k, v in options.items() if v not in (None, (), []) and k != "variants"
    }
    meta["variants"] = {m.name: {"direction": m.direction, **m.options} for m in variants}

    raw = _common.write_json(Path(args.raw) / f"{name}.json", {"meta": meta, "results": results})
    _report(raw, args, roles, demo=args.demo)
    return 1 if errors else 0


def _report(raw_path, args, roles=None, demo=False) -> None:
    """The report, summary and figures of one run, from its raw results on disk (a run is
    hours of compute; its report can be redone from the file at any time)."""
    import json
    from pathlib import Path

    from . import methods, report, suite

    raw = json.loads(Path(raw_path).read_text())
    meta, results = raw["meta"], raw["results"]
    if roles is None:
        problems = dict.fromkeys(r["problem"] for r in results)
        roles = {problem: suite.build_problem(problem).role for problem in problems}
    name = Path(raw_path).stem
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    scores = report.score(results, roles)
    written = [raw_path]
    written.append(_common.write_json(results_dir / f"{name}.json", report.summary(meta, scores)))
    if demo:
        variants = list(meta.get("variants", {}))
        swept = ["lrr_adam (defaults)", *variants]
        text = report.headline(scores, methods.DEMO_LRS, swept, ["prodigy"])
        seeds = meta.get("options", {}).get("seeds", "?")
        note = _DEMO_NOTE.format(seeds=seeds)
        markdown = _common.header("Demo: lrr_adam at its defaults", meta) + "\n" + note
        markdown += "\n" + text + "\n"
        print(text)
    else:
        markdown = report.markdown(scores, _common.header("Benchmark results", meta))
        print(markdown.split("\n### Final")[0])
    (results_dir / f"{name}.md").write_text(markdown)
    written.append(results_dir / f"{name}.md")
    if not args.no_plots and not demo:
        written += report.plots(results, scores, results_dir, name)
    print(f"wall time {meta.get('wall_s', 0):.0f} s; wrote " + ", ".join(map(str, written)))


_DEMO_NOTE = (
    "Seed-median final train loss ({seeds} seeds) and its ratio to grid-tuned Adam's best "
    "(`optax.adam`, initial rates 1e-6 … 10 by decades), from each initial learning rate; "
    "Prodigy (`optax.contrib.prodigy`) at its defaults. ↑: the largest loss after the best "
    "point, shown when above 1.5x the final loss.\n"
)


def _demo_jobs(options: dict, variants: list) -> list:
    from . import methods as m

    chosen = [
        m.Method("adam", "optax", "adam", lr="tuned", lrs=m.QUICK_LRS),
        m.Method("lrr_adam (defaults)", "default", "adam", lrs=m.DEMO_LRS),
        m.Method("prodigy", "lr-free", lr="default", contrib="prodigy"),
        *(m.with_lrs(variants, m.DEMO_LRS)),
    ]
    return [(problem, method) for problem in options["problems"] for method in chosen]
