"""Engines behind small protocols, found by name and imported only when used.

Like lm-eval's ``MODEL_MAPPING``: a name maps to ``"module:Class"``, and the
module (which may import torch, transformers, llmcompressor, lm_eval or vllm)
is imported the first time that backend is asked for. Nothing here imports a
heavy library at module load. What each kind must offer is declared in
:mod:`pytest_quant.backends.protocol`.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any, cast

from pytest_quant.backends.protocol import Evaluator, Quantizer
from pytest_quant.errors import BackendUnavailable, QuantConfigError

__all__ = ["EVALUATORS", "QUANTIZERS", "get_evaluator", "get_quantizer", "installed", "require", "unavailable_reason"]

QUANTIZERS: dict[str, str] = {
    "reference": "pytest_quant.backends.quantize.rtn:ReferenceQuantizer",
    "llmcompressor": "pytest_quant.backends.quantize.llmcompressor:LLMCompressorQuantizer",
    "autoawq": "pytest_quant.backends.quantize.autoawq:AutoAWQQuantizer",
    "checkpoint": "pytest_quant.backends.quantize.checkpoint:CheckpointQuantizer",
}

EVALUATORS: dict[str, str] = {
    "hf": "pytest_quant.backends.evaluate.lmeval_hf:LMEvalHF",
    "vllm": "pytest_quant.backends.evaluate.lmeval_vllm:LMEvalVLLM",
    "perplexity": "pytest_quant.backends.evaluate.perplexity:PerplexityEvaluator",
    "divergence": "pytest_quant.backends.evaluate.divergence:DivergenceEvaluator",
    "mt_bench": "pytest_quant.backends.evaluate.mt_bench:MTBenchEvaluator",
}

# Backends whose library is an optional install: name -> (module it imports, how to install it).
OPTIONAL: dict[str, tuple[str, str]] = {
    "autoawq": (
        "awq",
        "pip install --no-deps autoawq==0.2.9  (AutoAWQ is archived upstream; --no-deps keeps its triton "
        "requirement and unpinned stack out, see requirements/autoawq.txt)",
    ),
}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here, found without importing it (cheap enough for collection)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` cannot run here (its optional library is not installed), or None.

    Finds the module without importing it (cheap enough for collection). An installed but
    broken library is not "unavailable": importing it then fails loudly.
    """
    if name not in OPTIONAL:
        return None
    module, install = OPTIONAL[name]
    if installed(module):
        return None
    return f"backend {name!r} needs the {module!r} module, which is not installed: {install}"


def require(name: str) -> None:
    """Raise :class:`BackendUnavailable` (the plugin skips) when backend ``name``'s library is not installed."""
    reason = unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailable(reason)


def _load(kind: str, table: dict[str, str], name: str, **kwargs: Any) -> Any:
    try:
        target = table[name]
    except KeyError:
        raise QuantConfigError(f"unknown {kind} backend {name!r}; available: {', '.join(sorted(table))}") from None
    require(name)
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)(**kwargs)


def get_quantizer(name: str) -> Quantizer:
    """The quantizer registered as ``name`` (QuantConfigError listing the available ones otherwise)."""
    return cast(Quantizer, _load("quantization", QUANTIZERS, name))


def get_evaluator(name: str, *, cache_dir: Path | None = None) -> Evaluator:
    """The evaluator registered as ``name``. ``cache_dir`` is the pytest-quant cache root its workers
    keep their runs and caches under (default :func:`pytest_quant.backends.cache.default_cache_dir`)."""
    from pytest_quant.backends.cache import default_cache_dir

    return cast(Evaluator, _load("evaluation", EVALUATORS, name, cache_dir=cache_dir or default_cache_dir()))
