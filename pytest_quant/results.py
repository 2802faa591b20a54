"""What an evaluation returns: the aggregate and the per-item scores behind it.

Data layer. Per-item scores are what make paired statistics possible: the
quantized model and the baseline are compared on the *same items* (matched by
``item_ids``), not as two independent means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

Aggregation = Literal["mean", "perplexity"]


@dataclass(frozen=True)
class TaskResult:
    """One metric of one task on one model.

    ``aggregation``:
      - ``"mean"``: ``value == mean(scores)`` (accuracy-like; higher is better unless said).
      - ``"perplexity"``: ``scores`` are per-item negative log-likelihoods (nats) and
        ``weights`` the per-item token/word counts (``None`` = 1 each);
        ``value == exp(sum(scores) / sum(weights))`` (lower is better).
        For ``bits_per_byte``, weights are byte counts and the value is
        ``sum(scores) / sum(weights) / ln 2`` — see :func:`aggregate`.
    ``fingerprint`` identifies the task's items and prompts (not the model): two
    results with the same fingerprint were computed on the same inputs.
    """

    task: str
    metric: str
    value: float
    higher_is_better: bool
    aggregation: Aggregation
    item_ids: tuple[str, ...]
    scores: tuple[float, ...]
    weights: tuple[float, ...] | None = None
    stderr: float | None = None
    fingerprint: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.scores)

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "metric": self.metric,
            "value": self.value,
            "higher_is_better": self.higher_is_better,
            "aggregation": self.aggregation,
            "stderr": self.stderr,
            "n": self.n,
            "fingerprint": self.fingerprint,
            "item_ids": list(self.item_ids),
            "scores": list(self.scores),
            "weights": None if self.weights is None else list(self.weights),
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskResult:
        weights = data.get("weights")
        return cls(
            task=str(data["task"]),
            metric=str(data["metric"]),
            value=float(data["value"]),
            higher_is_better=bool(data["higher_is_better"]),
            aggregation=data["aggregation"],
            item_ids=tuple(str(i) for i in data["item_ids"]),
            scores=tuple(float(s) for s in data["scores"]),
            weights=None if weights is None else tuple(float(w) for w in weights),
            stderr=None if data.get("stderr") is None else float(data["stderr"]),
            fingerprint=str(data.get("fingerprint", "")),
            meta=dict(data.get("meta") or {}),
        )


def aggregate(aggregation: str, metric: str, scores, weights=None) -> float:
    """The task value from per-item scores (works on lists or numpy arrays)."""
    n = len(scores)
    if n == 0:
        return math.nan
    if aggregation == "mean":
        return float(sum(scores) / n)
    total_w = float(sum(weights)) if weights is not None else float(n)
    mean_nll = float(sum(scores)) / total_w
    if metric == "bits_per_byte":
        return mean_nll / math.log(2)
    return math.exp(mean_nll)


@dataclass(frozen=True)
class WeightFootprint:
    """What a model folder's weights take, read from its files (no model is loaded).

    ``weight_bytes``: memory the weights need deployed: quantized weights at their packed
    bit width plus their scales and zero points, every other tensor at its stored dtype.
    ``checkpoint_bytes``: every file of the folder on disk. ``how`` says how the number
    was computed (safetensors headers, the RTN scheme record, or file sizes).
    """

    weight_bytes: int
    checkpoint_bytes: int
    quantized_layers: int
    how: str

    def to_json(self) -> dict[str, Any]:
        return {
            "weight_bytes": self.weight_bytes,
            "checkpoint_bytes": self.checkpoint_bytes,
            "quantized_layers": self.quantized_layers,
            "how": self.how,
        }


@dataclass(frozen=True)
class RuntimeMeasurement:
    """Speed and peak memory of one model folder: a greedy ``generate`` of ``new_tokens`` tokens
    after a ``prompt_tokens``-token prompt (batch 1), best of ``repeats`` runs after a warm-up.

    ``prefill_tokens_per_s``: prompt tokens / time to the first new token. ``decode_tokens_per_s``:
    the other ``new_tokens - 1`` tokens / their time. ``peak_memory_bytes``: on CUDA the peak of
    ``torch.cuda.max_memory_allocated``; on CPU the process's resident-set high-water mark above
    its size before the model was loaded (weights as loaded, activations, KV cache); None where
    the backend does not measure it (``meta["peak_memory"]`` says why). ``meta["method"]`` says
    how the speed was measured (backend, device, dtype), ``meta["note"]`` what to keep in mind.
    """

    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    peak_memory_bytes: int | None
    prompt_tokens: int
    new_tokens: int
    repeats: int
    device: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "prefill_tokens_per_s": self.prefill_tokens_per_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "peak_memory_bytes": self.peak_memory_bytes,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "repeats": self.repeats,
            "device": self.device,
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuntimeMeasurement:
        return cls(
            prefill_tokens_per_s=float(data["prefill_tokens_per_s"]),
            decode_tokens_per_s=float(data["decode_tokens_per_s"]),
            peak_memory_bytes=None if data.get("peak_memory_bytes") is None else int(data["peak_memory_bytes"]),
            prompt_tokens=int(data["prompt_tokens"]),
            new_tokens=int(data["new_tokens"]),
            repeats=int(data["repeats"]),
            device=str(data["device"]),
            meta=dict(data.get("meta") or {}),
        )
