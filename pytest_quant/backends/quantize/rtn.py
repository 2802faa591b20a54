"""The reference quantizer: round-to-nearest with our own math, no llm-compressor.

Engine layer. Each ``nn.Linear`` weight (except layers matching
``scheme.ignore``) is replaced once by :func:`pytest_quant.primitives.rtn_fake_quantize_weight`
— quantized, dequantized, materialised in float32 — and the model is saved as a
plain dense HF folder. Evaluating it costs nothing extra per forward, and any
HF-compatible evaluator reads it. ``pytest_quant_scheme.json`` records what was
done (scheme, layers, bits, group size).
"""

from __future__ import annotations

from pathlib import Path

from pytest_quant.backends.protocol import write_scheme_record
from pytest_quant.config import SchemeConfig
from pytest_quant.errors import QuantConfigError

__all__ = ["ReferenceQuantizer"]


class ReferenceQuantizer:
    """Quantizer ``reference``: weight-only integer RTN (``method: rtn``), per channel or per group."""

    name = "reference"

    def existing(self, scheme: SchemeConfig, *, source: str) -> Path | None:
        """Nothing to use as is: this quantizer builds its folder."""
        return None

    def quantize(self, model_dir: Path, scheme: SchemeConfig, out_dir: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from pytest_quant.backends.models import is_quant_target, quantization_method, validate_scheme_fits
        from pytest_quant.primitives import rtn_fake_quantize_weight

        w = scheme.weights
        if scheme.method != "rtn" or w is None or w.type != "int" or scheme.activations is not None:
            raise QuantConfigError(
                f"the reference backend does weight-only integer RTN; scheme {scheme.name!r} is "
                f"{scheme.describe() if scheme.method else 'a checkpoint'} (use backend 'llmcompressor')",
                field=f"schemes.{scheme.name}.backend",
            )
        model_dir, out_dir = Path(model_dir), Path(out_dir)
        if quantization_method(model_dir) is not None:
            raise QuantConfigError(
                f"{model_dir} is already quantized ({quantization_method(model_dir)}); RTN needs a dense model"
            )
        validate_scheme_fits(scheme, model_dir)

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        model.eval()
        out_emb = model.get_output_embeddings()
        if (
            out_emb is not None
            and out_emb.weight is model.get_input_embeddings().weight
            and not any(is_quant_target(n, m, scheme.ignore) for n, m in model.named_modules() if m is out_emb)
        ):
            # A tied lm_head that is quantized must not quantize the embeddings with it.
            out_emb.weight = torch.nn.Parameter(out_emb.weight.detach().clone())
            model.config.tie_word_embeddings = False
        done: list[str] = []
        skipped: list[str] = []
        with torch.no_grad():
            for name, module in model.named_modules():
                if not isinstance(module, torch.nn.Linear):
                    continue
                if is_quant_target(name, module, scheme.ignore):
                    skipped.append(name)
                    continue
                module.weight.copy_(
                    rtn_fake_quantize_weight(
                        module.weight, w.bits, w.symmetric, group_size=w.group_size, per_channel=True
                    )
                )
                done.append(name)
        if not done:
            raise QuantConfigError(f"scheme {scheme.name!r}: 'ignore' leaves no Linear layer to quantize")
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir, safe_serialization=True)
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(out_dir)
        record = {
            "backend": self.name,
            "scheme": scheme.fingerprint_payload(),
            "describe": scheme.describe(),
            "dtype": "float32",
            "quantized_layers": done,
            "ignored_layers": skipped,
            "source_model": str(model_dir),
        }
        write_scheme_record(out_dir, record)
