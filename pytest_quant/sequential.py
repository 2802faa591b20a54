"""Sequential evaluation: a task evaluated in stages, stopped as soon as its budgets are decided.

Logic layer (numpy-free). A task with ``sequential: {first, growth, max}`` takes its documents in
an order fixed when its baseline is recorded: a permutation of the first ``max`` documents (or of
the whole evaluation split, ``max: full``) seeded by the suite's seed. Stage ``k`` holds the first
``n_k`` of them, ``n_1 = first``, ``n_{k+1} = ceil(n_k * growth)``, the last ``max``. The baseline
holds every stage; a candidate is evaluated one *chunk* (the documents stage ``k`` adds) at a
time, through lm-eval's ``samples``, and each chunk is cached.

After each stage every budget on the task that is still open is judged with bounds at the
stage's share of the error rate: ``alpha_k = alpha * share_k`` with the shares summing to one
(:func:`spending_shares`). A budget is decided at the first stage where its data show it within
budget or violated; the task's evaluation of a scheme stops when every budget that reads it is
decided, or at ``max``.

Why the error rate holds: a gate passes wrongly only if at some stage ``k`` its upper bound at
``1 - alpha_k`` falls within a budget the true loss sits on, which has probability at most
``alpha_k``; over the stages at most ``sum(alpha_k) = alpha`` (Bonferroni's inequality, whatever
the correlation between stages and whatever stopped the evaluation). The same holds for an
alarm's false alarm. The O'Brien-Fleming-like shares spend little at the early stages, so the
last stage keeps nearly the fixed-size bounds; equal shares decide clear budgets earlier. The
rates are checked by simulation in ``tests/test_sequential.py``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

from pytest_quant.config import SequentialConfig, canonical_hash
from pytest_quant.errors import BaselineError, ResultError
from pytest_quant.results import TaskResult, aggregate

SEQUENTIAL_RECORD = 1  # bump when what a baseline's ``meta["sequential"]`` holds changes


def stage_sizes(first: int, growth: float, total: int) -> tuple[int, ...]:
    """Items after each stage: ``first``, then ``ceil(previous * growth)``, the last ``total``."""
    if total < 1 or first < 1:
        raise ValueError(f"stages need at least one item (first {first}, total {total})")
    sizes = [min(first, total)]
    while sizes[-1] < total:
        sizes.append(min(total, max(sizes[-1] + 1, math.ceil(sizes[-1] * growth))))
    return tuple(sizes)


def spending_shares(sizes: Sequence[int], kind: str, alpha: float) -> tuple[float, ...]:
    """Each stage's share of the error rate ``alpha``, summing to one.

    ``bonferroni``: equal shares. ``obrien-fleming``: the increments of Lan and DeMets' spending
    function ``a(t) = 2 - 2 * Phi(z_{1 - alpha/2} / sqrt(t))`` at information ``t = n_k / n_K``."""
    k = len(sizes)
    if kind == "bonferroni":
        return tuple(1.0 / k for _ in sizes)
    if kind != "obrien-fleming":
        raise ValueError(f"spending must be 'bonferroni' or 'obrien-fleming', got {kind!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    nd = NormalDist()
    z = nd.inv_cdf(1 - alpha / 2)
    spent = [2.0 - 2.0 * nd.cdf(z / math.sqrt(n / sizes[-1])) for n in sizes]
    spent[-1] = alpha
    increments = [spent[0]] + [b - a for a, b in zip(spent, spent[1:], strict=False)]
    return tuple(max(inc, 0.0) / alpha for inc in increments)


def stage_confidence(confidence: float, share: float) -> float:
    """The one-sided confidence of a stage's bounds: ``1 - (1 - confidence) * share``."""
    return 1.0 - (1.0 - confidence) * share


def document_order(population: int, seed: int) -> list[int]:
    """The documents ``0..population-1`` in the order the stages take them (seeded, stable across
    Python versions: ``random.Random(seed).shuffle`` on a list of ints)."""
    order = list(range(population))
    random.Random(f"pytest-quant-sequential-{seed}").shuffle(order)
    return order


def worker_order(items: Sequence[Any]) -> list[Any]:
    """``items`` rotated by this pytest-xdist worker's share, so that workers that need the same
    evaluations start on different ones (each waits only where another is already computing; the
    cache's per-key locks make each evaluation happen once). Unchanged outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        index, count = int(worker.removeprefix("gw")), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    except ValueError:
        return list(items)
    if count < 2 or not items:
        return list(items)
    shift = (index % count) * len(items) // count
    return list(items[shift:]) + list(items[:shift])


def chunks_of(order: Sequence[int], sizes: Sequence[int]) -> list[tuple[int, ...]]:
    """The documents each stage adds, sorted (lm-eval evaluates ``samples`` in document order)."""
    starts = (0, *sizes[:-1])
    return [tuple(sorted(order[a:b])) for a, b in zip(starts, sizes, strict=True)]


@dataclasses.dataclass(frozen=True)
class Plan:
    """A sequential task's stages as its baseline recorded them."""

    sizes: tuple[int, ...]
    population: int
    chunk_fingerprints: tuple[str, ...]
    chunk_items: tuple[str, ...]  # items_fingerprint of each chunk (documents only)

    @property
    def stages(self) -> int:
        return len(self.sizes)

    def chunks(self, result: TaskResult) -> list[tuple[int, ...]]:
        """The documents of each stage's chunk, read from the baseline's item ids (in stage order)."""
        starts = (0, *self.sizes[:-1])
        return [tuple(int(i) for i in result.item_ids[a:b]) for a, b in zip(starts, self.sizes, strict=True)]


def plan_of(base: TaskResult, config: SequentialConfig, label: str) -> Plan:
    """The plan a stored baseline records; an error naming the task when it records none or another one."""
    rec = base.meta.get("sequential")
    if not isinstance(rec, dict) or rec.get("record") != SEQUENTIAL_RECORD:
        raise BaselineError(
            f"{label}: the stored baseline of task {base.task!r} was not recorded in stages (sequential); "
            "record it again with pytest --quant-update-baselines"
        )
    sizes = tuple(int(n) for n in rec["sizes"])
    want = stage_sizes(config.first, config.growth, sizes[-1])
    if sizes != want or sizes[-1] != base.n or len(rec["chunk_fingerprints"]) != len(sizes):
        raise BaselineError(
            f"{label}: the stored baseline of task {base.task!r} has stages {list(sizes)} over {base.n} items, "
            f"not the {list(want)} that sequential {config.model_dump(exclude={'spending'})} asks for; record it "
            "again with pytest --quant-update-baselines"
        )
    return Plan(sizes, int(rec["population"]), tuple(rec["chunk_fingerprints"]), tuple(rec["chunk_items"]))


def concatenate(chunks: Sequence[TaskResult], task: str, plan_meta: dict[str, Any] | None = None) -> TaskResult:
    """The result of the first ``len(chunks)`` stages, from each stage's chunk result.

    Its fingerprint is the hash of the chunks' fingerprints (each over its items' documents and
    prompts), so a candidate pairs with a baseline prefix only on the same documents and prompts."""
    if not chunks:
        raise ResultError(f"task {task!r}: no stage was evaluated")
    first = chunks[0]
    for c in chunks[1:]:
        if (c.metric, c.aggregation, c.higher_is_better) != (first.metric, first.aggregation, first.higher_is_better):
            raise ResultError(f"task {task!r}: its stages report different metrics ({c.metric!r}, {first.metric!r})")
    ids = tuple(i for c in chunks for i in c.item_ids)
    scores = tuple(s for c in chunks for s in c.scores)
    weights = None if first.weights is None else tuple(w for c in chunks for w in (c.weights or ()))
    substituted = sorted({s for c in chunks for s in (c.meta.get("split_substituted") or ())})
    meta = {
        **first.meta,
        "limit": None,
        "items_fingerprint": canonical_hash([c.meta.get("items_fingerprint", "") for c in chunks]),
        "n_samples": None,
    }
    if substituted:
        meta["split_substituted"] = substituted
    if plan_meta is not None:
        meta["sequential"] = plan_meta
    return TaskResult(
        task=task,
        metric=first.metric,
        value=aggregate(first.aggregation, first.metric, scores, weights),
        higher_is_better=first.higher_is_better,
        aggregation=first.aggregation,
        item_ids=ids,
        scores=scores,
        weights=weights,
        stderr=None,
        fingerprint=canonical_hash([c.fingerprint for c in chunks]),
        meta=meta,
    )


def plan_record(sizes: Sequence[int], population: int, chunks: Sequence[TaskResult]) -> dict[str, Any]:
    """What a sequential baseline stores of its plan (``meta["sequential"]``)."""
    return {
        "record": SEQUENTIAL_RECORD,
        "sizes": list(sizes),
        "population": population,
        "chunk_fingerprints": [c.fingerprint for c in chunks],
        "chunk_items": [c.meta.get("items_fingerprint", "") for c in chunks],
    }


def prefix(base: TaskResult, plan: Plan, stages: int) -> TaskResult:
    """The baseline restricted to its first ``stages`` stages, fingerprinted as :func:`concatenate` does."""
    n = plan.sizes[stages - 1]
    weights = None if base.weights is None else base.weights[:n]
    return dataclasses.replace(
        base,
        value=aggregate(base.aggregation, base.metric, base.scores[:n], weights),
        item_ids=base.item_ids[:n],
        scores=base.scores[:n],
        weights=weights,
        stderr=None,
        fingerprint=canonical_hash(list(plan.chunk_fingerprints[:stages])),
        meta={**base.meta, "items_fingerprint": canonical_hash(list(plan.chunk_items[:stages]))},
    )
