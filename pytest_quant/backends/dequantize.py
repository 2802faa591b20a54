"""Published GPTQ and AWQ checkpoints as dense float folders, for machines without their kernels.

Engine layer. transformers 5 loads GPTQ and AWQ checkpoints only through the ``gptqmodel``
library, whose kernels want a GPU. Where it cannot run (a CPU device, or the library is not
installed), :func:`dequantize_checkpoint` writes the checkpoint's weights as a plain dense
folder, by the format's own arithmetic and nothing else, so the model evaluated is exactly the
published one:

========== =====================================================================================
``gptq``   AutoGPTQ / GPTQModel: ``qweight`` int32 [in·bits/32, out] (codes along the inputs),
           ``qzeros`` int32 [groups, out·bits/32], ``scales`` [groups, out], ``g_idx`` int32 [in];
           values packed least significant bits first as one bit stream (3-bit codes cross word
           boundaries: AutoGPTQ's pack loop). ``W[o, i] = scales[g, o] · (q[i, o] − z[g, o])``
           with ``g = g_idx[i]`` (``i // group_size`` without ``g_idx``; one group for
           ``group_size: -1``); ``checkpoint_format`` ``gptq`` (v1) stores ``z − 1``, so
           ``z = stored + 1`` (unmasked, as the kernels read it: the doctor flags a stored
           2^bits−1); ``gptq_v2`` stores ``z``. ``desc_act`` checkpoints differ only in ``g_idx``.
``awq``    AutoAWQ GEMM (``version: gemm``): ``qweight`` int32 [in, out/8], ``qzeros`` [groups,
           out/8], ``scales`` [groups, out], 4-bit codes in AutoAWQ's interleaved order
           (:func:`pytest_quant.backends.quantize.autoawq.dequantize_awq_gemm`).
========== =====================================================================================

The products are exact in float32 (a code difference of at most 9 bits times a 16-bit scale)
and stored in float32; every other tensor is copied as stored, and the config's dtype is kept
(a GPU evaluation loads the folder in it, as the checkpoint would run). The folder records in
:data:`RECORD` what it was made from (path, fingerprint, the quantization), the dequantizer's
:data:`FORMAT`, and that pytest-quant dequantized it; a folder of another :data:`FORMAT` is
made again (the format is also part of its cache key).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_quant.errors import QuantConfigError

__all__ = [
    "FORMAT",
    "RECORD",
    "PackedFormat",
    "dequantize_checkpoint",
    "dequantize_gptq",
    "is_dequantized",
    "packed_format",
    "unpack_bits",
]

# The dequantizer's rules; bump when it writes different weights or files for the same checkpoint.
FORMAT = "pytest-quant-dequantized/1"
RECORD = "pytest_quant_dequantized.json"
INDEX = "model.safetensors.index.json"
_PACKED = ("qweight", "qzeros", "scales", "g_idx")
# checkpoint files not copied into the dense folder: weights (rewritten) and the packed format's own configs
_NOT_COPIED = ("quantize_config.json", "quant_config.json", INDEX)


@dataclass(frozen=True)
class PackedFormat:
    """A GPTQ or AWQ checkpoint's quantization, as its config states it."""

    method: str  # "gptq" | "awq"
    bits: int
    group_size: int  # -1: one group per output channel
    symmetric: bool
    version: str  # gptq: "v1" | "v2"; awq: "gemm" (or another AWQ version, which is not dequantized here)
    desc_act: bool = False

    def describe(self) -> str:
        """``gptq v1 4-bit g128``, ``gptq v2 3-bit per-channel asym desc_act``, ``awq gemm 4-bit g64``."""
        group = f"g{self.group_size}" if self.group_size > 0 else "per-channel"
        text = f"{self.method} {self.version} {self.bits}-bit {group}"
        if self.method == "gptq":
            text += (" sym" if self.symmetric else " asym") + (" desc_act" if self.desc_act else "")
        return text


def packed_format(config: dict[str, Any], source: str) -> PackedFormat | None:
    """The GPTQ / AWQ quantization of a checkpoint's ``config`` (config.json as a dict), or None for any
    other. Raises :class:`QuantConfigError` naming ``source`` and the field for a value the format
    cannot have."""
    qc = config.get("quantization_config")
    if not isinstance(qc, dict):
        return None
    method = str(qc.get("quant_method", "")).lower()
    if method not in ("gptq", "awq"):
        return None
    bits_key = "bits" if "bits" in qc or method == "gptq" else "w_bit"
    group_key = "group_size" if "group_size" in qc or method == "gptq" else "q_group_size"
    bits, group = qc.get(bits_key), qc.get(group_key, -1)
    allowed = (2, 3, 4, 8) if method == "gptq" else (4,)
    if not isinstance(bits, int) or isinstance(bits, bool) or bits not in allowed:
        raise QuantConfigError(
            f"{method.upper()} checkpoints pack {', '.join(map(str, allowed))} bits; got {bits!r}",
            source=source,
            field=f"quantization_config.{bits_key}",
        )
    if isinstance(group, bool) or not isinstance(group, int) or group == 0 or group < -1:
        raise QuantConfigError(
            f"expected -1 (per channel) or a positive group size, got {group!r}",
            source=source,
            field=f"quantization_config.{group_key}",
        )
    if method == "gptq":
        fmt = str(qc.get("checkpoint_format") or qc.get("format") or "gptq").lower()
        if fmt not in ("gptq", "gptq_v2"):
            raise QuantConfigError(
                f"pytest-quant reads GPTQ's 'gptq' (v1) and 'gptq_v2' layouts, not {fmt!r}",
                source=source,
                field="quantization_config.checkpoint_format",
            )
        return PackedFormat(
            "gptq", bits, group, bool(qc.get("sym", True)), "v1" if fmt == "gptq" else "v2", bool(qc.get("desc_act"))
        )
    version = str(qc.get("version") or "gemm").lower()
    return PackedFormat("awq", bits, group, not bool(qc.get("zero_point", True)), version)


# --------------------------------------------------------------------------- arithmetic
def unpack_bits(words: Any, bits: int, count: int, dim: int = -1) -> Any:
    """The first ``count`` unsigned ``bits``-bit values packed into the int32 ``words`` along ``dim``,
    least significant bits first as one bit stream (GPTQ's ``qweight`` along dim 0 and ``qzeros``
    along dim 1; the same stream as :func:`pytest_quant.backends.doctor.unpack_int32`). int64 result."""
    import torch

    w = torch.movedim(words.to(torch.int64) & 0xFFFFFFFF, dim, -1)
    if count * bits > w.shape[-1] * 32:
        raise ValueError(f"{w.shape[-1]} int32 words hold fewer than {count} {bits}-bit values")
    w = torch.cat([w, torch.zeros_like(w[..., :1])], dim=-1)  # the word after the last one, for crossings
    offsets = torch.arange(count, dtype=torch.int64, device=w.device) * bits
    index, shift = offsets // 32, offsets % 32
    values = ((w[..., index] >> shift) | (w[..., index + 1] << (32 - shift))) & ((1 << bits) - 1)
    return torch.movedim(values, -1, dim)


def dequantize_gptq(
    qweight: Any, qzeros: Any, scales: Any, g_idx: Any | None, *, bits: int, group_size: int, v1: bool
) -> Any:
    """The dense float32 weight ``[out, in]`` of one GPTQ ``Linear`` (see the module docstring)."""
    import torch

    out_features = int(scales.shape[1])
    in_features = int(g_idx.shape[0]) if g_idx is not None else int(qweight.shape[0]) * 32 // bits
    groups = int(scales.shape[0])
    q = unpack_bits(qweight, bits, in_features, dim=0)  # [in, out]
    z = unpack_bits(qzeros, bits, out_features, dim=1)  # [groups, out]
    if q.shape[1] != out_features or z.shape[0] != groups:
        raise ValueError(
            f"GPTQ tensors do not fit together: qweight {tuple(qweight.shape)}, qzeros {tuple(qzeros.shape)}, "
            f"scales {tuple(scales.shape)}"
        )
    if v1:
        z = z + 1
    if g_idx is not None:
        g = g_idx.to(torch.int64)
    else:
        g = torch.arange(in_features, dtype=torch.int64) // (group_size if group_size > 0 else in_features)
    if g.numel() and (int(g.min()) < 0 or int(g.max()) >= groups):
        raise ValueError(f"g_idx holds groups outside [0, {groups}): {int(g.min())} .. {int(g.max())}")
    return ((q - z[g]).to(torch.float32) * scales.to(torch.float32)[g]).t().contiguous()


def _dense_weight(module: str, fmt: PackedFormat, tensors: dict[str, Any]) -> Any:
    if fmt.method == "gptq":
        return dequantize_gptq(
            tensors["qweight"],
            tensors["qzeros"],
            tensors["scales"],
            tensors.get("g_idx"),
            bits=fmt.bits,
            group_size=fmt.group_size,
            v1=fmt.version == "v1",
        )
    from pytest_quant.backends.quantize.autoawq import dequantize_awq_gemm

    in_features = int(tensors["qweight"].shape[0])
    group = fmt.group_size if fmt.group_size > 0 else in_features
    return dequantize_awq_gemm(tensors["qweight"], tensors["qzeros"], tensors["scales"], group, fmt.bits)


# --------------------------------------------------------------------------- folders
def _tensor_files(folder: Path) -> dict[str, Path]:
    """Every tensor's safetensors file (through the index when there is one)."""
    from safetensors import SafetensorError, safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise QuantConfigError(
            "pytest-quant dequantizes safetensors checkpoints only; this one has none", source=str(folder)
        )
    where: dict[str, Path] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as handle:
                for name in handle.keys():
                    where[name] = path
        except (SafetensorError, OSError) as exc:
            raise QuantConfigError(f"weights file is truncated or corrupt ({exc})", source=str(path)) from None
    return where


def dequantize_checkpoint(source: Path, out_dir: Path, *, fingerprint: str = "") -> dict[str, Any]:
    """Write GPTQ / AWQ checkpoint ``source`` as a dense folder into ``out_dir`` and return its record.

    One output shard per input shard (so memory stays at one shard's tensors); a layer's packed
    tensors may sit in other shards. ``fingerprint`` (of ``source``) goes into the record. Raises
    :class:`QuantConfigError` naming the file and tensor when the checkpoint is not such a one or a
    layer's tensors are missing or do not fit together.
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    source, out_dir = Path(source), Path(out_dir)
    config_file = source / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise QuantConfigError(f"not a readable JSON config ({exc})", source=str(config_file)) from None
    fmt = packed_format(config, str(config_file))
    if fmt is None or (fmt.method == "awq" and fmt.version != "gemm"):
        what = fmt.describe() if fmt else repr((config.get("quantization_config") or {}).get("quant_method"))
        raise QuantConfigError(
            f"pytest-quant dequantizes GPTQ and AWQ GEMM checkpoints, not {what}",
            source=str(config_file),
            field="quantization_config",
        )
    where = _tensor_files(source)
    modules = sorted(name.removesuffix(".qweight") for name in where if name.endswith(".qweight"))
    if not modules:
        raise QuantConfigError(
            f"no packed layer (no '*.qweight' tensor) in a {fmt.method} checkpoint", source=str(source)
        )
    packed = {f"{m}.{p}" for m in modules for p in _PACKED}
    out_dir.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    total = 0
    with contextlib.ExitStack() as stack:
        handles = {p: stack.enter_context(safe_open(str(p), framework="pt")) for p in sorted(set(where.values()))}

        def read(name: str) -> Any:
            return handles[where[name]].get_tensor(name)

        for shard in sorted(handles):
            dense: dict[str, Any] = {}
            for name in sorted(n for n, p in where.items() if p == shard):
                if name in packed:
                    if not name.endswith(".qweight"):
                        continue
                    module = name.removesuffix(".qweight")
                    needed = ("qweight", "qzeros", "scales")
                    missing = [p for p in needed if f"{module}.{p}" not in where]
                    if missing:
                        raise QuantConfigError(
                            f"packed layer {module!r} has no {', '.join(missing)}", source=str(shard), field=name
                        )
                    parts = {p: read(f"{module}.{p}") for p in _PACKED if f"{module}.{p}" in where}
                    try:
                        dense[f"{module}.weight"] = _dense_weight(module, fmt, parts)
                    except ValueError as exc:
                        raise QuantConfigError(
                            f"cannot dequantize {module!r} as {fmt.describe()}: {exc}", source=str(shard), field=name
                        ) from None
                else:
                    dense[name] = read(name).contiguous()
            if not dense:
                continue
            for name, tensor in dense.items():
                weight_map[name] = shard.name
                total += tensor.numel() * tensor.element_size()
            save_file(dense, str(out_dir / shard.name), metadata={"format": "pt"})
            del dense
    shards = sorted(set(weight_map.values()))
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out_dir / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    for path in sorted(source.iterdir()):
        if (
            path.is_file()
            and path.suffix not in (".safetensors", ".bin", ".pt", ".pth")
            and path.name not in (*_NOT_COPIED, "config.json", RECORD)
        ):
            shutil.copy2(path, out_dir / path.name)
    dense_config = {k: v for k, v in config.items() if k != "quantization_config"}
    (out_dir / "config.json").write_text(json.dumps(dense_config, indent=2) + "\n", encoding="utf-8")
    record = {
        "format": FORMAT,
        "dequantized_by": "pytest-quant",
        "how": f"dequantized by pytest-quant from {fmt.describe()}",
        "quantization": fmt.describe(),
        "quantization_config": config["quantization_config"],
        "source": str(source),
        "source_fingerprint": fingerprint,
        "layers": len(modules),
        "torch": torch.__version__,
    }
    # Written last: its presence (with this FORMAT) marks a complete folder.
    (out_dir / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return record


def read_record(folder: Path) -> dict[str, Any]:
    """The dequantizer's record of ``folder``, or ``{}`` for any other folder."""
    try:
        data = json.loads((Path(folder) / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_dequantized(folder: Path) -> bool:
    """Whether ``folder`` is a complete dense folder made by this :data:`FORMAT` of the dequantizer."""
    return read_record(folder).get("format") == FORMAT
