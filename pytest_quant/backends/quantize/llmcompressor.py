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
========== ==========================================================================

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


def build_recipe(scheme: SchemeConfig) -> list[Any]:
    """The llm-compressor modifiers that implement ``scheme`` (see the module table)."""
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    groups = {"group_0": quantization_scheme(scheme)}
    ignore = list(scheme.ignore)
    m = scheme.method
    if m in ("rtn", "fp8"):
        return [QuantizationModifier(config_groups=groups, ignore=ignore)]
    if m == "gptq":
        return [GPTQModifier(config_groups=groups, ignore=ignore, dampening_frac=scheme.dampening_frac or 0.01)]
    if m == "awq":
        from llmcompressor.modifiers.transform import AWQModifier

        return [AWQModifier(), QuantizationModifier(config_groups=groups, ignore=ignore)]
    if m == "smoothquant":
        from llmcompressor.modifiers.transform import SmoothQuantModifier

        smooth = SmoothQuantModifier(smoothing_strength=scheme.smoothing_strength or 0.8)
        if scheme.weight_rounding == "rtn":  # the SmoothQuant paper's recipe: smooth, then round to nearest
            return [smooth, QuantizationModifier(config_groups=groups, ignore=ignore)]
        return [smooth, GPTQModifier(config_groups=groups, ignore=ignore, dampening_frac=scheme.dampening_frac or 0.01)]
    raise QuantConfigError(
        f"llm-compressor backend has no recipe for method {m!r}", field=f"schemes.{scheme.name}.method"
    )


def _needs_data(scheme: SchemeConfig) -> bool:
    if scheme.method in ("gptq", "awq", "smoothquant"):
        return True
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
                    recipe=build_recipe(scheme),
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
        write_scheme_record(out_dir, record)
