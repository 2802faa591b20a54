"""llm-compressor ``oneshot`` as a quantizer: one SchemeConfig → one recipe → a
compressed-tensors checkpoint.

Engine layer. The recipe is built from explicit ``config_groups`` (a
compressed-tensors ``QuantizationScheme`` made from our WeightsConfig and
ActivationsConfig), not from preset names, so any bits / group size / symmetry
the config allows reaches llm-compressor unchanged:

========== ==========================================================================
method     recipe
========== ==========================================================================
rtn        QuantizationModifier (round-to-nearest, no calibration data)
gptq       GPTQModifier(dampening_frac)
awq        AWQModifier (transform, ``llmcompressor.modifiers.transform``) + QuantizationModifier
smoothquant SmoothQuantModifier(smoothing_strength) + GPTQModifier (or QuantizationModifier with
           ``weight_rounding: rtn``), W8A8 int8 (dynamic per-token activations, or static
           per-tensor when ``activations.dynamic`` is false)
fp8        QuantizationModifier, FP8 E4M3 weights (per channel, or per group) and FP8 activations:
           dynamic per token, or static per tensor calibrated on data when ``dynamic: false``
recipe     the scheme's llm-compressor recipe (a YAML file or mapping), as given
model_free_ptq  ``llmcompressor.model_free_ptq`` with the scheme's compressed-tensors preset (no data)
========== ==========================================================================

GPTQ's ``actorder`` and AWQ's ``duo_scaling`` reach the modifiers when a scheme sets them (imported
llm-compressor configs do, to quantize the model upstream's test quantizes).

Determinism: calibration windows come from :mod:`..calibration` (seeded, no
shuffle), ``shuffle_calibration_samples=False``, and Python / NumPy / torch
RNGs are seeded from ``calibration.seed`` before ``oneshot``; the same scheme
twice gives bit-identical weights (tested).
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_quant.backends.protocol import write_scheme_record
from pytest_quant.config import ActivationsConfig, SchemeConfig, WeightsConfig
from pytest_quant.errors import QuantConfigError

__all__ = ["LLMCompressorQuantizer", "build_recipe", "quantization_scheme"]


def _weights_args(w: WeightsConfig) -> Any:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationStrategy, QuantizationType

    return QuantizationArgs(
        num_bits=w.bits,
        type=QuantizationType.FLOAT if w.type == "float" else QuantizationType.INT,
        symmetric=w.symmetric,
        strategy=QuantizationStrategy.GROUP if w.group_size else QuantizationStrategy.CHANNEL,
        group_size=w.group_size,
        dynamic=False,
    )


def _activation_args(a: ActivationsConfig) -> Any:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationStrategy, QuantizationType

    kind = QuantizationType.FLOAT if a.type == "float" else QuantizationType.INT
    if a.dynamic:  # scales computed per token at run time: no calibration needed
        return QuantizationArgs(
            num_bits=a.bits, type=kind, symmetric=True, strategy=QuantizationStrategy.TOKEN, dynamic=True
        )
    # one static scale per tensor, the running min/max over the calibration data (as the FP8 preset)
    return QuantizationArgs(
        num_bits=a.bits,
        type=kind,
        symmetric=True,
        strategy=QuantizationStrategy.TENSOR,
        dynamic=False,
        observer="static_minmax",
    )


def quantization_scheme(scheme: SchemeConfig) -> Any:
    """The compressed-tensors ``QuantizationScheme`` (targets every ``Linear``) of ``scheme``."""
    from compressed_tensors.quantization import QuantizationScheme

    assert scheme.weights is not None
    return QuantizationScheme(
        targets=["Linear"],
        weights=_weights_args(scheme.weights),
        input_activations=_activation_args(scheme.activations) if scheme.activations is not None else None,
    )


def recipe_text(scheme: SchemeConfig, base_dir: Path | None = None) -> str:
    """The YAML text of a ``method: recipe`` scheme's recipe (a file relative to ``base_dir``, or a mapping)."""
    import yaml

    recipe = scheme.recipe
    if isinstance(recipe, dict):
        return yaml.safe_dump(recipe, sort_keys=False)
    assert isinstance(recipe, str)
    path = Path(recipe)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise QuantConfigError(
            f"scheme {scheme.name!r}: cannot read recipe {str(path)!r}: {exc}", field=f"schemes.{scheme.name}.recipe"
        ) from None


def _gptq(scheme: SchemeConfig, groups: dict[str, Any], ignore: list[str]) -> Any:
    from llmcompressor.modifiers.quantization import GPTQModifier

    extra: dict[str, Any] = {}
    if scheme.actorder is not None:
        extra["actorder"] = None if scheme.actorder == "none" else scheme.actorder
    return GPTQModifier(config_groups=groups, ignore=ignore, dampening_frac=scheme.dampening_frac or 0.01, **extra)


def build_recipe(scheme: SchemeConfig, base_dir: Path | None = None) -> Any:
    """The llm-compressor modifiers that implement ``scheme`` (see the module table); a recipe's text."""
    from llmcompressor.modifiers.quantization import QuantizationModifier

    m = scheme.method
    if m == "recipe":
        return recipe_text(scheme, base_dir)
    groups = {"group_0": quantization_scheme(scheme)}
    ignore = list(scheme.ignore)
    if m in ("rtn", "fp8"):
        return [QuantizationModifier(config_groups=groups, ignore=ignore)]
    if m == "gptq":
        return [_gptq(scheme, groups, ignore)]
    if m == "awq":
        from llmcompressor.modifiers.transform import AWQModifier

        awq = AWQModifier() if scheme.duo_scaling is None else AWQModifier(duo_scaling=scheme.duo_scaling)
        return [awq, QuantizationModifier(config_groups=groups, ignore=ignore)]
    if m == "smoothquant":
        from llmcompressor.modifiers.transform import SmoothQuantModifier

        smooth = SmoothQuantModifier(smoothing_strength=scheme.smoothing_strength or 0.8)
        if scheme.weight_rounding == "rtn":  # the SmoothQuant paper's recipe: smooth, then round to nearest
            return [smooth, QuantizationModifier(config_groups=groups, ignore=ignore)]
        return [smooth, _gptq(scheme, groups, ignore)]
    raise QuantConfigError(
        f"llm-compressor backend has no recipe for method {m!r}", field=f"schemes.{scheme.name}.method"
    )


def _needs_data(scheme: SchemeConfig) -> bool:
    if scheme.method in ("gptq", "awq", "smoothquant"):
        return True
    if scheme.method == "recipe":  # a recipe's needs are its own: data when the scheme gives some
        return scheme.calibration is not None
    return scheme.activations is not None and not scheme.activations.dynamic


@contextlib.contextmanager
def _cpu_awq_pinning_workaround() -> Iterator[None]:
    """Make AWQ run on a machine without an accelerator.

    llm-compressor 0.14's ``AWQModifier._apply_smoothing`` calls
    ``IntermediatesCache.pin_memory`` on every cached batch before its grid search
    (pinned host memory speeds repeated host→GPU copies). ``Tensor.pin_memory()``
    raises "Cannot access accelerator device when none is available" on a
    CPU-only torch, and there is no switch to turn the pinning off. Pinning has
    no purpose without an accelerator, so, only while our ``oneshot`` runs and only
    when ``torch.accelerator.is_available()`` is false, ``pin_memory`` becomes a
    no-op. (Upstream moved the pinning around in vllm-project/llm-compressor#2813;
    drop this once a release skips it on CPU.)
    """
    import torch

    if torch.accelerator.is_available():
        yield
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, batch_index, input_names=None: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


class LLMCompressorQuantizer:
    """Quantizer ``llmcompressor``: ``oneshot`` with :func:`build_recipe`, saved compressed."""

    name = "llmcompressor"

    def existing(self, scheme: SchemeConfig, *, source: str) -> Path | None:
        """Nothing to use as is: this quantizer builds its folder."""
        return None

    def quantize(self, model_dir: Path, scheme: SchemeConfig, out_dir: Path, *, base_dir: Path | None = None) -> None:
        """Quantize ``model_dir`` into ``out_dir`` (a compressed-tensors checkpoint + tokenizer).

        ``base_dir`` resolves a relative ``calibration.dataset``.
        """
        from llmcompressor import oneshot
        from llmcompressor.core import reset_session
        from transformers import AutoTokenizer

        from pytest_quant.backends.calibration import calibration_dataset, corpus_fingerprint
        from pytest_quant.backends.models import validate_scheme_fits

        if scheme.method is None:
            raise QuantConfigError(f"scheme {scheme.name!r} is a checkpoint, not something to quantize")
        validate_scheme_fits(scheme, model_dir)
        model_dir, out_dir = Path(model_dir), Path(out_dir)
        if scheme.method == "model_free_ptq":
            self._model_free(model_dir, scheme, out_dir)
            return
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        calib = scheme.calibration if _needs_data(scheme) else None
        if _needs_data(scheme) and calib is None:
            raise QuantConfigError(f"scheme {scheme.name!r} ({scheme.describe()}) needs calibration data")
        kwargs: dict[str, Any] = {}
        if calib is not None:
            kwargs = {
                "dataset": calibration_dataset(tokenizer, calib, base_dir=base_dir),
                "num_calibration_samples": calib.samples,
                "max_seq_length": calib.seq_len,
                "shuffle_calibration_samples": False,
                "batch_size": 1,
            }
        _seed_everything(calib.seed if calib is not None else 0)
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            with _cpu_awq_pinning_workaround(), warnings.catch_warnings():
                # llm-compressor keeps the model under its own offloading wrapper; saving it is fine
                warnings.filterwarnings(
                    "ignore", message="Attempting to save a model with offloaded", category=UserWarning
                )
                oneshot(
                    model=str(model_dir),
                    tokenizer=tokenizer,
                    recipe=build_recipe(scheme, base_dir),
                    precision="auto",
                    output_dir=str(out_dir),
                    save_compressed=True,
                    **kwargs,
                )
        finally:
            reset_session()  # the global session holds the model: let it go
        import llmcompressor

        record = {
            "backend": self.name,
            "llmcompressor_version": llmcompressor.__version__,
            "scheme": scheme.fingerprint_payload(),
            "describe": scheme.describe(),
            "calibration_corpus": corpus_fingerprint(calib, base_dir=base_dir) if calib is not None else None,
            "source_model": str(model_dir),
        }
        if scheme.method == "recipe":
            record["recipe"] = build_recipe(scheme, base_dir)
        write_scheme_record(out_dir, record)

    def _model_free(self, model_dir: Path, scheme: SchemeConfig, out_dir: Path) -> None:
        """``llmcompressor.model_free_ptq``: the preset applied to the safetensors files, no model loaded."""
        import shutil

        import llmcompressor
        from llmcompressor import model_free_ptq

        out_dir.mkdir(parents=True, exist_ok=True)
        model_free_ptq(
            model_stub=str(model_dir), save_directory=str(out_dir), scheme=scheme.preset, ignore=list(scheme.ignore)
        )
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"):
            if (model_dir / name).exists() and not (out_dir / name).exists():
                shutil.copy2(model_dir / name, out_dir / name)  # upstream saves the processor beside it
        record = {
            "backend": self.name,
            "llmcompressor_version": llmcompressor.__version__,
            "scheme": scheme.fingerprint_payload(),
            "describe": scheme.describe(),
            "calibration_corpus": None,
            "source_model": str(model_dir),
        }
        write_scheme_record(out_dir, record)
