"""``checkpoint:`` schemes: a model someone else quantized, used as is.

Engine layer. :func:`resolve_checkpoint` only checks that the folder is a
loadable Hugging Face causal-LM folder — config.json, weights whose safetensors
headers read back whole, and, when it says it is quantized, a
``quantization_config`` naming its method (compressed-tensors, GPTQ, AWQ, FP8,
...) — and returns it unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

from pytest_quant.config import SchemeConfig
from pytest_quant.errors import QuantConfigError

__all__ = ["CheckpointQuantizer", "resolve_checkpoint"]

_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "model*.bin", "*.pt")


def resolve_checkpoint(path: str | Path, source: str | None = None, *, base_dir: Path | None = None) -> Path:
    """The absolute folder of a ``checkpoint:`` scheme, after checking it is usable.

    ``path`` may be relative to ``base_dir`` (e.g. the suite file's folder).
    Raises :class:`QuantConfigError` naming the path (and ``source``) when the
    folder is missing, has no config.json or weights, or its config is not valid JSON.
    """
    raw = Path(path).expanduser()
    folder = raw if raw.is_absolute() or base_dir is None else Path(base_dir) / raw
    field = "checkpoint"
    if not folder.exists():
        raise QuantConfigError(f"checkpoint folder {str(folder)!r} does not exist", source=source, field=field)
    if not folder.is_dir():
        raise QuantConfigError(
            f"checkpoint {str(folder)!r} is not a folder (give the Hugging Face model folder)",
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

            if method not in AUTO_QUANTIZER_MAPPING and method != "bitsandbytes":
                raise QuantConfigError(
                    f"checkpoint {str(folder)!r}: transformers cannot load quant_method {method!r}",
                    source=source,
                    field=field,
                )
    from pytest_quant.backends.models import validate_model_files

    validate_model_files(folder, what=f"checkpoint {str(folder)!r}", source=source, field=field)
    return folder.resolve()


class CheckpointQuantizer:
    """Quantizer ``checkpoint``: the scheme's folder, checked and used as is; nothing is built."""

    name = "checkpoint"

    def existing(self, scheme: SchemeConfig, *, source: str) -> Path | None:
        assert scheme.checkpoint is not None
        return resolve_checkpoint(Path(scheme.checkpoint), source or scheme.name)

    def quantize(self, model_dir: Path, scheme: SchemeConfig, out_dir: Path) -> None:
        raise QuantConfigError(f"scheme {scheme.name!r} is a checkpoint, loaded as is: nothing to quantize")
