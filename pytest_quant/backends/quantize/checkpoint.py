"""``checkpoint:`` schemes: a model someone else quantized, evaluated as published.

Engine layer. :func:`resolve_checkpoint` checks that a scheme's ``checkpoint`` is usable — a
``.gguf`` file, or a Hugging Face causal-LM folder: config.json, weights whose safetensors
headers read back whole, and, when it says it is quantized, a ``quantization_config`` naming
its method (compressed-tensors, GPTQ, AWQ, FP8, EXL2, ...) — and returns it unchanged.
:func:`loading_plan` says how it is loaded on a device:

=================== =========================================================================
compressed-tensors  as is (transformers decompresses it on load, ``dequantize=True``)
GPTQ, AWQ GEMM      as is through transformers on a CUDA device where ``gptqmodel`` (their
                    kernels) is installed; else dequantized by pytest-quant into a dense
                    folder (:mod:`pytest_quant.backends.dequantize`), exactly the format's
                    arithmetic
GGUF file           converted once to a float folder (:mod:`pytest_quant.backends.gguf`)
EXL2, BitBLAS       CUDA-only: :class:`BackendUnavailable` (skip) without the package,
                    :class:`KernelUnavailable` (skip on CPU, fail on a GPU) otherwise
=================== =========================================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_quant.backends import installed
from pytest_quant.config import SchemeConfig
from pytest_quant.errors import BackendUnavailable, KernelUnavailable, QuantConfigError

__all__ = ["CUDA_ONLY", "CheckpointLoading", "CheckpointQuantizer", "loading_plan", "resolve_checkpoint"]

_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "model*.bin", "*.pt")
# The library transformers 5 loads GPTQ and AWQ checkpoints through (its kernels want CUDA).
GPTQ_KERNELS = ("gptqmodel", "pip install gptqmodel  (needs a CUDA machine)")
# quant_method (or GPTQ checkpoint_format) -> (module, package, how to install): formats only a CUDA library loads
CUDA_ONLY: dict[str, tuple[str, str, str]] = {
    "exl2": ("exllamav2", "exllamav2", "pip install exllamav2"),
    "bitblas": ("bitblas", "bitblas", "pip install bitblas"),
}


def resolve_checkpoint(path: str | Path, source: str | None = None, *, base_dir: Path | None = None) -> Path:
    """The absolute folder (or ``.gguf`` file) of a ``checkpoint:`` scheme, after checking it is usable.

    ``path`` may be relative to ``base_dir`` (e.g. the suite file's folder).
    Raises :class:`QuantConfigError` naming the path (and ``source``) when the
    folder is missing, has no config.json or weights, or its config is not valid JSON.
    """
    raw = Path(path).expanduser()
    folder = raw if raw.is_absolute() or base_dir is None else Path(base_dir) / raw
    field = "checkpoint"
    if not folder.exists():
        raise QuantConfigError(f"checkpoint folder {str(folder)!r} does not exist", source=source, field=field)
    if folder.is_file() and folder.suffix.lower() == ".gguf":
        with open(folder, "rb") as f:
            if f.read(4) != b"GGUF":
                raise QuantConfigError(
                    f"checkpoint {str(folder)!r} is not a GGUF file (it does not start with 'GGUF')",
                    source=source,
                    field=field,
                )
        return folder.resolve()
    if not folder.is_dir():
        raise QuantConfigError(
            f"checkpoint {str(folder)!r} is not a folder (give the Hugging Face model folder or a .gguf file)",
            source=source,
            field=field,
        )
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise QuantConfigError(f"checkpoint folder {str(folder)!r} has no config.json", source=source, field=field)
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise QuantConfigError(
            f"checkpoint {str(config_file)!r} is not valid JSON: {exc}", source=source, field=field
        ) from exc
    if not isinstance(config, dict) or "model_type" not in config:
        raise QuantConfigError(
            f"checkpoint {str(config_file)!r} has no 'model_type': not a transformers config",
            source=source,
            field=field,
        )
    if not any(p.is_file() for pattern in _WEIGHT_GLOBS for p in folder.glob(pattern)):
        raise QuantConfigError(
            f"checkpoint folder {str(folder)!r} has no weights (*.safetensors or pytorch_model*.bin)",
            source=source,
            field=field,
        )
    qc = config.get("quantization_config")
    if qc is not None:
        if not isinstance(qc, dict) or not qc.get("quant_method"):
            raise QuantConfigError(
                f"checkpoint {str(config_file)!r}: quantization_config has no 'quant_method'",
                source=source,
                field=field,
            )
        method = str(qc["quant_method"])
        if method != "compressed-tensors":
            from transformers.quantizers.auto import AUTO_QUANTIZER_MAPPING

            if method not in AUTO_QUANTIZER_MAPPING and method not in ("bitsandbytes", *CUDA_ONLY):
                raise QuantConfigError(
                    f"checkpoint {str(folder)!r}: transformers cannot load quant_method {method!r}",
                    source=source,
                    field=field,
                )
    from pytest_quant.backends.models import validate_model_files

    validate_model_files(folder, what=f"checkpoint {str(folder)!r}", source=source, field=field)
    return folder.resolve()


@dataclass(frozen=True)
class CheckpointLoading:
    """How a checkpoint is loaded for evaluation: ``kind`` is ``"as is"``, ``"dequantize"`` (a dense
    folder made by pytest-quant) or ``"gguf"`` (converted to a float folder); ``how`` says it in
    words for the result row."""

    kind: str
    how: str


def _cuda_only(checkpoint: Path, name: str, device: str) -> KernelUnavailable | BackendUnavailable:
    module, package, install = CUDA_ONLY[name]
    what = f"checkpoint {str(checkpoint)!r} is {name}"
    if not installed(module):
        return BackendUnavailable(
            f"{what}: it needs CUDA and the {package} package, which is not installed ({install})"
        )
    if device.startswith("cpu"):
        return KernelUnavailable(f"{what}: it needs CUDA and the {package} package; device {device!r} has no CUDA")
    return KernelUnavailable(
        f"{what}: {package} is installed, but pytest-quant evaluates through transformers or vLLM and neither "
        f"loads {name} checkpoints"
    )


def loading_plan(checkpoint: str | Path, device: str | None) -> CheckpointLoading:
    """How checkpoint ``checkpoint`` (a folder or a .gguf file, as :func:`resolve_checkpoint` returns it)
    is loaded on ``device`` (None: no evaluation, its files as they are: a GGUF file is still converted).

    Raises :class:`BackendUnavailable` / :class:`KernelUnavailable` for a CUDA-only format that
    cannot load here (EXL2, BitBLAS, GPTQ's Marlin layout, AWQ other than GEMM without gptqmodel on CUDA).
    """
    from pytest_quant.backends.dequantize import packed_format

    path = Path(checkpoint)
    if path.is_file():
        return CheckpointLoading("gguf", "converted from GGUF by pytest-quant (float32, dequantized by transformers)")
    config: dict[str, Any] = json.loads((path / "config.json").read_text(encoding="utf-8"))
    found = config.get("quantization_config")
    qc: dict[str, Any] = found if isinstance(found, dict) else {}
    method = str(qc.get("quant_method", "")).lower()
    layout = str(qc.get("checkpoint_format") or qc.get("format") or "").lower() if method == "gptq" else ""
    if device is None:
        return CheckpointLoading("as is", "as is")
    for name in (method, layout):
        if name in CUDA_ONLY:
            raise _cuda_only(path, name, device)
    if method == "gptq" and layout == "marlin":
        if device.startswith("cpu") or not installed(GPTQ_KERNELS[0]):
            raise (BackendUnavailable if not installed(GPTQ_KERNELS[0]) else KernelUnavailable)(
                f"checkpoint {str(path)!r} is GPTQ in the Marlin layout: it needs CUDA and {GPTQ_KERNELS[1]}"
            )
        return CheckpointLoading("as is", "as is (gptqmodel's kernels)")
    fmt = packed_format(config, str(path / "config.json"))
    if fmt is None:
        return CheckpointLoading("as is", "as is")
    kernels = installed(GPTQ_KERNELS[0])
    if kernels and not device.startswith("cpu"):
        return CheckpointLoading("as is", f"as is ({fmt.describe()}, gptqmodel's kernels)")
    if fmt.method == "awq" and fmt.version != "gemm":
        why = "not installed" if not kernels else f"of no use on device {device!r}"
        raise KernelUnavailable(
            f"checkpoint {str(path)!r} is AWQ {fmt.version}: pytest-quant dequantizes AWQ GEMM only, and "
            f"gptqmodel is {why} ({GPTQ_KERNELS[1]})"
        )
    return CheckpointLoading("dequantize", f"dequantized by pytest-quant from {fmt.describe()}")


class CheckpointQuantizer:
    """Quantizer ``checkpoint``: the scheme's folder or GGUF file, checked; nothing is quantized (see
    :func:`loading_plan` for how it is loaded)."""

    name = "checkpoint"

    def existing(self, scheme: SchemeConfig, *, source: str) -> Path | None:
        assert scheme.checkpoint is not None
        return resolve_checkpoint(Path(scheme.checkpoint), source or scheme.name)

    def quantize(self, model_dir: Path, scheme: SchemeConfig, out_dir: Path) -> None:
        raise QuantConfigError(f"scheme {scheme.name!r} is a checkpoint, loaded as is: nothing to quantize")
