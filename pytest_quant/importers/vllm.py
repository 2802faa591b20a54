"""vLLM's lm-eval correctness configs (``.buildkite/lm-eval-harness/configs/*.yaml``) as suites.

A published checkpoint and, per task, the metric values it once scored. vLLM's runner passes
when ``measured >= value * (1 - rtol)`` (``rtol`` 0.08 by default). Each metric becomes a
``min_value`` floor on the model as is (``schemes: [baseline]``), judged in ``point`` mode like
vLLM's own check; once ``baselines/`` holds per-item scores for the checkpoint, the same item also
compares today's run with them item by item within ``rtol`` (:func:`pytest_quant.checks.run_check`).

As vLLM's runner (``test_lm_eval_correctness.py``) evaluates: lm-eval's default few-shot seed
(1234), engine settings passed to ``vllm.LLM`` (``vllm_args`` and the named keys), ``gen_kwargs``
and task ``metadata`` to ``simple_evaluate``, the task's own few-shot count when ``num_fewshot`` is
absent. The tensor-parallel size and hardware come from the ``models-*.txt`` lists beside the
config (as vLLM's CI pipeline runs them, :data:`LIST_TP_SIZE`), else from ini
``quant_import_tp_size``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pytest_quant.config import BASELINE
from pytest_quant.importers.reader import FieldPath, Reader, percent, task_keys, validate_chat

FORMAT = "a vLLM lm-eval config"
VLLM_DEFAULT_RTOL = 0.08  # DEFAULT_RTOL of vLLM's test_lm_eval_correctness.py
VLLM_DEFAULT_MAX_MODEL_LEN = 4096
VLLM_FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed, which vLLM's runner leaves alone
# Engine settings, passed to vllm.LLM as written (kernels, memory, scheduling). A change of one that can
# change the numbers makes a stored baseline stale (pytest_quant.evaluation.OPERATIONAL_BACKEND_ARGS).
VLLM_ENGINE_ARGS = (
    "enforce_eager", "kv_cache_dtype", "moe_backend", "tokenizer_mode", "attention_backend", "mamba_backend",
    "mamba_ssm_cache_dtype", "gpu_memory_utilization", "max_num_batched_tokens", "jit_monitor_mode",
)  # fmt: skip
VLLM_LEFT_OUT = {
    "required_gpu_arch": "a ROCm-only skip condition",
    "rocm_safetensors_load_strategy": "a ROCm-only loading setting",
}
# vLLM's CI pipeline (.buildkite/test_areas/lm_eval.yaml at 7477b4f8): the --tp-size each list runs with.
LIST_TP_SIZE = {"models-large.txt": 4, "models-large-hopper.txt": 4, "models-large-rocm.txt": 8}
# Lists whose name ties them to hardware: their items skip elsewhere with the reason.
LIST_HARDWARE = (
    ("rocm", "rocm"), ("mi300", "rocm"), ("mi325", "rocm"), ("mi355", "rocm"), ("xpu", "xpu"),
    ("h100", "hopper"), ("hopper", "hopper"), ("h200", "hopper"), ("sm100", "blackwell"), ("b200", "blackwell"),
    ("blackwell", "blackwell"),
)  # fmt: skip
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
        "metadata",
        "vllm_args",
        "env_vars",
        *VLLM_ENGINE_ARGS,
        *VLLM_LEFT_OUT,
    }
)


def lists_naming(config: Path) -> list[str]:
    """The ``models-*.txt`` lists beside ``config`` (or one folder up) that name it, as vLLM's CI reads them."""
    found = []
    for folder in dict.fromkeys([config.parent, config.parent.parent]):
        for listing in sorted(folder.glob("*.txt")):
            try:
                lines = listing.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                continue
            names = {ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")}
            rel = config.relative_to(folder).as_posix() if config.is_relative_to(folder) else config.name
            if rel in names:
                found.append(listing.name)
    return found


def placement(config: Path, default_tp: int) -> tuple[int, list[str], str]:
    """(tensor-parallel size, the hardware it is tied to (none: any CUDA GPU), where they came from)."""
    lists = lists_naming(config)
    hardware_of = {
        name: next((hw for token, hw in LIST_HARDWARE if token in name.removesuffix(".txt").split("-")), None)
        for name in lists
    }
    general = [n for n in lists if hardware_of[n] is None]
    # hardware-specific only when every list naming it is (a config in models-large.txt runs anywhere)
    hardware = [] if general or not lists else sorted({h for h in hardware_of.values() if h})
    tp_lists = [n for n in (general or lists) if n in LIST_TP_SIZE] or [n for n in lists if n in LIST_TP_SIZE]
    tp_from_name = [int(tok[2:]) for n in lists for tok in n.removesuffix(".txt").split("-") if tok[:2] == "tp"
                    and tok[2:].isdigit()]  # fmt: skip
    if tp_lists:
        return LIST_TP_SIZE[tp_lists[0]], hardware, f"vLLM CI's --tp-size for {tp_lists[0]}"
    if tp_from_name:
        return tp_from_name[0], hardware, "the list's name"
    return default_tp, hardware, "ini quant_import_tp_size" if lists else "ini quant_import_tp_size (no list names it)"


def suite_from_vllm(data: Any, r: Reader, *, default_tp: int = 1) -> tuple[dict[str, Any], list[FieldPath]]:
    """The suite (as a mapping) of a vLLM config, and the field each budget comes from."""
    extra = _engine_passthrough(data, r)
    r.mapping({k: v for k, v in data.items() if k not in extra} if isinstance(data, dict) else data, (), VLLM_KEYS)
    model = r.text(data, (), "model_name")
    backend = r.text(data, (), "backend", "vllm")
    if backend not in ("vllm", "hf"):
        why = (
            "multimodal evaluation is not supported"
            if backend == "vllm-vlm"
            else "pytest-quant evaluates with 'vllm' or 'hf'"
        )
        raise r.error(("backend",), why, backend)
    limit = r.integer(data, (), "limit", minimum=1, nullable=True)
    shots = r.integer(data, (), "num_fewshot", None, minimum=0, nullable=True)  # absent: the task's default
    rtol = r.number(data, (), "rtol", VLLM_DEFAULT_RTOL, low=0.0, high=1e6)
    if rtol >= 1.0:  # an upstream placeholder ("retune rtol after first successful CI run")
        r.warn(
            ("rtol",),
            f"rtol {rtol:g} puts every floor at or below 0: these floors can never fail (with a recorded baseline, "
            "the paired check beside them still judges the run against it, with no loss allowed)",
        )
    chat = r.flag(data, (), "apply_chat_template", False)
    multiturn = r.flag(data, (), "fewshot_as_multiturn", False)
    validate_chat(r, data, (), chat, multiturn, shots)
    for key, why in VLLM_LEFT_OUT.items():
        if key in data:
            r.warn((key,), f"left out: {why}")
    evaluation, marks = _evaluation(data, r, backend)
    if extra and backend != "vllm":
        raise r.error((next(iter(extra)),), "a vLLM engine setting, but this config evaluates with backend 'hf'")
    evaluation["backend_args"].update(extra)
    task: dict[str, Any] = {
        "limit": limit, "num_fewshot": shots, "apply_chat_template": chat, "fewshot_seed": VLLM_FEWSHOT_SEED,
    }  # fmt: skip
    if chat:
        task["fewshot_as_multiturn"] = multiturn  # the runner's default is False
    if data.get("gen_kwargs") is not None:
        gen = data["gen_kwargs"]
        if not isinstance(gen, (str, dict)) or not gen:
            raise r.error(("gen_kwargs",), "expected lm-eval's 'key=value,...' string or a mapping", gen)
        task["gen_kwargs"] = gen
    if data.get("metadata") is not None:
        task["metadata"] = r.mapping(data["metadata"], ("metadata",), None)
    hardware: list[str] = []
    if backend == "vllm":
        source = Path(r.source)
        tp, hardware, _ = placement(source, default_tp) if source.is_file() else (default_tp, [], "")
        if tp > 1:
            evaluation["backend_args"]["tensor_parallel_size"] = tp
    tasks, budgets, origins = _floors(data, r, task, rtol)
    suite = {
        "model": {"name": model, "trust_remote_code": r.flag(data, (), "trust_remote_code", False)},
        "tasks": tasks,
        "budgets": budgets,
        "evaluation": evaluation,
        "mode": "point",  # vLLM's rule is a point check; --quant-mode=gate|alarm judges with confidence bounds
        "marks": marks,
    }
    if hardware:
        suite["hardware"] = hardware
    return suite, origins


def _engine_passthrough(data: Any, r: Reader) -> dict[str, Any]:
    """Top-level keys pytest-quant does not know whose value is a plain setting (a name, number or flag):
    vLLM's runner grows engine settings faster than any list here (``enable_mamba_cache_stochastic_rounding``),
    so they go to ``vllm.LLM`` as written, which refuses a name it does not know when the engine starts."""
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in VLLM_KEYS or not isinstance(key, str) or not key.isidentifier() or not key.islower():
            continue
        if difflib.get_close_matches(key, sorted(VLLM_KEYS), n=1, cutoff=0.75):
            continue  # a misspelt key of the format (``lmit``): refused below, with the known keys
        if isinstance(value, (str, int, float, bool)) and value != "":
            r.warn((key,), f"not a key pytest-quant knows: passed to vllm.LLM as the engine setting {key}={value!r}")
            out[key] = value
    return out


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
    for key in VLLM_ENGINE_ARGS:
        if key in data and key != "enforce_eager":
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
                raise r.error((key,), "expected a string or number (a vllm.LLM setting)", value)
            args[key] = value
    if "vllm_args" in data:
        for key, value in r.mapping(data["vllm_args"], ("vllm_args",), None).items():
            args[key] = value  # vLLM's runner appends these to the engine's arguments as written
    if args.get("kv_cache_dtype") == "auto":
        del args["kv_cache_dtype"]
    if data.get("env_vars"):
        env = r.mapping(data["env_vars"], ("env_vars",), None)
        args["env"] = {k: str(v) for k, v in env.items()}  # the vLLM worker's environment, as the runner scopes it
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
            names.append(r.metric_name(metric.get("name"), path + ("name",), bare_is_unfiltered=True))
            values.append(r.number(metric, path, "value", low=-1e12, high=1e12))
        for mi, (key, metric, value) in enumerate(zip(task_keys(name, names), names, values, strict=True)):
            if key in tasks:
                raise r.error(("tasks", ti, "metrics", mi, "name"), f"metric listed twice for task {name!r}", metric)
            tasks[key] = {"task": name, "metric": metric, **task}
            if key == name:
                del tasks[key]["task"]
            if value == 0:
                r.warn(("tasks", ti, "metrics", mi, "value"), "a floor derived from value 0.0 can never fail")
            floor: dict[str, Any] | float = {"value": value}
            if rtol >= 1.0:
                floor = value * (1.0 - rtol)  # as upstream computes it; the warning above says what it means
            elif rtol:
                assert isinstance(floor, dict)
                floor["rtol"] = percent(rtol)
            budgets.append({"schemes": [BASELINE], "tasks": [key], "min_value": floor})
            origins.append(("tasks", ti, "metrics", mi))
    return tasks, budgets, origins
