"""AutoAWQ as a quantizer: ``method: awq`` with ``backend: autoawq`` (llm-compressor's AWQ stays the default).

Engine layer. AutoAWQ 0.2.9 (archived upstream; installed with ``--no-deps``, see
``requirements/autoawq.txt``) runs its own AWQ on our calibration windows: per input channel
scales searched on the activations, a clipping search (skipped for q/k projections), then 4-bit
round-to-nearest with a zero point per group. It saves a GEMM-format checkpoint in which every
quantized ``Linear`` (``in`` inputs, ``out`` outputs, groups of ``g`` inputs) is

========== ================= ==========================================================
tensor     shape, dtype      content
========== ================= ==========================================================
qweight    [in, out/8] int32 the 4-bit codes q[i, o], 8 output columns per word
qzeros     [in/g, out/8] int32 the 4-bit zero points z[i/g, o], packed the same way
scales     [in/g, out] fp16  the step s[i/g, o]; the weight is W[o, i] = (q - z) * s
========== ================= ==========================================================

Packing (``WQLinear_GEMM.from_linear``): bits ``4k .. 4k+3`` of a word hold column
``AWQ_PACK_ORDER[k]`` of its 8 consecutive columns, AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7).

That checkpoint cannot be evaluated on this stack as is: transformers 5 loads AWQ checkpoints
only through gptqmodel, and AutoAWQ's own ``WQLinear_GEMM`` needs CUDA kernels or triton. So the
artifact is a plain dense HF folder: the packed tensors are read back from AutoAWQ's saved
checkpoint and dequantized by :func:`dequantize_awq_gemm` (our unpacking of the layout above,
tested against AutoAWQ's ``awq.utils.packing_utils.dequantize_gemm``), exactly, in float32; every
other tensor (embeddings, the RMSNorm gains AWQ rescaled, ignored layers) is copied.
``pytest_quant_scheme.json`` records the scheme, the layers, AutoAWQ's settings and the packed
checkpoint's tensor sizes (what the weights take deployed as AWQ).

On a CPU, AutoAWQ's scale search corrupts the layers it searches (a snapshot that is no copy);
:func:`_cpu_scale_search_fix` makes the snapshot a copy while our ``quantize`` runs.
"""

from __future__ import annotations

import contextlib
import gc
import random
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_quant.backends.protocol import write_scheme_record
from pytest_quant.config import SchemeConfig
from pytest_quant.errors import QuantConfigError

__all__ = ["AWQ_PACK_ORDER", "AutoAWQQuantizer", "dequantize_awq_gemm", "unpack_awq_gemm"]

AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble k of a word holds column AWQ_PACK_ORDER[k] of its 8
BITS = 4
# AutoAWQ's defaults, passed explicitly so the record says what ran.
DUO_SCALING = True
APPLY_CLIP = True
_NOT_CLIPPED = ("q_", "k_", "query", "key", "Wqkv")  # AwqQuantizer._search_best_clip skips these names


# --------------------------------------------------------------------------- the GEMM layout
def unpack_awq_gemm(packed: Any, bits: int = BITS) -> Any:
    """The codes of AWQ GEMM words: int32 ``[rows, cols]`` -> int32 ``[rows, cols * 32 // bits]``
    in natural column order (values ``0 .. 2**bits - 1``)."""
    import torch

    if bits != 4:
        raise ValueError(f"AWQ GEMM packs 4-bit codes, got bits={bits}")
    if packed.dtype != torch.int32 or packed.dim() != 2:
        raise ValueError(f"AWQ GEMM words are a 2-D int32 tensor, got {packed.dtype} of shape {tuple(packed.shape)}")
    per_word = 32 // bits
    # column j of a word sits in nibble AWQ_PACK_ORDER.index(j)
    shifts = torch.tensor(
        [bits * AWQ_PACK_ORDER.index(j) for j in range(per_word)], dtype=torch.int32, device=packed.device
    )
    codes = torch.bitwise_and(torch.bitwise_right_shift(packed.unsqueeze(-1), shifts), (1 << bits) - 1)
    return codes.reshape(packed.shape[0], packed.shape[1] * per_word)


def dequantize_awq_gemm(qweight: Any, qzeros: Any, scales: Any, group_size: int, bits: int = BITS) -> Any:
    """The dense weight ``[out, in]`` (float32) of one AWQ GEMM ``Linear``: ``W[o, i] = (q[i, o] -
    z[i // g, o]) * s[i // g, o]``. Exact: a 4-bit code difference times an fp16 scale fits float32."""
    import torch

    q = unpack_awq_gemm(qweight, bits)
    z = unpack_awq_gemm(qzeros, bits)
    in_features, out_features = q.shape
    groups = in_features // group_size
    if in_features % group_size or z.shape != (groups, out_features) or tuple(scales.shape) != (groups, out_features):
        raise ValueError(
            f"AWQ GEMM tensors do not fit together with group_size {group_size}: qweight unpacks to "
            f"{tuple(q.shape)}, qzeros to {tuple(z.shape)}, scales are {tuple(scales.shape)}"
        )
    z = z.repeat_interleave(group_size, dim=0)
    s = scales.to(torch.float32).repeat_interleave(group_size, dim=0)
    return ((q - z).to(torch.float32) * s).t().contiguous()


# --------------------------------------------------------------------------- which layers
def _modules_to_not_convert(awq_model: Any, scheme: SchemeConfig) -> list[str]:
    """``scheme.ignore`` as AutoAWQ's ``modules_to_not_convert``: names inside a decoder block,
    matched as substrings in every block. Raises :class:`QuantConfigError` when ``ignore`` cannot
    be said that way (one block only, or a Linear outside the blocks left to quantize), or when a
    layer left to quantize has a shape AutoAWQ cannot take (it would fail on an assertion later)."""
    import torch

    from pytest_quant.backends.models import is_quant_target

    field = f"schemes.{scheme.name}.ignore"
    model = awq_model.model
    names = {id(m): n for n, m in model.named_modules()}
    in_blocks: set[str] = set()
    per_block: list[tuple[str, set[str], set[str]]] = []  # (block, in-block Linear names, ignored ones)
    for block in awq_model.get_model_layers(model):
        prefix = names[id(block)]
        linears = {rel for rel, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
        ignored = {
            rel
            for rel, m in block.named_modules()
            if rel in linears and is_quant_target(f"{prefix}.{rel}", m, scheme.ignore)
        }
        in_blocks |= {f"{prefix}.{rel}" for rel in linears}
        per_block.append((prefix, linears, ignored))
    for name, module in model.named_modules():
        if (
            isinstance(module, torch.nn.Linear)
            and name not in in_blocks
            and not is_quant_target(name, module, scheme.ignore)
        ):
            raise QuantConfigError(
                f"backend 'autoawq' quantizes the Linear layers of the decoder blocks only; add {name!r} to 'ignore' "
                f"(got ignore {list(scheme.ignore)})",
                field=field,
            )
    if not per_block:
        raise QuantConfigError(f"AutoAWQ found no decoder blocks in {type(model).__name__}", field=field)
    first_prefix, _, keys = per_block[0]
    for prefix, linears, ignored in per_block:
        if ignored != keys:
            differ = sorted(ignored ^ keys)[0]
            raise QuantConfigError(
                f"backend 'autoawq' skips a layer by its name in every decoder block; 'ignore' selects "
                f"{differ!r} in {first_prefix if differ in keys else prefix!r} only (got ignore {list(scheme.ignore)})",
                field=field,
            )
        selected = {rel for rel in linears if any(k in rel for k in keys)}  # AutoAWQ's substring match
        if selected != ignored:
            raise QuantConfigError(
                f"backend 'autoawq' matches 'ignore' names as substrings: {sorted(keys)} would also skip "
                f"{sorted(selected - ignored)} in {prefix!r}",
                field=field,
            )
    if all(keys == linears for _, linears, _ in per_block):
        raise QuantConfigError(f"scheme {scheme.name!r}: 'ignore' leaves no Linear layer to quantize", field=field)
    for prefix, linears, ignored in per_block:
        block = model.get_submodule(prefix)
        for rel in sorted(linears - ignored):
            # 8 output columns per int32 word; the clipping search (not for q/k) takes 64 output rows at a time
            clipped = not any(k in rel for k in _NOT_CLIPPED)
            need, why = (64, "its clipping search") if clipped else (8, "packing")
            out_features = block.get_submodule(rel).out_features
            if out_features % need:
                raise QuantConfigError(
                    f"backend 'autoawq' needs out_features divisible by {need} ({why}); layer "
                    f"'{prefix}.{rel}' has {out_features}: add it to 'ignore'",
                    field=field,
                )
    return sorted(keys)


# --------------------------------------------------------------------------- the quantizer
@contextlib.contextmanager
def _cpu_scale_search_fix() -> Iterator[None]:
    """Make AutoAWQ's scale search correct when the layer is on the CPU.

    ``AwqQuantizer._compute_best_scale`` snapshots the module with ``{k: v.cpu() for k, v in
    module.state_dict().items()}``, multiplies the weights by each candidate scale *in place*, and
    restores the snapshot after each candidate. On a GPU ``.cpu()`` copies; on the CPU it returns
    the same tensor, so the first candidate's in-place multiply lands in the snapshot: every later
    candidate is judged on weights already scaled by the first one, and the layer keeps that
    scaling afterwards while the RMSNorm before it only gets the chosen scale's inverse — the
    model's function changes (found by this backend's test against the original weights; the
    same bug in AWQ's reference code: mit-han-lab/llm-awq#163, fix proposed in llm-awq#327).
    Here, only while our ``quantize`` runs and only for modules on the CPU, ``state_dict()`` inside
    ``_compute_best_scale`` returns copies, so the snapshot is one. Nothing else changes.
    """
    from awq.quantize.quantizer import AwqQuantizer

    original = AwqQuantizer._compute_best_scale

    def compute_best_scale(
        self: Any, x: Any, w_mean: Any, x_mean: Any, module2inspect: Any, *args: Any, **kwargs: Any
    ) -> Any:
        if next(module2inspect.parameters()).device.type != "cpu":
            return original(self, x, w_mean, x_mean, module2inspect, *args, **kwargs)
        state_dict = module2inspect.state_dict
        module2inspect.state_dict = lambda *a, **k: {n: t.clone() for n, t in state_dict(*a, **k).items()}
        try:
            return original(self, x, w_mean, x_mean, module2inspect, *args, **kwargs)
        finally:
            del module2inspect.state_dict

    AwqQuantizer._compute_best_scale = compute_best_scale
    try:
        yield
    finally:
        AwqQuantizer._compute_best_scale = original


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def _validate_method(scheme: SchemeConfig) -> None:
    w = scheme.weights
    if scheme.method != "awq" or w is None or scheme.calibration is None:
        raise QuantConfigError(
            f"backend 'autoawq' runs AWQ; scheme {scheme.name!r} is "
            f"{scheme.describe() if scheme.method else 'a checkpoint'}",
            field=f"schemes.{scheme.name}.backend",
        )
    if w.bits != BITS or w.group_size not in (64, 128) or w.symmetric:  # SchemeConfig rejects these at collection
        raise QuantConfigError(
            f"backend 'autoawq' does 4-bit weights, group_size 64 or 128, with zero points; got {scheme.describe()}",
            field=f"schemes.{scheme.name}.weights",
        )


def _dense_state_dict(packed_dir: Path, group_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The dense float32 state dict of AutoAWQ's checkpoint in ``packed_dir``, and a summary of
    its tensors (per quantized layer: the packed tensors' shapes and bytes; totals)."""
    import torch
    from safetensors.torch import load_file

    shards = sorted(packed_dir.glob("*.safetensors"))
    if not shards:
        raise RuntimeError(f"AutoAWQ saved no safetensors in {packed_dir}")
    stored: dict[str, Any] = {}
    for shard in shards:
        stored.update(load_file(shard))
    dense: dict[str, Any] = {}
    layers: dict[str, dict[str, Any]] = {}
    total = 0
    for name, tensor in stored.items():
        total += tensor.numel() * tensor.element_size()
        if name.endswith((".qzeros", ".scales")):
            continue
        if name.endswith(".qweight"):
            prefix = name[: -len(".qweight")]
            parts = {k: stored[f"{prefix}.{k}"] for k in ("qweight", "qzeros", "scales")}
            dense[f"{prefix}.weight"] = dequantize_awq_gemm(
                parts["qweight"], parts["qzeros"], parts["scales"], group_size
            )
            layers[prefix] = {
                k: {
                    "shape": list(t.shape),
                    "dtype": str(t.dtype).removeprefix("torch."),
                    "bytes": t.numel() * t.element_size(),
                }
                for k, t in parts.items()
            }
            continue
        dense[name] = tensor.to(torch.float32) if tensor.is_floating_point() else tensor
    summary = {
        "tensor_bytes": total,
        "quantized_layer_bytes": sum(v["bytes"] for layer in layers.values() for v in layer.values()),
        "layers": layers,
    }
    return dense, summary


def _save_dense(model_dir: Path, out_dir: Path, packed_dir: Path, group_size: int, tokenizer: Any) -> tuple[Any, dict]:
    """Load AutoAWQ's packed checkpoint into the float32 model, dequantized, and save it dense into
    ``out_dir`` (the packed folder is removed). Returns the model and the packed checkpoint's record."""
    import torch
    from transformers import AutoModelForCausalLM

    state, packed = _dense_state_dict(packed_dir, group_size)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # AutoAWQ saves a tied weight once (e.g. lm_head = embed_tokens): loading its twin loads it
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(params[n]) for n in state if n in params}
    untied = [n for n in missing if n not in params or id(params[n]) not in loaded]
    if unexpected or untied:
        raise RuntimeError(
            f"AutoAWQ's checkpoint does not match {model_dir}: unexpected {unexpected[:5]}, missing {untied[:5]}"
        )
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    shutil.rmtree(packed_dir)
    return model, packed


class AutoAWQQuantizer:
    """Quantizer ``autoawq``: AutoAWQ's AWQ (GEMM, 4-bit, zero points), evaluated dequantized."""

    name = "autoawq"

    def existing(self, scheme: SchemeConfig, *, source: str) -> Path | None:
        """Nothing to use as is: this quantizer builds its folder."""
        return None

    def quantize(self, model_dir: Path, scheme: SchemeConfig, out_dir: Path, *, base_dir: Path | None = None) -> None:
        """Quantize ``model_dir`` with AutoAWQ and write the dense float32 folder ``out_dir``.

        ``base_dir`` resolves a relative ``calibration.dataset``.
        """
        import torch
        from transformers import AutoTokenizer

        from pytest_quant.backends.calibration import calibration_windows, corpus_fingerprint
        from pytest_quant.backends.models import quantization_method, validate_scheme_fits

        _validate_method(scheme)
        model_dir, out_dir = Path(model_dir), Path(out_dir)
        if quantization_method(model_dir) is not None:
            raise QuantConfigError(
                f"{model_dir} is already quantized ({quantization_method(model_dir)}); AWQ needs a dense model"
            )
        validate_scheme_fits(scheme, model_dir)
        with warnings.catch_warnings(record=True):
            # AutoAWQ announces its deprecation on import (the reason it is an optional backend) and
            # sets a global warnings filter; recording drops both
            import awq
            from awq import AutoAWQForCausalLM

        w, calib = scheme.weights, scheme.calibration
        assert w is not None and calib is not None and w.group_size is not None
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        windows = calibration_windows(tokenizer, calib, base_dir=base_dir)
        _seed_everything(calib.seed)
        cuda = torch.cuda.is_available()
        # AutoAWQ quantizes in float16 on a GPU; on CPU the searches run in float32 (its packing is float16 either way)
        dtype = torch.float16 if cuda else torch.float32
        awq_model = AutoAWQForCausalLM.from_pretrained(
            str(model_dir), torch_dtype=dtype, device_map=None, trust_remote_code=False, safetensors=True
        )
        keys = _modules_to_not_convert(awq_model, scheme)
        # a model class's own list (e.g. an MoE router) stays; ours is added to it
        keys = sorted(set(keys) | set(getattr(type(awq_model), "modules_to_not_convert", None) or ()))
        awq_model.modules_to_not_convert = keys  # AutoAWQ lets this attribute override the quant_config's list
        quant_config = {"zero_point": True, "q_group_size": w.group_size, "w_bit": BITS, "version": "GEMM"}
        with _cpu_scale_search_fix():
            awq_model.quantize(
                tokenizer,
                quant_config=quant_config,
                calib_data=windows,  # token ids, one window of seq_len per sample: AutoAWQ keeps them as they are
                max_calib_samples=calib.samples,
                max_calib_seq_len=calib.seq_len,
                n_parallel_calib_samples=None,
                duo_scaling=DUO_SCALING,
                apply_clip=APPLY_CLIP,
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        packed_dir = out_dir / ".autoawq-packed"  # inside the build folder: the cache removes it on failure
        awq_model.save_quantized(str(packed_dir))
        del awq_model
        gc.collect()

        model, packed = _save_dense(model_dir, out_dir, packed_dir, w.group_size, tokenizer)
        quantized = sorted(packed["layers"])
        linears = sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
        record = {
            "backend": self.name,
            "autoawq_version": awq.__version__,
            "scheme": scheme.fingerprint_payload(),
            "describe": scheme.describe(),
            "calibration_corpus": corpus_fingerprint(calib, base_dir=base_dir),
            "source_model": str(model_dir),
            "device": "cuda" if cuda else "cpu",
            "dtype": "float32",
            "autoawq": {
                **quant_config,
                "modules_to_not_convert": keys,
                "duo_scaling": DUO_SCALING,
                "apply_clip": APPLY_CLIP,
                "calibration_windows": len(windows),
                "cpu_scale_search_fix": not cuda,  # see _cpu_scale_search_fix
            },
            "quantized_layers": quantized,
            "ignored_layers": [n for n in linears if n not in packed["layers"]],
            "awq_checkpoint": packed,
        }
        write_scheme_record(out_dir, record)
