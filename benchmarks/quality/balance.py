"""Where the hypergradient balances: its signal-to-noise ratio at fixed learning rates.

Run from the repository root::

    python -m benchmarks.quality.balance --problem noisy_quadratic --rates 0.01,0.03,0.1,0.3
    python -m benchmarks.quality.balance --problem digits --rates 1e-3,1e-2 --horizons 0,0.99

A learned rate settles where its hypergradient h⁽⁰⁾ is zero on average. For each fixed rate η,
horizon γ and seed, this trains the problem's quick budget (or ``--steps``) with the rate held
(``lrr_adam`` or ``lrr_sgd`` with a top rate of 0, no warm-up, no spike rescale, one global
rate, no bounds, ``horizon=γ``: the step is the direction's at η). It reports the final train
loss (seed median) and h̄/σ, the mean of h⁽⁰⁾ over the last four fifths of the steps, all
seeds together, over its standard deviation. Positive says "lower the rate", negative "raise
it"; the balance point, where the sign changes, is what a learned rate tends to, to compare
with the rate of the lowest loss. The report goes to ``benchmarks/results/NAME.md`` with the
command, date and machine.
"""

from __future__ import annotations

import argparse
import math
import time

from .. import _common
from . import problems


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality.balance",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--problem", required=True, choices=sorted(problems.BUILDERS))
    parser.add_argument("--rates", default="1e-3,1e-2,1e-1", help="fixed rates, ascending")
    parser.add_argument("--horizons", default="0,0.9,0.99", help="horizons γ in [0, 1)")
    parser.add_argument("--direction", default="adam", choices=("adam", "sgd"))
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="default: the quick budget")
    parser.add_argument("--out", default=str(_common.RESULTS), help="folder for NAME.md")
    parser.add_argument("--name", default=None, help="file name stem (balance_PROBLEM)")
    return parser


def _numbers(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def measure(problem, rates, horizon: float, seeds: int, steps: int, direction: str) -> dict:
    """Final losses (rates × seeds) and h̄/σ per rate at one horizon."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import lrr_optax

    alias = lrr_optax.lrr_adam if direction == "adam" else lrr_optax.lrr_sgd

    def run(rate, seed):
        tx = alias(
            rate,
            rates=(0.0,),
            warmup_steps=0,
            spike_rescale=False,
            granularity="global",
            horizon=horizon,
            bounds=None,
        )
        step = lrr_optax.update_with_hypergradients(tx)
        init_key, key = jax.random.split(jax.random.PRNGKey(seed))
        params = problem.init(init_key)

        def body(carry, key):
            params, state = carry
            grads = jax.grad(problem.loss)(params, problem.sample(problem.data, key))
            updates, state, aux = step(grads, state, params)
            return (optax.apply_updates(params, updates), state), aux.hypergradients[0]

        carry = (params, tx.init(params))
        (params, _), hs = jax.lax.scan(body, carry, jax.random.split(key, steps))
        return problem.train_loss(problem.data, params), hs

    grid = jax.jit(jax.vmap(jax.vmap(run, (None, 0)), (0, None)))
    losses, hs = grid(jnp.asarray(rates, jnp.float32), jnp.arange(seeds))
    losses, hs = np.asarray(losses), np.asarray(hs)[:, :, steps // 5 :]
    snr = []
    for h in hs.reshape(len(rates), -1):
        spread = float(h.std())
        snr.append(float(h.mean()) / spread if spread > 0 else float("nan"))
    return {"horizon": horizon, "losses": np.median(losses, axis=1).tolist(), "snr": snr}


def balance_point(rates, snr) -> str:
    """The rate where h̄/σ first turns from negative to positive, log-interpolated."""
    for (r0, s0), (r1, s1) in zip(zip(rates, snr), zip(rates[1:], snr[1:])):
        if s0 < 0 <= s1:
            w = s0 / (s0 - s1)
            return f"{math.exp(math.log(r0) + w * (math.log(r1) - math.log(r0))):.2g}"
    if all(s >= 0 for s in snr):
        return f"below {rates[0]:g}"
    if all(s < 0 for s in snr):
        return f"above {rates[-1]:g}"
    return "—"


def render(meta: dict, results: list[dict]) -> str:
    rates = meta["rates"]
    lines = [_common.header(f"Where the hypergradient balances: {meta['problem']}", meta)]
    lines += [
        f"`lrr_{meta['direction']}` with η⁽⁰⁾ held at each rate (top rate 0, no warm-up, no "
        "spike rescale, one global rate, no bounds), "
        f"{meta['steps']} steps, {meta['seeds']} seeds. *final loss*: the seed median of the "
        "train loss (the same at every horizon: the step does not depend on it). *h̄/σ*: the "
        "mean of h⁽⁰⁾ over the last four fifths of the steps, all seeds together, over its "
        'standard deviation; positive says "lower the rate". *balance*: where h̄/σ turns '
        "positive, log-interpolated between the rates.",
        "",
        "| | " + " | ".join(f"η = {r:g}" for r in rates) + " | balance |",
        "|---|" + "---|" * (len(rates) + 1),
        "| final loss | " + " | ".join(f"{x:.3g}" for x in results[0]["losses"]) + " | |",
    ]
    for r in results:
        lines.append(
            f"| h̄/σ, γ = {r['horizon']:g} | "
            + " | ".join(f"{s:+.3f}" for s in r["snr"])
            + f" | {balance_point(rates, r['snr'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rates, horizons = _numbers(args.rates), _numbers(args.horizons)
    if not rates or any(r <= 0 for r in rates) or rates != sorted(rates):
        raise SystemExit("--rates takes positive rates in ascending order")
    if not horizons or any(not 0 <= g < 1 for g in horizons):
        raise SystemExit("--horizons takes horizons γ with 0 ≤ γ < 1")
    if args.seeds < 1 or (args.steps is not None and args.steps < 5):
        raise SystemExit("--seeds takes at least 1, --steps at least 5")
    _common.enable_compilation_cache()
    problem = problems.BUILDERS[args.problem]()
    steps = args.steps or problem.steps
    meta = _common.run_meta("python -m benchmarks.quality.balance", argv)
    meta.update(
        problem=args.problem,
        rates=rates,
        direction=args.direction,
        seeds=args.seeds,
        steps=steps,
    )
    start = time.perf_counter()
    results = []
    for horizon in horizons:
        r = measure(problem, rates, horizon, args.seeds, steps, args.direction)
        results.append(r)
        print(
            f"γ = {horizon:g}: h̄/σ "
            + ", ".join(f"{rate:g}: {s:+.3f}" for rate, s in zip(rates, r["snr"]))
            + f"; balance {balance_point(rates, r['snr'])}",
            flush=True,
        )
    name = args.name or f"balance_{args.problem}"
    _common.write_report(meta, start, args.out, name, lambda meta: render(meta, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
