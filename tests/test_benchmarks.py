"""The benchmark suite's machinery still runs end to end (on a tiny problem, a few steps).

This checks that ``python -m benchmarks`` has not rotted; it measures nothing.
"""

from __future__ import annotations

import json

import jax
import numpy as np

from benchmarks import methods, report, runner, suite


def _tiny_results():
    problem = suite.build_problem("rosenbrock")
    chosen = [
        m
        for m in methods.with_grid(methods.baselines() + methods.defaults(), [1e-4, 1e-3])
        if m.name in ("adam", "lrr (defaults)")
    ]
    chosen += [m for m in methods.lr_free() if m.name in ("schedule_free_adamw", "momo_adam")]
    # optax's own transformations rely on standard dtype promotion.
    with jax.numpy_dtype_promotion("standard"):
        return [runner.run_job(problem, m, steps=8, seeds=2, n_evals=2) for m in chosen]


def test_suite_runs_and_reports(tmp_path):
    results = _tiny_results()
    for result in results:
        final = np.asarray(result["final"])
        assert final.shape == (len(result["grid"]), 2)
        assert np.all(np.isfinite(final))
        # Common random numbers: every method starts from the same parameters.
        assert result["initial"] == results[0]["initial"][:1] * len(result["grid"])
    scores = report.score(results)
    rosenbrock = scores["rosenbrock"]
    assert set(rosenbrock["methods"]) == {r["method"] for r in results}
    assert rosenbrock["best"] == min(np.median(r["final"], 1).min() for r in results)
    assert "lrr (defaults)" in rosenbrock["goal"]
    text = report.markdown(scores, "# header")
    assert "| rosenbrock |" in text and "lrr (defaults)" in text
    report.write_json(tmp_path / "r.json", {"command": "test"}, results, scores)
    assert json.loads((tmp_path / "r.json").read_text())["meta"]["command"] == "test"
    written = report.plots(results, scores, tmp_path, "tiny")
    assert written and all(path.stat().st_size > 0 for path in written)


def test_every_quick_method_builds():
    options = {"full": False, "seeds": 2}
    names = {m.name for m in suite.all_methods(options)}
    assert {"adam", "sgd", "sgd-hd", "adam-hd", "prodigy", "order m4 sgd"} <= names
    order = {m.name for m in suite.all_methods(options) if m.family == "order"}
    expected = (len(names) - len(order)) * len(suite.problem_names(options)) + len(order) * len(
        suite.ORDER_STUDY_QUICK
    )
    assert len(suite.jobs(options)) == expected
    spec = suite.parse_spec("direction=adam,rule=log_normalized,rates=1e-2/1e-2,clip=1")
    assert spec.name in {m.name for m in suite.all_methods({**options, "specs": (spec.name,)})}
