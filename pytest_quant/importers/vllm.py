"""vLLM's lm-eval correctness configs (``.buildkite/lm-eval-harness/configs/*.yaml``) as suites.

A published checkpoint and, per task, the metric values it once scored. vLLM's runner passes
when ``measured >= value * (1 - rtol)`` (``rtol`` 0.08 by default). Each metric becomes a
``min_value`` floor on the model as is (``schemes: [baseline]``), judged in ``point`` mode like
vLLM's own check; once ``baselines/`` holds per-item scores for the checkpoint, the same item also
compares today's run with them item by item within ``rtol`` (:func:`pytest_quant.checks.run_check`).
"""

from __future__ import annotations

from typing import Any

from pytest_quant.config import BASELINE
from pytest_quant.importers.reader import FieldPath, Reader, percent, task_keys, validate_chat

FORMAT = "a vLLM lm-eval config"
VLLM_DEFAULT_RTOL = 0.08  # DEFAULT_RTOL of vLLM's test_lm_eval_correctness.py
VLLM_DEFAULT_MAX_MODEL_LEN = 4096
VLLM_ENGINE_ARGS = ("enforce_eager", "kv_cache_dtype", "moe_backend", "tokenizer_mode")
VLLM_LEFT_OUT = {
    "env_vars": "environment variables of the vLLM engine are not applied",
    "required_gpu_arch": "a ROCm-only skip condition",
    "rocm_safetensors_load_strategy": "a ROCm-only loading setting",
}
VLLM_KEYS = frozenset(
    {
        "model_name",
        "tasks",
        "limit",
        "num_fewshot",
        "rtol",
        "backend",
        "trust_remote_code",
        "batch_size",
        "max_model_len",
        "apply_chat_template",
        "fewshot_as_multiturn",
        "gen_kwargs",
        *VLLM_ENGINE_ARGS,
        *VLLM_LEFT_OUT,
    }
)


def suite_from_vllm(data: Any, r: Reader) -> tuple[dict[str, Any], list[FieldPath]]:
    """The suite (as a mapping) of a vLLM config, and the field each budget comes from."""
    r.mapping(data, (), VLLM_KEYS)
    model = r.text(data, (), "model_name")
    backend = r.text(data, (), "backend", "vllm")
    if backend not in ("vllm", "hf"):
        why = (
            "multimodal evaluation is not supported"
            if backend == "vllm-vlm"
            else "pytest-quant evaluates with 'vllm' or 'hf'"
        )
        raise r.error(("backend",), why, backend)
    if "gen_kwargs" in data:
        raise r.error(("gen_kwargs",), "generation overrides are not mapped (they change what is measured)")
    limit = r.integer(data, (), "limit", minimum=1, nullable=True)
    shots = r.integer(data, (), "num_fewshot", minimum=0, nullable=True)
    rtol = r.number(data, (), "rtol", VLLM_DEFAULT_RTOL, low=0.0, high=1.0)
    if rtol >= 1.0:
        raise r.error(("rtol",), "a relative tolerance of 100% or more can never fail", rtol)
    chat = r.flag(data, (), "apply_chat_template", False)
    multiturn = r.flag(data, (), "fewshot_as_multiturn", False)
    validate_chat(r, data, (), chat, multiturn, shots)
    for key, why in VLLM_LEFT_OUT.items():
        if key in data:
            r.warn((key,), f"left out: {why}")
    evaluation, marks = _evaluation(data, r, backend)
    task = {"limit": limit, "num_fewshot": shots, "apply_chat_template": chat}
    tasks, budgets, origins = _floors(data, r, task, rtol)
    suite = {
        "model": {"name": model, "trust_remote_code": r.flag(data, (), "trust_remote_code", False)},
        "tasks": tasks,
        "budgets": budgets,
        "evaluation": evaluation,
        "mode": "point",  # vLLM's rule is a point check; --quant-mode=gate|alarm judges with confidence bounds
        "marks": marks,
    }
    return suite, origins


def _evaluation(data: dict[str, Any], r: Reader, backend: str) -> tuple[dict[str, Any], list[str]]:
    """The suite's ``evaluation`` block and marks: vLLM on a GPU (its engine settings), or HF."""
    evaluation: dict[str, Any] = {"backend": backend, "backend_args": {"add_bos_token": True}}
    if data.get("batch_size", "auto") != "auto":
        evaluation["batch_size"] = r.integer(data, (), "batch_size", minimum=1)
    if backend != "vllm":
        engine = [k for k in ("max_model_len", *VLLM_ENGINE_ARGS) if k in data]
        if engine:
            raise r.error((engine[0],), "a vLLM engine setting, but this config evaluates with backend 'hf'")
        return evaluation, ["slow"]
    evaluation["device"] = "cuda"
    args = evaluation["backend_args"]
    args["max_model_len"] = r.integer(data, (), "max_model_len", VLLM_DEFAULT_MAX_MODEL_LEN, minimum=1)
    args["enforce_eager"] = r.flag(data, (), "enforce_eager", True)
    for key in ("kv_cache_dtype", "moe_backend", "tokenizer_mode"):
        if key in data:
            args[key] = r.text(data, (), key)
    if args.get("kv_cache_dtype") == "auto":
        del args["kv_cache_dtype"]
    return evaluation, ["gpu", "slow"]


def _floors(
    data: dict[str, Any], r: Reader, task: dict[str, Any], rtol: float
) -> tuple[dict[str, Any], list[dict[str, Any]], list[FieldPath]]:
    """One suite task per (task, metric), each with a ``min_value`` floor on the model as is."""
    tasks: dict[str, Any] = {}
    budgets: list[dict[str, Any]] = []
    origins: list[FieldPath] = []
    entries = data.get("tasks")
    if not isinstance(entries, list) or not entries:
        raise r.error(("tasks",), "expected a non-empty list of {name, metrics}", entries)
    for ti, entry in enumerate(entries):
        r.mapping(entry, ("tasks", ti), ("name", "metrics"))
        name = r.text(entry, ("tasks", ti), "name")
        metrics = entry.get("metrics")
        if not isinstance(metrics, list) or not metrics:
            raise r.error(("tasks", ti, "metrics"), "expected a non-empty list of {name, value}", metrics)
        names, values = [], []
        for mi, metric in enumerate(metrics):
            path = ("tasks", ti, "metrics", mi)
            r.mapping(metric, path, ("name", "value"))
            names.append(r.metric_name(metric.get("name"), path + ("name",)))
            values.append(r.number(metric, path, "value", low=-1e12, high=1e12))
        for mi, (key, metric, value) in enumerate(zip(task_keys(name, names), names, values, strict=True)):
            if key in tasks:
                raise r.error(("tasks", ti, "metrics", mi, "name"), f"metric listed twice for task {name!r}", metric)
            tasks[key] = {"task": name, "metric": metric, **task}
            if key == name:
                del tasks[key]["task"]
            floor: dict[str, Any] = {"value": value}
            if rtol:
                floor["rtol"] = percent(rtol)
            budgets.append({"schemes": [BASELINE], "tasks": [key], "min_value": floor})
            origins.append(("tasks", ti, "metrics", mi))
    return tasks, budgets, origins
