"""llm-compressor's lmeval test configs (``tests/lmeval/configs/*.yaml``) as suites.

A base model, a preset ``scheme`` quantized here (``QuantizationModifier``, i.e. round-to-nearest,
or ``GPTQModifier(actorder=None)`` with ``quant_type: GPTQ``, as its ``tests/e2e/e2e_utils.py``
``build_recipe``) or a ``recipe`` run through ``oneshot`` as given, or ``entrypoint: model_free_ptq``;
and an ``lmeval`` block. ``recovery_threshold`` (0.95 by default, per metric or for all) becomes two
items per threshold: an **upstream-parity** item that reproduces llm-compressor's own decision,
``round(quantized / base, 2) >= t`` on the two aggregate values (``parity: llm-compressor``, a
point rule whatever ``--quant-mode`` says), and beside it the **paired** ``min_recovery`` item,
judged item by item against the stored baseline with stated confidence (the session's mode). A
team sees where its old gate and the paired one disagree. ``metrics`` (which llm-compressor only
warns about, at 5% below the value) become ``min_value`` floors marked ``xfail`` so that they
report without failing the run.

Presets a pytest-quant scheme spells out (``W4A16`` ... ``W8A16``, ``W4A16_ASYM``, ``FP8_DYNAMIC``)
map to its methods; every other compressed-tensors preset (NVFP4, MXFP4, static per-tensor FP8,
W8A8, ...) runs as the recipe upstream builds for it. Where the machine cannot evaluate the format
(an FP4 kernel on CPU), the evaluation skips there with that reason and runs on a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_quant.importers.reader import FieldPath, Reader, or_none, percent, slug, task_keys, validate_chat

FORMAT = "an llm-compressor lmeval config"
LLMC_DEFAULT_RECOVERY = 0.95  # LmEvalConfig.recovery_threshold of llm-compressor's test_lmeval.py
LLMC_WARNING_RTOL = 0.05  # llm-compressor warns when a metric is below 95% of its value
LLMC_IGNORE = ("lm_head", "re:.*mlp.gate[.].*")  # tests/e2e/e2e_utils.py build_recipe
LLMC_METRICS_XFAIL = "llm-compressor reports lmeval.metrics as warnings (5% below the value), not failures"

# compressed-tensors presets (PRESET_SCHEMES, compressed-tensors 0.19) that a
# pytest-quant scheme expresses exactly: weight-only integer WnA16 (group 128)
# and FP8_DYNAMIC (FP8 weights per channel, FP8 activations per token, dynamic).
_WEIGHT_ONLY = {f"W{b}A16": {"bits": b, "group_size": 128} for b in range(2, 9)}
_WEIGHT_ONLY["W4A16_ASYM"] = {"bits": 4, "group_size": 128, "symmetric": False}
NOT_EXPRESSIBLE = {
    **{
        p: "integer weights with int8/int4 activations (pytest-quant quantizes integer activations only as "
        "'smoothquant', which adds smoothing)"
        for p in ("W8A8", "INT8", "W4A8", "W4A4", "W2A4", "W2A8", "W3A4", "W3A8", "W5A8", "W6A8", "W7A8", "W4AFP8")
    },
    "FP8": "FP8 with per-tensor weight scales (pytest-quant's FP8 weights are per channel)",
    "FP8_BLOCK": "block-wise FP8",
    **{p: "an FP4/MX format" for p in ("NVFP4", "NVFP4A16", "MXFP4", "MXFP4A16", "MXFP8", "MXFP8A16")},
    "UNQUANTIZED": "no quantization",
}
LLMC_KEYS = frozenset(
    {
        "cadence",
        "model",
        "scheme",
        "recipe",
        "entrypoint",
        "ignore",
        "dataset_id",
        "dataset_config",
        "dataset_split",
        "num_calibration_samples",
        "max_seq_length",
        "model_class",
        "quant_type",
        "max_memory",
        "seed",
        "save_dir",
        "gpu_memory_utilization",
        "num_gpus",
        "pipeline_parallel",
        "test_group",
        "skip_sanity_check",
        "lmeval",
    }
)
LLMC_LMEVAL_KEYS = frozenset(
    {
        "model",
        "model_args",
        "add_bos_token",
        "dtype",
        "task",
        "num_fewshot",
        "limit",
        "batch_size",
        "fewshot_as_multiturn",
        "apply_chat_template",
        "recovery_threshold",
        "metrics",
        "trust_remote_code",
        "max_model_len",
        "higher_is_better",
    }
)


def find_recipe(recipe: str, config: Path) -> Path | None:
    """An upstream recipe path (``tests/e2e/recipes/...``, relative to llm-compressor's checkout, where its
    tests run) resolved against the config's folder and each folder above it."""
    path = Path(recipe)
    if path.is_absolute():
        return path if path.is_file() else None
    for folder in [config.parent, *config.parent.parents]:
        if (folder / path).is_file():
            return (folder / path).resolve()
    return None


def _calibration(data: dict, r: Reader, seed: int, what: str) -> dict[str, Any]:
    if data.get("dataset_id"):
        r.warn(
            ("dataset_id",),
            f"calibration data {data['dataset_id']!r} is not read: pytest-quant calibrates {what} on its seeded "
            "built-in corpus (or a scheme's calibration.dataset)",
        )
    return {
        "samples": r.integer(data, (), "num_calibration_samples", 512, minimum=1),
        "seq_len": r.integer(data, (), "max_seq_length", 2048, minimum=8),
        "seed": seed,
    }


def _upstream_recipe(modifier: str, preset: str, actorder_none: bool) -> dict[str, Any]:
    """The recipe llm-compressor's ``build_recipe`` makes of a preset (tests/e2e/e2e_utils.py)."""
    body: dict[str, Any] = {"targets": "Linear", "scheme": preset}
    if actorder_none:
        body["actorder"] = None
    body["ignore"] = list(LLMC_IGNORE)
    return {"quant_stage": {"quant_modifiers": {modifier: body}}}


def scheme_from_preset(data: dict, r: Reader, seed: int) -> tuple[str, dict[str, Any]]:
    entry = r.text(data, (), "entrypoint", "oneshot")
    if entry not in ("oneshot", "model_free_ptq"):
        raise r.error(("entrypoint",), "expected 'oneshot' or 'model_free_ptq'", entry)
    if entry == "model_free_ptq":
        preset = r.text(data, (), "scheme").upper()
        if data.get("recipe") is not None:
            raise r.error(("recipe",), "model_free_ptq applies a preset scheme, not a recipe")
        ignore = data.get("ignore") or []
        if not isinstance(ignore, list) or not all(isinstance(i, str) and i for i in ignore):
            raise r.error(("ignore",), "expected a list of module names or 're:' patterns", ignore)
        return preset.lower() + "-model-free", {"method": "model_free_ptq", "preset": preset, "ignore": ignore}
    if data.get("recipe") is not None:
        recipe = r.text(data, (), "recipe")
        found = find_recipe(recipe, Path(r.source))
        if found is None:
            raise r.error(
                ("recipe",),
                "recipe file not found relative to the config's folder or any folder above it (upstream resolves "
                "it from llm-compressor's checkout: keep the config inside one)",
                recipe,
            )
        scheme: dict[str, Any] = {"method": "recipe", "recipe": str(found)}
        if data.get("dataset_id"):
            scheme["calibration"] = _calibration(data, r, seed, "the recipe")
        return slug(found.stem.removeprefix("recipe_")), scheme
    preset = r.text(data, (), "scheme").upper()  # compressed-tensors reads preset names upper-cased
    quant_type = data.get("quant_type")
    if quant_type not in (None, "RTN", "GPTQ"):
        raise r.error(("quant_type",), "expected 'GPTQ' or 'RTN'", quant_type)
    gptq = quant_type == "GPTQ"
    if preset in _WEIGHT_ONLY:
        weights = {"symmetric": True, **_WEIGHT_ONLY[preset]}
        if gptq:  # GPTQModifier(scheme=..., actorder=None): build_recipe's, dampening 0.01 (its default)
            calibration = _calibration(data, r, seed, "GPTQ")
            scheme = {"method": "gptq", "weights": weights, "calibration": calibration, "actorder": "none"}
        else:  # QuantizationModifier(scheme=...): round-to-nearest through llm-compressor itself
            scheme = {"method": "rtn", "backend": "llmcompressor", "weights": weights}
    elif preset == "FP8_DYNAMIC" and not gptq:
        scheme = {"method": "fp8"}
    elif preset in NOT_EXPRESSIBLE or preset == "FP8_DYNAMIC":
        # upstream's recipe for the preset, as given: formats a pytest-quant scheme does not spell out
        recipe = _upstream_recipe("GPTQModifier" if gptq else "QuantizationModifier", preset, actorder_none=gptq)
        scheme = {"method": "recipe", "recipe": recipe}
        if gptq or data.get("dataset_id"):  # upstream calibrates whenever a dataset is named
            scheme["calibration"] = _calibration(data, r, seed, "the preset")
    else:
        raise r.error(
            ("scheme",), "not a compressed-tensors preset (without a recipe, 'scheme' must name one)", data["scheme"]
        )
    if scheme["method"] != "recipe":
        scheme["ignore"] = list(LLMC_IGNORE)
    return preset.lower() + ("-gptq" if gptq else ""), scheme


def suite_from_llmcompressor(data: Any, r: Reader) -> tuple[dict[str, Any], list[FieldPath]]:
    r.mapping(data, (), LLMC_KEYS)
    r.text(data, (), "cadence")
    model = r.text(data, (), "model")
    model_class = r.text(data, (), "model_class", "AutoModelForCausalLM")
    if model_class != "AutoModelForCausalLM":
        raise r.error(("model_class",), "only causal language models (AutoModelForCausalLM) are mapped", model_class)
    seed = r.integer(data, (), "seed", 42)  # BaseTestConfig.seed: calibration and lm-eval's few-shot sampling
    scheme_name, scheme = scheme_from_preset(data, r, seed)
    lm = r.mapping(data.get("lmeval") or {}, ("lmeval",), LLMC_LMEVAL_KEYS)
    at = ("lmeval",)
    backend = r.text(lm, at, "model", "vllm")  # "hf" before llm-compressor moved its lm-eval tests to vLLM
    if backend not in ("hf", "vllm"):
        why = (
            "multimodal evaluation is not supported"
            if "multimodal" in backend or "vlm" in backend
            else "expected 'hf' or 'vllm'"
        )
        raise r.error(at + ("model",), why, backend)
    if not r.flag(lm, at, "higher_is_better", True):
        raise r.error(at + ("higher_is_better",), "llm-compressor checks recovery of higher-is-better metrics only")
    evaluation, marks, trust = _evaluation(data, lm, r, backend)
    task = r.text(lm, at, "task", "gsm8k")
    shots = r.integer(lm, at, "num_fewshot", 5, minimum=0, nullable=True)
    chat = r.flag(lm, at, "apply_chat_template", False)
    multiturn = r.flag(lm, at, "fewshot_as_multiturn", False)
    validate_chat(r, lm, at, chat, multiturn, shots)

    floors = lm.get("metrics") or {}
    if not isinstance(floors, dict):
        raise r.error(at + ("metrics",), "expected a mapping of 'metric,filter' to a value", floors)
    recovery = lm.get("recovery_threshold", LLMC_DEFAULT_RECOVERY)
    per_metric = recovery if isinstance(recovery, dict) else {}
    metrics: list[str] = []
    for key, section in [*((k, "metrics") for k in floors), *((k, "recovery_threshold") for k in per_metric)]:
        if r.metric_name(key, at + (section, key)) not in metrics:
            metrics.append(key)
    keys = task_keys(task, metrics) if metrics else [slug(task)]
    limit = r.integer(lm, at, "limit", 1000, minimum=1, nullable=True)
    tasks: dict[str, Any] = {}
    for key, metric in zip(keys, or_none(metrics), strict=True):
        tasks[key] = {"task": task, "metric": metric, "limit": limit, "num_fewshot": shots, "apply_chat_template": chat}
        if chat:
            tasks[key]["fewshot_as_multiturn"] = multiturn  # LmEvalConfig's default is False
        if key == task:
            del tasks[key]["task"]

    budgets, origins = _budgets(lm, r, scheme_name, keys, metrics, floors)
    suite = {
        "model": {"name": model, "trust_remote_code": trust},
        "schemes": {scheme_name: scheme},
        "tasks": tasks,
        "budgets": budgets,
        "evaluation": evaluation,
        # no suite mode: the paired items judge in the session's mode; parity items and floors state their own
        "seed": seed,
        "marks": marks,
    }
    return suite, origins


def _evaluation(
    data: dict[str, Any], lm: dict[str, Any], r: Reader, backend: str
) -> tuple[dict[str, Any], list[str], bool]:
    """The suite's ``evaluation`` block, its marks, and whether remote code is trusted."""
    at = ("lmeval",)
    args = dict(r.mapping(lm.get("model_args") or {}, at + ("model_args",), None))  # lm-eval's own model arguments
    if "convert_img_format" in args:
        raise r.error(at + ("model_args", "convert_img_format"), "multimodal evaluation is not supported")
    dtype = args.pop("dtype", None) or r.text(lm, at, "dtype", "bfloat16")
    trust = bool(args.pop("trust_remote_code", False)) or r.flag(lm, at, "trust_remote_code", False)
    args.setdefault("add_bos_token", r.flag(lm, at, "add_bos_token", True))
    evaluation: dict[str, Any] = {"backend": backend, "dtype": dtype, "backend_args": args}
    if lm.get("batch_size") is not None:
        evaluation["batch_size"] = r.integer(lm, at, "batch_size", minimum=1)
    marks = ["slow"]
    if backend == "vllm":
        evaluation["device"] = "cuda"
        args.setdefault("max_model_len", r.integer(lm, at, "max_model_len", 2048, minimum=1))
        args.setdefault(
            "gpu_memory_utilization",
            r.number(data, (), "gpu_memory_utilization", 0.70, low=0.0, high=1.0, low_open=True),
        )
        gpus = r.integer(data, (), "num_gpus", 1, minimum=1)
        if r.flag(data, (), "pipeline_parallel", False) and gpus > 1:
            args["pipeline_parallel_size"] = gpus
        marks.insert(0, "gpu")
    return evaluation, marks, trust


def _budgets(
    lm: dict[str, Any], r: Reader, scheme_name: str, keys: list[str], metrics: list[str], floors: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[FieldPath]]:
    """``recovery_threshold`` as ``min_recovery`` budgets (one per distinct threshold), ``metrics`` as
    ``min_value`` floors marked xfail; and the field each budget comes from."""
    at = ("lmeval",)
    recovery = lm.get("recovery_threshold", LLMC_DEFAULT_RECOVERY)
    per_metric = recovery if isinstance(recovery, dict) else {}
    budgets: list[dict[str, Any]] = []
    origins: list[FieldPath] = []
    # recovery_threshold: one budget per distinct threshold, over the metrics it applies to
    by_threshold: dict[float, list[str]] = {}
    for key, metric in zip(keys, or_none(metrics), strict=True):
        if metric is not None and metric in per_metric:
            t = r.number(per_metric, at + ("recovery_threshold",), metric, low=0.0, high=1.0, low_open=True)
        elif isinstance(recovery, dict):
            t = LLMC_DEFAULT_RECOVERY
        else:
            t = r.number(lm, at, "recovery_threshold", LLMC_DEFAULT_RECOVERY, low=0.0, high=1.0, low_open=True)
        by_threshold.setdefault(t, []).append(key)
    # upstream checks the metrics its run prints: those of lmeval.metrics (all, when it names none)
    checked = {k for k, m in zip(keys, or_none(metrics), strict=True) if not floors or m in floors}
    for t, group in by_threshold.items():
        first = metrics[keys.index(group[0])] if metrics else None
        origin = at + ("recovery_threshold",) + ((first,) if first in per_metric else ())
        parity = [k for k in group if k in checked]
        claim = {"max_drop": "0%"} if t >= 1.0 else {"min_recovery": percent(t)}
        if parity:
            budgets.append(
                {
                    "name": f"parity-recovery>={percent(t)}",
                    "schemes": [scheme_name],
                    "tasks": parity,
                    **claim,
                    "parity": "llm-compressor",
                }
            )
            origins.append(origin)
        budgets.append({"name": f"recovery>={percent(t)}", "schemes": [scheme_name], "tasks": group, **claim})
        origins.append(origin)
    for key, metric in zip(keys, metrics, strict=False):  # no metrics named: one key, no floor
        if metric in floors:
            value = r.number(floors, at + ("metrics",), metric, low=-1e12, high=1e12)
            budgets.append(
                {
                    "schemes": [scheme_name],
                    "tasks": [key],
                    "xfail": LLMC_METRICS_XFAIL,
                    "mode": "point",  # llm-compressor compares the value itself
                    "min_value": {"value": value, "rtol": percent(LLMC_WARNING_RTOL)},
                }
            )
            origins.append(at + ("metrics", metric))
    return budgets, origins
