"""Error rates of the plugin's confidence bounds, measured through the production functions.

Three measurements, one per kind of bound (``benchmarks/RESULTS.md``, "Verdicts a release can
trust"):

- ``paired``: 0/1 scores, ``stats.score_bounds``, by exact enumeration. Every (worse, better,
  same) outcome of n paired items is enumerated; the probability that a gate passes wrongly
  (upper bound at or below the true loss) and that an alarm fires wrongly (lower bound above it)
  is summed exactly under each true (flip rate, loss) of a grid. ``--cc`` replaces the continuity
  correction (0 shows the uncorrected Tango bounds). For n above 500 the outcomes are cut at
  ``--max-changed`` changed answers; the probability mass cut away is printed and bounds the
  error of the figure.
- ``continuous``: ``stats.studentized_bounds`` (bootstrap-t) and the t-interval on the per-item
  differences of real results, by simulation: n items are drawn with replacement from a scheme's
  per-item differences to the baseline, the truth is the population mean. The per-item results
  come from a demo cache (``--cache-dir`` of ``make demo`` or ``bench_demo.py --keep-cache``).
- ``pooled``: ``stats.pooled_score_bounds`` on macro-weighted pools of tasks, by simulation.

Monte-Carlo standard errors are printed with every simulated figure.

    python benchmarks/bench_error_rates.py paired --n 20 50 100 150 --confidence 0.95
    python benchmarks/bench_error_rates.py paired --n 150 --cc 0          # the uncorrected Tango bounds
    python benchmarks/bench_error_rates.py paired --n 20 50 --conditional  # the retired method: exact
    python benchmarks/bench_error_rates.py continuous --cache-dir /tmp/demo-cache --draws 2000
    python benchmarks/bench_error_rates.py pooled --draws 20000
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_quant import stats  # noqa: E402

_EPS = 1e-12


# -- paired 0/1: exact enumeration -------------------------------------------------------------
def _outcomes(n: int, max_changed: int) -> tuple[np.ndarray, np.ndarray]:
    w, b = np.meshgrid(np.arange(max_changed + 1), np.arange(max_changed + 1), indexing="ij")
    keep = w + b <= max_changed
    return w[keep].astype(float), b[keep].astype(float)


def _pmf(w: np.ndarray, b: np.ndarray, n: int, p_worse: float, p_better: float) -> np.ndarray:
    from scipy.special import gammaln

    same = n - w - b
    log = gammaln(n + 1) - gammaln(w + 1) - gammaln(b + 1) - gammaln(same + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        for count, p in ((w, p_worse), (b, p_better), (same, 1.0 - p_worse - p_better)):
            log = log + np.where(count > 0, count * np.log(p) if p > 0 else -np.inf, 0.0)
    return np.exp(log)


def _conditional_bounds(w: np.ndarray, b: np.ndarray, n: int, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The retired ``method: exact``: Clopper-Pearson on the share of losses among the changed answers,
    scaled by the observed share of changed answers (so it treats that number as fixed)."""
    from scipy.stats import beta

    alpha, changed = 1 - confidence, w + b
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(w > 0, beta.ppf(alpha, w, changed - w + 1), 0.0)
        hi = np.where(w < changed, beta.ppf(1 - alpha, w + 1, changed - w), 1.0)
    lower, upper = changed / n * (2 * lo - 1), changed / n * (2 * hi - 1)
    none = 1 - alpha ** (1 / n)  # no changed answer: the flip rate's one-sided bound
    return np.where(changed == 0, -none, lower), np.where(changed == 0, none, upper)


def paired(args: argparse.Namespace) -> None:
    if args.cc is not None:
        stats.SCORE_CC_PER_Z = args.cc
    bounds = _conditional_bounds if args.conditional else stats.score_bounds
    flips = np.arange(args.flip_step, args.max_flip + 1e-9, args.flip_step)
    shares = np.linspace(-1.0, 1.0, args.losses)
    method = (
        "retired conditional (McNemar/Clopper-Pearson)"
        if args.conditional
        else f"continuity correction {stats.SCORE_CC_PER_Z} z"
    )
    print(f"{method}; flip rates {flips[0]:.3f}-{flips[-1]:.3f} "
          f"(step {args.flip_step}), {args.losses} true losses from -flip to +flip")
    print(f"{'conf':>5s} {'n':>6s} {'false pass':>11s} {'at (flip, loss)':>17s} {'false alarm':>12s} "
          f"{'at (flip, loss)':>17s} {'cut mass':>9s} {'s':>6s}")
    for confidence in args.confidence:
        for n in args.n:
            start = time.perf_counter()
            m = n if n <= 500 else min(n, args.max_changed)
            w, b = _outcomes(n, m)
            lower, upper = bounds(w, b, n, confidence)
            worst_pass = worst_alarm = cut = 0.0
            at_pass = at_alarm = (0.0, 0.0)
            for flip in flips:
                for share in shares:
                    loss = share * flip
                    pmf = _pmf(w, b, n, (flip + loss) / 2, (flip - loss) / 2)
                    cut = max(cut, 1.0 - float(pmf.sum()))
                    false_pass = float(pmf[upper <= loss + _EPS].sum())
                    false_alarm = float(pmf[lower > loss + _EPS].sum())
                    if false_pass > worst_pass:
                        worst_pass, at_pass = false_pass, (flip, loss)
                    if false_alarm > worst_alarm:
                        worst_alarm, at_alarm = false_alarm, (flip, loss)
            print(f"{confidence:5.2f} {n:6d} {worst_pass:11.2%} {at_pass[0]:8.3f},{at_pass[1]:+8.4f} "
                  f"{worst_alarm:12.2%} {at_alarm[0]:8.3f},{at_alarm[1]:+8.4f} {cut:9.1e} "
                  f"{time.perf_counter() - start:6.1f}", flush=True)


# -- continuous: simulation on real per-item differences ------------------------------------------
def _demo_differences(cache: Path, task: str) -> dict[str, np.ndarray]:
    """Per-item candidate - baseline scores of every scheme the demo cache evaluated on ``task``."""
    baseline = json.loads((ROOT / "baselines" / "smollm2-135m-instruct.json").read_text())
    base = baseline["tasks"][task]["result"]
    ref = dict(zip(base["item_ids"], base["scores"], strict=True))
    out: dict[str, np.ndarray] = {}
    for line in (cache / "builds.log").read_text().splitlines():
        entry = json.loads(line)
        parts = entry.get("label", "").split("/")
        if entry.get("kind") != "result" or entry.get("event") != "built" or len(parts) < 3 or parts[-1] != task:
            continue
        result = json.loads((cache / "results" / f"{entry['key']}.json").read_text())
        if result["item_ids"] != base["item_ids"]:
            raise SystemExit(f"{cache}: {parts[-2]}/{task} was evaluated on other items than the baseline")
        out[parts[-2]] = np.array([s - ref[i] for i, s in zip(result["item_ids"], result["scores"], strict=True)])
    if not out:
        raise SystemExit(f"{cache / 'builds.log'}: no result of task {task!r} (run the demo with this cache first)")
    return out


def _t_bounds(x: np.ndarray, confidence: float) -> tuple[float, float]:
    from scipy.stats import t

    se = float(x.std(ddof=1)) / math.sqrt(x.size)
    q = float(t.ppf(confidence, x.size - 1))
    return float(x.mean()) - q * se, float(x.mean()) + q * se


def continuous(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    mc_se = math.sqrt((1 - args.confidence) * args.confidence / args.draws)
    print(f"task {args.task}, {args.draws} draws per cell (MC se of a {1 - args.confidence:.0%} rate: {mc_se:.2%}), "
          f"{args.resamples} bootstrap resamples, confidence {args.confidence}")
    print("false pass = upper bound below the true mean loss; false alarm = lower bound above it")
    for scheme, d in sorted(_demo_differences(args.cache_dir, args.task).items()):
        truth = float(d.mean())
        skew = float(((d - truth) ** 3).mean() / d.std() ** 3) if d.std() > 0 else 0.0
        cells = []
        for n in args.n:
            miss = {"t": [0, 0], "bootstrap-t": [0, 0]}
            for _ in range(args.draws):
                x = d[rng.integers(0, d.size, n)]
                found = {
                    "t": _t_bounds(x, args.confidence),
                    "bootstrap-t": stats.studentized_bounds(
                        x, args.confidence, resamples=args.resamples, seed=int(rng.integers(1 << 30))
                    ),
                }
                for name, (lo, hi) in found.items():
                    miss[name][0] += hi < truth
                    miss[name][1] += lo > truth
            cells.append(" ".join(f"{k} {v[0] / args.draws:.1%}/{v[1] / args.draws:.1%}" for k, v in miss.items()))
        print(f"{scheme} ({d.size} items, skewness {skew:.2f})")
        for n, cell in zip(args.n, cells, strict=True):
            print(f"  n={n:4d}: {cell}   (false pass / false alarm)", flush=True)


# -- pooled: simulation ----------------------------------------------------------------------------
POOLS = {
    "Open LLM Leaderboard v1 sizes": ([1172, 10042, 14042, 1267, 817, 1319], [0.03, 0.02, 0.04, 0.03, 0.05, 0.10]),
    "50 / 500 / 200": ([50, 500, 200], [0.10, 0.02, 0.05]),
    "30 / 1000": ([30, 1000], [0.20, 0.01]),
    "1172 / 1319": ([1172, 1319], [0.03, 0.12]),
    "4 x 200": ([200, 200, 200, 200], [0.01, 0.01, 0.01, 0.01]),
}


def pooled(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    mc_se = math.sqrt(0.05 * 0.95 / args.draws)
    print(f"{args.draws} draws per loss pattern (MC se of a 5% rate: {mc_se:.2%}); macro weights; confidence 0.95")
    print(f"{'pool (items; flip rates)':60s} {'false pass':>11s} {'false alarm':>12s}")
    for name, (sizes_, flips_) in POOLS.items():
        sizes, flips = np.asarray(sizes_, dtype=float), np.asarray(flips_, dtype=float)
        weights = np.full(sizes.size, 1 / sizes.size)
        patterns = [np.full(sizes.size, s) for s in (-1.0, -0.5, 0.0, 0.5, 1.0)]
        patterns.append(np.where(np.arange(sizes.size) % 2 == 0, 1.0, -1.0))
        worst_pass = worst_alarm = 0.0
        for shares in patterns:
            loss = shares * flips
            p_worse, p_better = (flips + loss) / 2, (flips - loss) / 2
            truth = float(np.sum(weights * loss))
            worse = rng.binomial(sizes.astype(int), p_worse, size=(args.draws, sizes.size)).astype(float)
            better = rng.binomial((sizes - worse).astype(int), p_better / (1 - p_worse)).astype(float)
            lower, upper = stats.pooled_score_bounds(worse, better, sizes, weights, 0.95)
            worst_pass = max(worst_pass, float(np.mean(upper <= truth + _EPS)))
            worst_alarm = max(worst_alarm, float(np.mean(lower > truth + _EPS)))
        label = f"{name} ({', '.join(f'{f:.0%}' for f in flips_)})"
        print(f"{label:60s} {worst_pass:11.2%} {worst_alarm:12.2%}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("paired", help="0/1 score bounds by exact enumeration")
    p.add_argument("--n", type=int, nargs="+", default=[20, 50, 100, 150, 500])
    p.add_argument("--confidence", type=float, nargs="+", default=[0.95])
    p.add_argument("--cc", type=float, default=None, help="continuity correction per z (default: the plugin's)")
    p.add_argument("--conditional", action="store_true", help="the retired method: exact (for comparison)")
    p.add_argument("--flip-step", type=float, default=0.005)
    p.add_argument("--max-flip", type=float, default=0.20)
    p.add_argument("--losses", type=int, default=81, help="true losses per flip rate, from -flip to +flip")
    p.add_argument("--max-changed", type=int, default=700, help="outcomes cut at this many changed answers (n > 500)")
    c = sub.add_parser("continuous", help="bootstrap-t on the demo's per-item differences, by simulation")
    c.add_argument("--cache-dir", type=Path, required=True)
    c.add_argument("--task", default="lambada_ppl")
    c.add_argument("--n", type=int, nargs="+", default=[10, 20, 30, 50, 100])
    c.add_argument("--draws", type=int, default=2000)
    c.add_argument("--resamples", type=int, default=2000)
    c.add_argument("--confidence", type=float, default=0.95)
    c.add_argument("--seed", type=int, default=11)
    q = sub.add_parser("pooled", help="pooled score bounds, by simulation")
    q.add_argument("--draws", type=int, default=20_000)
    q.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args(argv)
    {"paired": paired, "continuous": continuous, "pooled": pooled}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
