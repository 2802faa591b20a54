"""Perplexity over a user's text corpus: evaluator ``perplexity``.

Engine layer. The corpus (``task.perplexity``, UTF-8) is tokenized once
without special tokens, capped at ``task.max_tokens`` tokens, and cut into
non-overlapping windows of ``task.seq_len`` tokens; each window is one item.
When the tokenizer puts a BOS token first, every window is BOS + ``seq_len - 1``
corpus tokens and all of those are predicted; otherwise the first token of each
window is context only. (Non-overlapping windows give each token less context
than a sliding window would; the number is comparable between models, not with
published perplexities.)

Per window: ``scores`` = summed negative log-likelihood (nats) of its predicted
tokens, ``weights`` = what the metric divides by:

- ``perplexity`` (default): predicted-token count; value ``exp(Σ nll / Σ tokens)``;
- ``word_perplexity``: whitespace-separated words of the window's text span;
- ``bits_per_byte``: UTF-8 bytes of the span; value ``Σ nll / Σ bytes / ln 2``.

A window's text span runs from its first predicted token's start to the next
window's first predicted token's start (tokenizer offsets), so the spans tile
the corpus. Deterministic (fixed windows and batches, ``torch.inference_mode``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pytest_quant.config import EfficiencyConfig, EvaluationConfig, TaskConfig, canonical_hash
from pytest_quant.errors import QuantConfigError
from pytest_quant.results import RuntimeMeasurement, TaskResult, aggregate

__all__ = ["PerplexityEvaluator", "Window", "tokenizer_vocab_hash", "windows"]


class Window:
    """One item: ``input_ids`` fed to the model, positions ``start..`` of it predicted, text span."""

    __slots__ = ("input_ids", "first_predicted", "n_predicted", "char_start", "char_end")

    def __init__(self, input_ids: list[int], first_predicted: int, char_start: int, char_end: int):
        self.input_ids = input_ids
        self.first_predicted = first_predicted  # index in input_ids of the first predicted token (>= 1)
        self.n_predicted = len(input_ids) - first_predicted
        self.char_start = char_start
        self.char_end = char_end


def tokenizer_vocab_hash(tokenizer: Any) -> str:
    """sha256 (16 hex digits) of the tokenizer's vocabulary (token → id) and special tokens."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    special = {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}
    blob = json.dumps([vocab, special], ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def windows(tokenizer: Any, text: str, seq_len: int, max_tokens: int | None = None) -> list[Window]:
    """The items of a corpus (see the module docstring)."""
    from pytest_quant.backends.models import adds_bos

    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = [int(o[0]) for o in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, ValueError):  # slow tokenizers have no offsets
        enc = tokenizer(text, add_special_tokens=False, verbose=False)
        offsets = None
    ids: list[int] = list(enc["input_ids"])
    if max_tokens is not None:
        ids = ids[:max_tokens]
    bos = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []
    body = seq_len - len(bos)
    out: list[Window] = []
    starts = list(range(0, len(ids), body))
    for k, a in enumerate(starts):
        chunk = ids[a : a + body]
        first = 0 if bos else 1  # index within chunk of the first predicted token
        if len(chunk) <= first:
            continue
        p = a + first  # global index of the first predicted token
        q = a + len(chunk)  # global index one past the window
        if offsets is not None:
            char_start = 0 if k == 0 and bos else offsets[p]
            char_end = (
                offsets[q] if q < len(ids) else (len(text) if max_tokens is None or q >= len(offsets) else offsets[q])
            )
        else:
            char_start, char_end = -1, -1  # filled from decoded text below
        out.append(Window(bos + chunk, len(bos) + first, char_start, char_end))
    if offsets is None:
        for w in out:
            w.char_start, w.char_end = 0, len(tokenizer.decode(w.input_ids[w.first_predicted :]))
    return out


def _span_weight(metric: str, w: Window, text: str, tokenizer: Any) -> float:
    if metric == "perplexity":
        return float(w.n_predicted)
    span = text[w.char_start : w.char_end] if w.char_start >= 0 else tokenizer.decode(w.input_ids[w.first_predicted :])
    if metric == "bits_per_byte":
        return float(len(span.encode("utf-8")))
    return float(len(span.split()))


METRICS = ("perplexity", "word_perplexity", "bits_per_byte")


class HFRuntime:
    """Speed and peak memory as the ``hf`` evaluator measures them: evaluators that load the model the
    same way (perplexity, divergence) share it."""

    cache_dir: Path | None = None

    def environment_versions(self, evaluation: EvaluationConfig) -> dict[str, str]:
        return {}

    def measure_runtime(
        self, model_dir: Path, evaluation: EvaluationConfig, settings: EfficiencyConfig
    ) -> RuntimeMeasurement:
        from pytest_quant.backends.evaluate.lmeval_hf import LMEvalHF

        return LMEvalHF(cache_dir=self.cache_dir).measure_runtime(model_dir, evaluation, settings)


class PerplexityEvaluator(HFRuntime):
    """Evaluator ``perplexity``: per-window negative log-likelihood of a text corpus.

    A run holds the windows' NLLs and the weights of every metric (tokens, words, bytes), so
    tasks reading different metrics of one corpus share it. Speed is the ``hf`` evaluator's: the
    model is loaded the same way.
    """

    name = "perplexity"
    measures_peak_memory = True

    def __init__(self, *, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir

    def run(self, model_dir: Path, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0) -> dict[str, Any]:
        import torch

        from pytest_quant.backends.models import load_causal_lm

        text, corpus = _read_corpus(task)
        model, tokenizer = load_causal_lm(model_dir, dtype=evaluation.dtype, device=evaluation.device)
        items = windows(tokenizer, text, task.seq_len, task.max_tokens)
        if not items:
            raise QuantConfigError(f"task {task.name!r}: corpus {str(corpus)!r} has too few tokens for one window")
        nll = _window_nll(model, items, evaluation.batch_size or task.batch_size, pad_id=tokenizer.pad_token_id or 0)
        corpus_sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        fingerprint = canonical_hash(
            {
                "corpus": corpus_sha,
                "seq_len": task.seq_len,
                "max_tokens": task.max_tokens,
                "vocab": tokenizer_vocab_hash(tokenizer),
            }
        )
        return {
            "format": RUN_FORMAT,
            "scores": nll,
            "weights": {m: [_span_weight(m, w, text, tokenizer) for w in items] for m in METRICS},
            "fingerprint": fingerprint,
            "meta": {
                "corpus": str(corpus),
                "corpus_sha256": corpus_sha[:16],
                "seq_len": task.seq_len,
                "max_tokens": task.max_tokens,
                "windows": len(items),
                "predicted_tokens": sum(w.n_predicted for w in items),
                "torch_version": torch.__version__,
            },
        }

    @staticmethod
    def result_from_run(run: dict[str, Any], task: TaskConfig) -> TaskResult:
        if run.get("format") != RUN_FORMAT:
            raise QuantConfigError(f"task {task.name!r}: not a perplexity run record ({run.get('format')!r})")
        metric = task.metric or "perplexity"
        scores, weights = tuple(float(v) for v in run["scores"]), tuple(float(v) for v in run["weights"][metric])
        return TaskResult(
            task=task.name,
            metric=metric,
            value=aggregate("perplexity", metric, scores, weights),
            higher_is_better=False,
            aggregation="perplexity",
            item_ids=tuple(str(i) for i in range(len(scores))),
            scores=scores,
            weights=weights,
            stderr=None,
            fingerprint=run["fingerprint"],
            meta=dict(run["meta"]),
        )

    def evaluate(self, model_dir: Path, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0) -> TaskResult:
        return self.result_from_run(self.run(model_dir, task, evaluation, seed=seed), task)


RUN_FORMAT = "pytest-quant/perplexity-run-1"


def _read_corpus(task: TaskConfig) -> tuple[str, Path]:
    if task.perplexity is None:
        raise QuantConfigError(f"task {task.name!r} has no 'perplexity' corpus", field=f"tasks.{task.name}")
    corpus = Path(task.perplexity).expanduser()
    if not corpus.is_file():
        raise QuantConfigError(
            f"task {task.name!r}: corpus {str(corpus)!r} does not exist", field=f"tasks.{task.name}.perplexity"
        )
    try:
        return corpus.read_text(encoding="utf-8"), corpus
    except UnicodeDecodeError as exc:
        raise QuantConfigError(f"task {task.name!r}: corpus {str(corpus)!r} is not UTF-8: {exc}") from exc


def _window_nll(model: Any, items: list[Window], batch_size: int, *, pad_id: int) -> list[float]:
    """Summed NLL (nats, float64) of each window's predicted tokens, in batches (right padding)."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    out: list[float] = []
    with torch.inference_mode():
        for b in range(0, len(items), batch_size):
            batch = items[b : b + batch_size]
            width = max(len(w.input_ids) for w in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, w in enumerate(batch):
                ids[i, : len(w.input_ids)] = torch.tensor(w.input_ids)
                mask[i, : len(w.input_ids)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            for i, w in enumerate(batch):
                n = len(w.input_ids)
                # logits at position t predict token t + 1
                pred = logits[i, w.first_predicted - 1 : n - 1].float()
                target = ids[i, w.first_predicted : n].to(pred.device)
                out.append(float(F.cross_entropy(pred, target, reduction="sum").double()))
    return out
