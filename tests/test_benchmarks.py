"""The benchmark suites still run end to end (tiny problems, a few steps), and their parts.

This checks that ``python -m benchmarks`` and ``python -m benchmarks.speed`` have not
rotted; it measures nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrr_optax
from benchmarks.quality import cli, methods, metrics, problems, report, runner, suite

ROOT = Path(__file__).parent.parent


def _python(*args: str, timeout: int = 240) -> str:
    """Run ``python -m ...`` from the repository root; its output, or the failure."""
    # The benchmarks time and inspect what a user's step compiles to: without the test
    # run's compile flags (conftest.py).
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env["XLA_FLAGS"] = os.environ["LRR_OPTAX_USER_XLA_FLAGS"]
    done = subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


# --- methods as data, and the variants of the command line ------------------------------------


def test_variant_parser():
    m = methods.parse_variant("top 0.1:rates=(0.3,0.1),rule=additive,clip=None,direction=sgd")
    assert m.name == "top 0.1" and m.direction == "sgd" and m.family == "variant"
    assert m.options == {"rates": (0.3, 0.1), "rule": "additive", "clip": None}
    # The old --lrr spelling: no name, rates and bounds as a/b.
    m = methods.parse_variant("rates=1e-1/1e-2,bounds=0/none,granularity=('tensor','global')")
    assert m.name == "rates=1e-1/1e-2,bounds=0/none,granularity=('tensor','global')"
    assert m.direction == "adam"
    assert m.options == {
        "rates": (0.1, 0.01),
        "bounds": (0, None),
        "granularity": ("tensor", "global"),
    }
    assert methods.parse_variant("one:rates=0.01").options == {"rates": (0.01,)}
    for bad in ("x:no_such_option=1", "x:rule=fast", "x:direction=lion", "x:rates"):
        with pytest.raises(ValueError):
            methods.parse_variant(bad)


def test_methods_are_records_over_the_library_options():
    options = {"full": True, "seeds": 2, "variants": ("mine:clip=0.5",)}
    every = suite.all_methods(options)
    names = [m.name for m in every]
    assert len(names) == len(set(names))
    assert {"adam", "sgd", "sgd-hd", "adam-hd", "prodigy", "order m4 sgd", "mine"} <= set(names)
    assert all(m.lrs or m.lr == "default" for m in every)
    cascades = [m for m in every if m.options.get("schedule") == "cascade"]
    assert cascades and all(
        m.options["schedule"] in lrr_optax.SCHEDULES for m in every if m.options.get("schedule")
    )
    defaults = {m.name: m for m in every if m.family == "default"}
    assert all(
        m.options == {} and m.order == len(lrr_optax.DEFAULT_RATES) for m in defaults.values()
    )
    assert methods.library_rates(3)[-1] == lrr_optax.DEFAULT_RATES[-1]
    quick = {"full": False, "seeds": 2}
    every_quick = suite.all_methods(quick)
    order = [m for m in every_quick if m.family == "order"]
    core = [m for m in every_quick if m.family in ("default", "lr-free") or m.name == "adam"]
    light = len(suite.problem_names(quick)) - len(problems.HEAVY)
    expected = (len(every_quick) - len(order)) * light + len(order) * len(suite.ORDER_STUDY_QUICK)
    expected += len(core) * len(problems.HEAVY)
    assert len(suite.jobs(quick)) == expected
    heavy = {name for p, m in suite.jobs(quick) if p in problems.HEAVY for name in [m.name]}
    assert heavy == {m.name for m in core} and "adam" in heavy and "lrr_adam (defaults)" in heavy
    picked = {m.name for _, m in suite.jobs({**quick, "methods": ("=adam", "lrr_sgd")})}
    assert picked == {"adam", "lrr_sgd (defaults)"}
    # A variant given on the command line runs on every problem, the heavy ones included.
    asked = {**quick, "methods": ("=adam",), "variants": ("pooled:element_share=0.1",)}
    on = {p for p, m in suite.jobs(asked) if m.name == "pooled"}
    assert on == set(suite.problem_names(quick)) and on >= set(problems.HEAVY)
    roles = {suite.build_problem(p).role for p in ("rosenbrock", "diabetes")}
    assert roles == {"choose", "confirm"}


def test_late_max():
    curve = np.asarray([[5.0, 2.0, 1.0, 4.0, 3.0], [5.0, 4.0, 3.0, 2.0, 1.0], [3, 1, 2, np.nan, 5]])
    np.testing.assert_array_equal(metrics.late_max(curve), [4.0, 1.0, np.inf])


def test_runs_the_seed_median_hides():
    # Two grid points of five seeds: one late collapse at the first (median unchanged), a
    # NaN and a near-zero spread at the second; only the collapse and the NaN count.
    final = [[1e-3, 1.2e-3, 0.9e-3, 2.3, 1.1e-3], [0.0, 1e-9, 0.0, np.nan, 0.0]]
    result = {"final": final, "initial": np.full((2, 5), 2.3).tolist()}
    hidden = metrics.hidden_by_median(result)
    np.testing.assert_array_equal(hidden, [[0, 0, 0, 1, 0], [0, 0, 0, 1, 0]])


def test_runs_that_learned_then_lost_it():
    # Of four runs from 2.3: one collapses back to chance, one never learns, one ends in
    # NaN after learning, one learns and keeps it; only the first and the third count.
    curve = [
        [
            [2.3, 0.1, 1e-4, 2.3],
            [2.3, 2.2, 2.1, 2.0],
            [2.0, 0.01, 0.01, np.nan],
            [2, 0.1, 0.01, 0.01],
        ]
    ]
    result = {"curve": curve, "initial": np.full((1, 4), 2.3).tolist()}
    np.testing.assert_array_equal(metrics.lost(result), [[1, 0, 1, 0]])


def test_goal_against_a_tuned_adam_loss_of_zero():
    # Long budgets can drive Adam's loss to exactly 0: a worse default misses by inf, an
    # equal one is on par, and scoring never divides by zero.
    def scores(worst):
        row = {"worst_in_range": worst, "worst_in_low": worst, "lr_mode": "swept", "final": 0.0}
        return {"adam_best": 0.0, "methods": {"lrr_adam (defaults)": row}}

    missed = metrics.goal(scores(1e-3), "lrr_adam (defaults)")
    assert missed["worst_over_adam"] == np.inf and not missed["met"]
    on_par = metrics.goal(scores(0.0), "lrr_adam (defaults)")
    assert on_par["worst_over_adam"] == 1.0 and on_par["met"]


def test_lr_free_wins_count_problems_where_the_worst_case_is_lower():
    def problem(worst, prodigy, dog=None):
        methods = {
            "lrr_adam (defaults)": {"worst_in_range": worst, "lr_mode": "swept"},
            "prodigy": {"final": prodigy, "lr_mode": "default"},
            "adam": {"final": 1.0, "lr_mode": "tuned"},
        }
        if dog is not None:
            methods["dog"] = {"final": dog, "lr_mode": "default"}
        return {"methods": methods}

    scores = {"a": problem(1.0, 2.0, dog=0.5), "b": problem(3.0, 2.0), "c": problem(2.0, 2.0)}
    wins = metrics.lr_free_wins(scores, "lrr_adam (defaults)")
    # Ties are not wins; an optimizer counts only the problems it ran.
    assert wins == {"prodigy": (1, 3), "dog": (0, 1)}
    assert metrics.lr_free_wins(scores, "lrr_sgd (defaults)") == {}


# --- the quality suite --------------------------------------------------------------------------


def test_the_cnn_is_the_convolution_it_stands_for():
    """The CNN's patch matmuls compute ``lax.conv_general_dilated``'s stride-2 SAME conv."""
    from benchmarks.quality import models

    def reference(params, x):
        h = x[:, None, :]
        for conv in params["convs"]:
            h = jax.nn.relu(jax.lax.conv_general_dilated(h, conv["w"], (2,), "SAME") + conv["b"])
        return h.reshape(h.shape[0], -1) @ params["out"]["w"] + params["out"]["b"]

    params = models.init_cnn1d(jax.random.key(0))
    # Random biases, so that a transposed bias or channel order would show.
    params = jax.tree.map(
        lambda p: p + 0.1 * jax.random.normal(jax.random.key(1), p.shape, p.dtype), params
    )
    x = jax.random.normal(jax.random.key(2), (16, 40), jnp.float32)
    got, want = models.apply_cnn1d(params, x), reference(params, x)
    assert got.shape == (16, 10)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    # Odd lengths pad like SAME too.
    h = jax.random.normal(jax.random.key(3), (2, 7, 3), jnp.float32)
    w = jax.random.normal(jax.random.key(4), (4, 3, 5), jnp.float32)
    want = jax.lax.conv_general_dilated(
        h, jnp.transpose(w, (2, 1, 0)), (2,), "SAME", dimension_numbers=("NWC", "WIO", "NWC")
    )
    np.testing.assert_allclose(models._conv_same_stride2(h, w), want, rtol=1e-5, atol=1e-5)


def test_every_kind_of_method_trains():
    """One job per kind of method: traced rates, traced top rate, LR-free needing the loss."""
    problem = suite.build_problem("rosenbrock")
    chosen = [
        methods.Method("adam", "optax", "adam", lr="tuned", lrs=(1e-3, 1e-2)),
        methods.Method("momo", "lr-free", lr="default", contrib="momo_adam"),
        methods.Method("sf", "lr-free", lr="default", contrib="schedule_free_adamw"),
        # SGD from 0.1 diverges on the Rosenbrock function, whatever the top rate, and a top
        # rate of 1 lets the rates compound within the few steps run here.
        dataclasses.replace(methods.order_study(orders=(2,))[0], lrs=(1e-5,), tops=(1e-4, 0.1)),
        methods.with_lrs([methods.parse_variant("v:clip=0.5,direction=sgd")], (1e-3,))[0],
    ]
    # optax's own transformations rely on standard dtype promotion.
    with jax.numpy_dtype_promotion("standard"):
        results = [runner.run_job(problem, m, steps=8, seeds=2, n_evals=2) for m in chosen]
    for method, result in zip(chosen, results):
        final = np.asarray(result["final"])
        assert final.shape == (len(method.grid()), 2)
        assert np.all(np.isfinite(final)), method.name
        # Common random numbers: every method starts from the same parameters.
        assert np.all(np.asarray(result["initial"]) == results[0]["initial"][0][0])
    scores = report.score(results)["rosenbrock"]
    scored = [r for r in results if r["family"] != "order"]
    assert scores["best"] == min(np.median(r["final"], 1).min() for r in scored)
    assert set(scores["methods"]) == {r["method"] for r in scored}
    assert set(scores["order_study"]) == {"sgd"}


@pytest.fixture
def jax_cache_settings():
    """The entry point turns on the benchmarks' compilation cache: the test run's is restored."""
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    saved = {name: getattr(jax.config, name) for name in names}
    yield
    for name, value in saved.items():
        jax.config.update(name, value)


@pytest.mark.usefixtures("jax_cache_settings")
def test_quality_entry_point_in_process(tmp_path, capsys):
    argv = ["--problem", "rosenbrock", "--problem", "diabetes", "--steps", "4", "--seeds", "1"]
    raw = tmp_path / "raw"
    argv += ["--evals", "2", "--workers", "0", "--results", str(tmp_path), "--raw", str(raw)]
    argv += ["--methods", "lrr_adam"]
    argv += ["--variant", "bigger top:rates=(0.3,0.1)", "--out", "tiny"]
    with jax.numpy_dtype_promotion("standard"):
        assert cli.main(argv) == 0
    text = (tmp_path / "tiny.md").read_text()
    assert "Command: `python -m benchmarks --problem rosenbrock" in text
    assert report.ROLES["choose"] in text and report.ROLES["confirm"] in text
    assert "| bigger top |" in text and "late max" in text
    summary = json.loads((tmp_path / "tiny.json").read_text())
    assert set(summary["scores"]) == {"rosenbrock", "diabetes"}
    assert summary["meta"]["variants"] == {"bigger top": {"direction": "adam", "rates": [0.3, 0.1]}}
    assert set(summary["scores"]["diabetes"]["methods"]) == {"lrr_adam (defaults)", "bigger top"}
    assert all((tmp_path / f"tiny{s}.png").stat().st_size > 0 for s in ("", "_curves"))
    assert "Problems the defaults were chosen on" in capsys.readouterr().out
    # The report is a function of the raw results alone: redone from them, it is the same.
    (tmp_path / "tiny.md").unlink()
    assert cli.main(["--report", "tiny", "--results", str(tmp_path), "--raw", str(raw)]) == 0
    assert (tmp_path / "tiny.md").read_text() == text
    with pytest.raises(SystemExit, match="no raw results"):
        cli.main(["--report", "missing", "--raw", str(raw)])


def test_demo_entry_point(tmp_path):
    """``python -m benchmarks --demo``, with worker processes, on a tiny budget."""
    out = _python(
        "benchmarks",
        "--demo",
        "--problem",
        "rosenbrock",
        "--steps",
        "4",
        "--seeds",
        "1",
        "--evals",
        "2",
        "--workers",
        "1",
        "--results",
        str(tmp_path),
        "--raw",
        str(tmp_path / "raw"),
    )
    header = "| problem | method | from 1e-06 | from 0.0001 | from 0.01 | from 1 | tuned Adam (lr)"
    assert header in out
    assert "| rosenbrock (choose) | lrr_adam (defaults) |" in out
    assert (tmp_path / "demo.md").exists() and (tmp_path / "raw" / "demo.json").exists()


# --- the speed suite ----------------------------------------------------------------------------


def test_speed_defaults_keeps_the_optimizers_it_is_given_by_whole_name(tmp_path, capsys):
    from benchmarks.speed import defaults

    name = 'lrr_adam(1e-3, granularity="parameter")'  # a comma inside the name
    with jax.numpy_dtype_promotion("standard"):  # a script, run as users run optax
        defaults.main(
            ["--size", "64", "--steps", "2", "--reps", "1", "--rounds", "1", "--only", name]
            + ["--out", str(tmp_path), "--name", "speed"]
        )
    rows = [line for line in (tmp_path / "speed.md").read_text().splitlines() if "|" in line]
    assert [row.split("|")[1].strip() for row in rows[2:]] == ["optax.adam(1e-3)", name]
    with pytest.raises(SystemExit):
        defaults.main(["--only", "lrr_adam(1e-3", "--out", str(tmp_path)])
    assert "names no optimizer; the names are: 'optax.adam(1e-3)'" in capsys.readouterr().err


def test_speed_entry_point(tmp_path):
    out = _python(
        "benchmarks.speed",
        "--sizes",
        "4K",
        "--orders",
        "0-1",
        "--rules",
        "additive",
        "--granularities",
        "parameter",
        "--baselines",
        "adam",
        "--no-scan",
        "--min-time",
        "0.01",
        "--rss-sizes",
        "",
        "--cpu",
        "none",
        "--out",
        str(tmp_path),
        "--raw",
        str(tmp_path / "raw"),
    )
    assert "lrr m=1 additive parameter" in out
    text = (tmp_path / "speed.md").read_text()
    assert text.startswith("# Speed and memory of one optimizer step")
    assert "| adam |" in text and "Command: `python -m benchmarks.speed --sizes 4K" in text
    records = json.loads((tmp_path / "raw" / "speed.json").read_text())["results"]
    assert {r["name"] for r in records} >= {"adam", "lrr m=0", "lrr m=1 additive parameter"}


def test_speed_bytes_entry_point(tmp_path):
    out = _python(
        "benchmarks.speed.bytes",
        *("--size", "4K", "--orders", "1-2", "--compile-repeats", "1", "--out", str(tmp_path)),
    )
    assert "lrr m=2 casc additive parameter" in out
    text = (tmp_path / "speed_bytes.md").read_text()
    assert text.startswith("# Compiled bytes of one step against the byte model")
    assert "| adam | 28 |" in text and "- simultaneous, additive:" in text


def test_speed_compile_entry_point(tmp_path):
    out = _python(
        "benchmarks.speed.compile",
        *(
            "--leaves",
            "1,3",
            "--methods",
            "adam,lrr_adam",
            "--repeats",
            "1",
            "--out",
            str(tmp_path),
        ),
    )
    assert "lrr_adam" in out
    text = (tmp_path / "speed_compile.md").read_text()
    assert text.startswith("# Compile time against the number of parameter leaves")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in ("adam", "lrr_adam"):
            rows[cells[0], int(cells[1])] = cells
    assert set(rows) == {(m, n) for m in ("adam", "lrr_adam") for n in (1, 3)}
    assert rows["adam", 3][6] == "1.0" and rows["adam", 1][7] == "—"
    # Each leaf is compiled into kernels of its own: both programs grow with the leaves.
    for method in ("adam", "lrr_adam"):
        assert int(rows[method, 3][9]) > int(rows[method, 1][9]) > 0
        assert int(rows[method, 3][8]) > int(rows[method, 1][8])


def test_speed_compile_refuses_bad_arguments():
    from benchmarks.speed import compile as compile_benchmark

    with pytest.raises(SystemExit, match="unknown method 'adamw'"):
        compile_benchmark.main(["--methods", "adam,adamw"])
    with pytest.raises(SystemExit, match="positive counts"):
        compile_benchmark.main(["--leaves", "0,4"])


@pytest.mark.usefixtures("jax_cache_settings")
def test_balance_entry_point_reads_the_sign_of_the_hypergradient(tmp_path, capsys):
    from benchmarks.quality import balance

    argv = ["--problem", "noisy_quadratic", "--rates", "1e-4,0.3", "--horizons", "0,0.9"]
    argv += ["--seeds", "2", "--steps", "40", "--out", str(tmp_path), "--name", "tiny"]
    with jax.numpy_dtype_promotion("standard"):
        assert balance.main(argv) == 0
    text = (tmp_path / "tiny.md").read_text()
    assert text.startswith("# Where the hypergradient balances: noisy_quadratic")
    rows = [line for line in text.splitlines() if line.startswith("| h̄/σ, γ = ")]
    assert [row.split(" | ")[0] for row in rows] == ["| h̄/σ, γ = 0", "| h̄/σ, γ = 0.9"]
    # From a rate 1e-4 every step still lowers the loss: the hypergradient says "raise".
    assert all(float(row.split(" | ")[1]) < 0 for row in rows), rows
    assert "γ = 0.9: h̄/σ 0.0001: -" in capsys.readouterr().out


def test_balance_point_and_bad_arguments():
    from benchmarks.quality import balance

    assert balance.balance_point([0.01, 0.1], [-1.0, 1.0]) == "0.032"
    assert balance.balance_point([0.01, 0.1, 1.0], [-1.0, -0.5, 0.5]) == "0.32"
    assert balance.balance_point([0.01, 0.1], [0.2, 1.0]) == "below 0.01"
    assert balance.balance_point([0.01, 0.1], [-0.2, -1.0]) == "above 0.1"
    with pytest.raises(SystemExit, match="ascending"):
        balance.main(["--problem", "noisy_quadratic", "--rates", "0.1,0.01"])
    with pytest.raises(SystemExit, match="0 ≤ γ < 1"):
        balance.main(["--problem", "noisy_quadratic", "--horizons", "0,1"])


def test_speed_kernels_entry_point(tmp_path):
    out = _python(
        "benchmarks.speed.kernels",
        *("--size", "64K", "--methods", "adam,lrr-m1-parameter", "--steps", "3"),
        *("--cpu", "none", "--out", str(tmp_path)),
    )
    assert "lrr-m1-parameter" in out
    text = (tmp_path / "speed_kernels.md").read_text()
    assert text.startswith("# Where one step's time goes, kernel by kernel")
    adam, lrr = text.split("### adam")[1].split("### lrr-m1-parameter")
    # Adam updates every buffer in place; the order-1 step writes d_n without reading it.
    assert "0 write-allocate" in adam and "write-allocate)" not in adam
    assert "| state.prev_direction['a'] (write-allocate) |" in lrr
    # The parameters' kernel reads the rate the rates' kernel wrote.
    assert "| params['a'], grads['a'], new state.etas[0]['a'] | params['a'] |" in lrr
    # Every kernel has a time from the trace (its bandwidth is finite and positive).
    rows = [row for row in lrr.splitlines() if row.startswith("| ") and "_fusion" in row]
    assert len(rows) == 6 and all(float(row.split("|")[-2]) > 0 for row in rows), lrr


def test_speed_kernels_reads_the_speed_benchmarks_configuration_names():
    from benchmarks.speed import kernels

    config = kernels._config("lrr m=2 casc additive parameter")
    assert (config.order, config.schedule, config.rule) == (2, "cascade", "additive")
    assert kernels._config("lrr m=1 log_normalized tensor").schedule == "simultaneous"
    assert kernels._config("lrr_adam") is None
    with pytest.raises(SystemExit, match="unknown method 'lrr m=2'"):
        kernels.main(["--methods", "lrr m=2", "--out", "/nonexistent"])


# XLA:GPU wraps runs of kernels in calls of command-buffer computations; their kernels count.
_GPU_LIKE_HLO = """HloModule step

%fused_add (p0: f32[1024], p1: f32[1024]) -> f32[1024] {
  %p0 = f32[1024]{0} parameter(0)
  %p1 = f32[1024]{0} parameter(1)
  ROOT %add = f32[1024]{0} add(%p0, %p1)
}

%body (carry: f32[1024]) -> f32[1024] {
  %carry = f32[1024]{0} parameter(0)
  ROOT %scaled = f32[1024]{0} fusion(%carry, %carry), kind=kLoop, calls=%fused_add
}

%command_buffer (a: f32[1024], b: f32[1024]) -> f32[1024] {
  %a = f32[1024]{0} parameter(0)
  %b = f32[1024]{0} parameter(1)
  ROOT %fusion = f32[1024]{0} fusion(%a, %b), kind=kLoop, calls=%fused_add
}

%loop_buffer (c: f32[1024]) -> f32[1024] {
  %c = f32[1024]{0} parameter(0)
  ROOT %while = f32[1024]{0} while(%c), condition=%cond, body=%body
}

ENTRY %main (x: f32[1024], y: f32[1024]) -> f32[1024] {
  %x = f32[1024]{0} parameter(0)
  %y = f32[1024]{0} parameter(1)
  %call = f32[1024]{0} call(%x, %y), to_apply=%command_buffer
  %copy = f32[1024]{0} copy(%call)
  ROOT %call.1 = f32[1024]{0} call(%copy), to_apply=%loop_buffer
}
"""


def test_hlo_analysis_walks_into_called_computations():
    from benchmarks.speed import hlo

    analysis = hlo.analyze(_GPU_LIKE_HLO)
    # The fusion inside the command buffer (two reads, one write) and the copy.
    assert (analysis.fusions, analysis.copies, analysis.kernels) == (1, 1, 2)
    assert analysis.bytes_moved == 3 * 4096 + 2 * 4096
    assert hlo.while_body(_GPU_LIKE_HLO) == "body"
    assert hlo.analyze(_GPU_LIKE_HLO, "body").bytes_moved == 3 * 4096


def test_a_worker_ends_with_its_parent():
    # The parent starts a child that watches it, then dies at once, as a run stopped by a
    # signal does; the child (which would sleep for ten minutes) must end soon after. The
    # child writes nowhere, so that the parent's output pipe closes with the parent. The
    # deadline leaves room for importing jax on a loaded machine (24 s measured under load).
    child_code = (
        "import sys, time; from benchmarks.quality import runner; "
        "runner.exit_with(int(sys.argv[1]), interval=0.05); time.sleep(600)"
    )
    parent_code = (
        "import os, subprocess, sys; "
        f"child = subprocess.Popen([sys.executable, '-c', {child_code!r}, str(os.getpid())], "
        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "print(child.pid, flush=True)"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", parent_code], cwd=root, env=env, capture_output=True, text=True
    )
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 120
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    # An exited child that nobody has reaped yet is a zombie ("Z"), not alive.
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")
