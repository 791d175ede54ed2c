"""Training runs: one compiled program per (problem, method), and the worker processes.

A job trains one method on one problem for every point of the method's hyperparameter
grid and every seed at once: the grid and the seeds are vmapped inside one ``jit``, the
learning rates entering as traced arguments. Common random numbers: seed s gives every
method the same initial parameters and the same minibatches.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from .._common import enable_compilation_cache
from . import methods as m

QUANTILES = (0.1, 0.5, 0.9)  # of each order's rates over all their entries


def configure_jax(threads_per_process: int = 1) -> None:
    """Single-threaded XLA (before jax is imported) and the persistent compilation cache."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "multi_thread_eigen" not in flags and threads_per_process == 1:
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["XLA_FLAGS"] = flags.strip()
    enable_compilation_cache()


def _eta_quantiles(state, max_order):
    import jax
    import jax.numpy as jnp

    rows = []
    for j in range(max_order):
        if j < len(state.etas):
            flat = jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(state.etas[j])])
            rows.append(jnp.quantile(flat.astype(jnp.float32), jnp.asarray(QUANTILES)))
        else:
            rows.append(jnp.full(len(QUANTILES), jnp.nan, jnp.float32))
    return jnp.stack(rows)


def build_program(problem, method, steps: int, n_evals: int, max_order: int = 4):
    """The jitted ``(grid, seeds, data) -> results`` of one job."""
    import jax
    import jax.numpy as jnp
    import optax

    chunk = steps // n_evals
    eval_params = m.eval_params(method)
    needs_value, records_rates = m.needs_value(method), m.records_rates(method)

    def one(hp, seed, data):
        key = jax.random.key(seed)
        params = problem.init(jax.random.fold_in(key, 0))
        batch_key = jax.random.fold_in(key, 1)
        tx = m.build(method, hp)
        state = tx.init(params)

        def step(carry, i):
            params, state = carry
            batch = problem.sample(data, jax.random.fold_in(batch_key, i))
            value, grads = jax.value_and_grad(problem.loss)(params, batch)
            extra = {"value": value} if needs_value else {}
            updates, state = tx.update(grads, state, params, **extra)
            return (optax.apply_updates(params, updates), state), None

        def block(carry, c):
            carry, _ = jax.lax.scan(step, carry, c * chunk + jnp.arange(chunk))
            params, state = carry
            loss = problem.train_loss(data, eval_params(state, params))
            etas = _eta_quantiles(state, max_order) if records_rates else jnp.zeros(())
            return carry, (loss, etas)

        initial = problem.train_loss(data, params)
        (params, state), (curve, etas) = jax.lax.scan(block, (params, state), jnp.arange(n_evals))
        scored = eval_params(state, params)
        test = problem.test_metric(data, scored) if problem.test_metric else jnp.nan
        return {"initial": initial, "curve": curve, "test": test, "etas": etas}

    per_seed = jax.vmap(one, (None, 0, None))
    return jax.jit(jax.vmap(per_seed, (0, None, None)))


def run_job(problem, method, *, steps: int, seeds: int, n_evals: int) -> dict[str, Any]:
    """Train ``method`` on ``problem`` over its whole grid and ``seeds`` seeds."""
    import jax.numpy as jnp

    start = time.time()
    n_evals = max(1, min(n_evals, steps))
    steps -= steps % n_evals  # whole blocks between evaluations
    program = build_program(problem, method, steps, n_evals)
    grid = method.grid()
    out = program(jnp.asarray(grid, jnp.float32), jnp.arange(seeds, dtype=jnp.int32), problem.data)
    out = {k: np.asarray(v, np.float64) for k, v in out.items()}
    curve = out["curve"]  # (points, seeds, evals)
    return {
        "problem": problem.name,
        "method": method.name,
        "family": method.family,
        "direction": method.direction,
        "order": method.order,
        "lr_mode": method.lr,
        "options": repr(method.options),
        "grid": grid.tolist(),
        "eval_steps": [steps // n_evals * (c + 1) for c in range(n_evals)],
        "initial": out["initial"].tolist(),
        "final": curve[..., -1].tolist(),
        "curve": curve.tolist(),
        "test": out["test"].tolist(),
        "etas": out["etas"].tolist() if m.records_rates(method) else None,
        "seconds": time.time() - start,
    }


# --- worker processes ------------------------------------------------------------------------


def _worker(parent: int, core: int | None, jobs, results, options) -> None:
    # The spawner's pid, not ``os.getppid()``: a run stopped while this worker was starting
    # would leave it a child of init, which it would then watch for ever.
    exit_with(parent)
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    configure_jax()
    import traceback

    while (job := jobs.get()) is not None:
        problem_name, method = job
        try:
            results.put(("ok", (problem_name, method.name), _run(problem_name, method, options)))
        except Exception:  # report, keep serving the other jobs
            results.put(("error", (problem_name, method.name), traceback.format_exc()))


def exit_with(parent: int, interval: float = 5.0) -> None:
    """End this process once ``parent`` is no longer its parent.

    A run stopped by a signal leaves its workers alive (daemonic processes are ended only by
    a parent that exits normally), and a worker inside a job would keep a core busy for the
    rest of that job, up to hours on a long budget.
    """
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _run(problem_name: str, method, options: dict) -> dict[str, Any]:
    from . import suite

    problem = suite.build_problem(problem_name)  # built once per process
    steps = options.get("steps") or (problem.full_steps if options["full"] else problem.steps)
    return run_job(problem, method, steps=steps, seeds=options["seeds"], n_evals=options["n_evals"])


def run_serial(jobs: list[tuple[str, m.Method]], options: dict, progress=None):
    """Run ``jobs`` in this process, with jax as it is configured here (for tests)."""
    import traceback

    results, errors = [], []
    for problem_name, method in jobs:
        job = (problem_name, method.name)
        try:
            results.append(_run(problem_name, method, options))
            status = "ok"
        except Exception:  # report, run the other jobs
            errors.append((job, traceback.format_exc()))
            status = "error"
        if progress is not None:
            progress(job, status)
    return results, errors


def run_parallel(jobs: list[tuple[str, m.Method]], options: dict, workers: int, progress=None):
    """Run ``jobs`` on ``workers`` spawned processes (in this process when ``workers`` is 0),
    each pinned to its own core when there is one worker per core this process may use.

    With fewer workers they are not pinned, so two runs started side by side (or under
    ``taskset``) do not both land on the first core."""
    if workers == 0:
        return run_serial(jobs, options, progress)
    import multiprocessing as mp

    context = mp.get_context("spawn")
    job_queue, result_queue = context.Queue(), context.Queue()
    for job in jobs:
        job_queue.put(job)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    processes = []
    for w in range(workers):
        job_queue.put(None)
        core = cores[w] if cores and workers == len(cores) else None
        process = context.Process(
            target=_worker, args=(os.getpid(), core, job_queue, result_queue, options), daemon=True
        )
        process.start()
        processes.append(process)
    results, errors = [], []
    for _ in jobs:
        status, job, payload = result_queue.get()
        (results if status == "ok" else errors).append(
            payload if status == "ok" else (job, payload)
        )
        if progress is not None:
            progress(job, status)
    for process in processes:
        process.join()
    return results, errors
