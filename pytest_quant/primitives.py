"""Reference quantization math: pure functions on tensors and plain numbers.

Integer affine quantization (symmetric / asymmetric, 2..8 bits, per-tensor,
per-channel and per-group), int32 packing of sub-byte codes, and FP8 E4M3 / E5M2
encoding. The conventions follow compressed-tensors (what llm-compressor writes
and vLLM reads), so a checkpoint made by either can be checked against these
functions bit for bit:

* Symmetric codes are signed, ``[-2^(b-1), 2^(b-1) - 1]``, with
  ``scale = absmax / ((qmax - qmin) / 2)``, i.e. ``absmax / 7.5`` for 4 bits:
  the whole signed range is used, and ``+absmax`` saturates at ``qmax`` with an
  error of exactly half a step.
* Asymmetric codes and zero points are unsigned, ``[0, 2^b - 1]`` (the GPTQ / AWQ
  convention). compressed-tensors keeps them signed, shifted down by
  ``2^(b-1)``; the dequantized values are identical, and its packed int32 words
  (which add ``2^(b-1)`` back before packing) equal ours bit for bit.
  The arithmetic is done in that shifted domain so that float ties round the
  same way.
* Weights are ``[out_features, in_features]``; a channel is an output row and
  groups run along the input dimension.

Everything is computed in float32 whatever the input dtype. This module imports
torch at the top: nothing imports it eagerly (``pytest_quant/__init__`` must not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "FP8_FORMATS",
    "FP8Format",
    "compute_fp8_scale",
    "compute_qparams",
    "dequantize",
    "fake_quantize",
    "fp8_decode",
    "fp8_dequantize",
    "fp8_encode",
    "fp8_fake_quantize_weight",
    "fp8_format",
    "fp8_quantize",
    "int_range",
    "pack_int32",
    "packed_len",
    "quantize",
    "rtn_fake_quantize_weight",
    "unpack_int32",
]

MIN_BITS = 2
MAX_BITS = 8
# What a zero scale is replaced with (compressed-tensors uses the scale dtype's eps).
SCALE_EPS = torch.finfo(torch.float32).eps
# Integer codes and zero points: wide enough for every range above, never wraps.
CODE_DTYPE = torch.int32


# --------------------------------------------------------------------------- integer


def _validate_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an int in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")


def _validate_group_size(w: torch.Tensor, group_size: int | None) -> None:
    if group_size is None:
        return
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"group_size must be a positive int or None, got {group_size!r}")
    if w.ndim != 2:
        raise ValueError(f"per-group quantization needs a 2-D [out, in] weight, got shape {tuple(w.shape)}")
    if w.shape[1] % group_size != 0:
        raise ValueError(
            f"group_size {group_size} does not divide in_features {w.shape[1]} (weight shape {tuple(w.shape)})"
        )


def _validate_integer(name: str, t: torch.Tensor) -> None:
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {t.dtype}")


def int_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer code range ``(qmin, qmax)``.

    Symmetric: signed ``[-2^(b-1), 2^(b-1) - 1]`` (compressed-tensors, GPTQ "sym").
    Asymmetric: unsigned ``[0, 2^b - 1]`` (zero point carries the offset).
    """
    _validate_bits(bits)
    if symmetric:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _offset(bits: int, symmetric: bool) -> int:
    """Shift from the signed range (where the arithmetic happens) to our codes."""
    return int_range(bits, symmetric)[0] - int_range(bits, True)[0]


def _grouped(w: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """``[out, in]`` -> ``[out, in // g, g]`` for per-group, else ``w`` unchanged."""
    if group_size is None:
        return w
    return w.reshape(w.shape[0], w.shape[1] // group_size, group_size)


def _param_view(p: torch.Tensor, w: torch.Tensor, group_size: int | None, name: str) -> torch.Tensor:
    """Check a scale / zero point against ``w`` and shape it to broadcast against ``_grouped(w)``."""
    if group_size is not None:
        want = (w.shape[0], w.shape[1] // group_size)
        if tuple(p.shape) != want:
            raise ValueError(
                f"{name} has shape {tuple(p.shape)}; group_size {group_size} on weight "
                f"shape {tuple(w.shape)} needs {want}"
            )
        return p.unsqueeze(-1)
    if p.ndim > w.ndim or any(a not in (1, b) for a, b in zip(reversed(p.shape), reversed(w.shape), strict=False)):
        raise ValueError(f"{name} shape {tuple(p.shape)} does not broadcast to weight shape {tuple(w.shape)}")
    return p


def compute_qparams(
    w: torch.Tensor,
    bits: int,
    symmetric: bool,
    group_size: int | None = None,
    per_channel: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-to-nearest (min-max) scale and zero point for ``w``.

    Granularity: ``group_size`` (groups along the input dim of a 2-D weight) wins
    over ``per_channel`` (one per output row); otherwise per-tensor. Shapes are
    ``[out, in // g]``, ``[out, 1]`` or ``[1] * w.ndim``.

    The range always includes 0. Symmetric: ``scale = absmax / ((qmax - qmin) / 2)``,
    zero point 0. Asymmetric: ``scale = (max - min) / (2^b - 1)``, zero point
    ``round(-min / scale)`` inside ``[0, 2^b - 1]``. A zero scale becomes float32
    eps. Returns ``(scale float32, zero_point int32)``.
    """
    _validate_bits(bits)
    _validate_group_size(w, group_size)
    w = w.detach().to(torch.float32)
    if not bool(torch.isfinite(w).all()):
        raise ValueError("cannot compute quantization parameters of a weight with inf or NaN")
    if w.numel() == 0:
        raise ValueError(f"cannot compute quantization parameters of an empty weight {tuple(w.shape)}")
    if group_size is not None:
        wg = _grouped(w, group_size)
        lo, hi = wg.amin(dim=-1), wg.amax(dim=-1)
    elif per_channel:
        if w.ndim != 2:
            raise ValueError(f"per-channel quantization needs a 2-D [out, in] weight, got shape {tuple(w.shape)}")
        lo, hi = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    else:
        lo, hi = w.amin().reshape([1] * w.ndim), w.amax().reshape([1] * w.ndim)
    lo = torch.minimum(lo, torch.zeros_like(lo))
    hi = torch.maximum(hi, torch.zeros_like(hi))

    # Signed-domain range, as compressed-tensors computes it (same float ops).
    smin, smax = int_range(bits, True)
    span = torch.tensor(float(smax - smin))
    if symmetric:
        scale = torch.maximum(lo.abs(), hi) / (span / 2)
    else:
        scale = (hi - lo) / span
    scale = torch.where(scale == 0, SCALE_EPS, scale)
    if symmetric:
        zero_point = torch.zeros(scale.shape, dtype=CODE_DTYPE, device=scale.device)
    else:
        zp_signed = torch.round(torch.clamp(smin - lo / scale, smin, smax))
        zero_point = zp_signed.to(CODE_DTYPE) + _offset(bits, symmetric)
    return scale, zero_point


def quantize(
    w: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    bits: int,
    symmetric: bool,
    group_size: int | None = None,
) -> torch.Tensor:
    """Integer codes ``clamp(round(w / scale + zero_point), qmin, qmax)`` as int32.

    Rounds half to even (``torch.round``) and saturates at both ends of
    ``int_range(bits, symmetric)``. ``zero_point=None`` means 0 (symmetric only).
    """
    _validate_bits(bits)
    _validate_group_size(w, group_size)
    if zero_point is None:
        if not symmetric:
            raise ValueError("asymmetric quantization needs a zero_point")
        zero_point = torch.zeros(scale.shape, dtype=CODE_DTYPE, device=scale.device)
    _validate_integer("zero_point", zero_point)
    offset = _offset(bits, symmetric)
    smin, smax = int_range(bits, True)
    x = _grouped(w.detach().to(torch.float32), group_size)
    s = _param_view(scale.to(torch.float32), w, group_size, "scale")
    z = _param_view(zero_point, w, group_size, "zero_point")
    scaled = x / s + (z.to(CODE_DTYPE) - offset).to(torch.float32)
    q = torch.round(torch.clamp(scaled, smin, smax)).to(CODE_DTYPE) + offset
    return q.reshape(w.shape)


def dequantize(
    q: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    group_size: int | None = None,
) -> torch.Tensor:
    """Float32 values ``(q - zero_point) * scale``."""
    _validate_group_size(q, group_size)
    _validate_integer("q", q)
    if zero_point is None:
        zero_point = torch.zeros(scale.shape, dtype=CODE_DTYPE, device=scale.device)
    _validate_integer("zero_point", zero_point)
    x = _grouped(q.to(CODE_DTYPE), group_size)
    s = _param_view(scale.to(torch.float32), q, group_size, "scale")
    z = _param_view(zero_point, q, group_size, "zero_point")
    return ((x - z.to(CODE_DTYPE)).to(torch.float32) * s).reshape(q.shape)


def fake_quantize(
    w: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    bits: int,
    symmetric: bool,
    group_size: int | None = None,
) -> torch.Tensor:
    """``dequantize(quantize(w, ...))``: float32, same shape as ``w``."""
    q = quantize(w, scale, zero_point, bits, symmetric, group_size)
    return dequantize(q, scale, zero_point, group_size)


def rtn_fake_quantize_weight(
    weight: torch.Tensor,
    bits: int,
    symmetric: bool,
    group_size: int | None = None,
    per_channel: bool = True,
) -> torch.Tensor:
    """Round-to-nearest reference for one Linear weight: quantized then dequantized.

    Returns a tensor with ``weight``'s shape, dtype and device, to be materialized
    once in place of the weight (no per-forward cost).
    """
    scale, zero_point = compute_qparams(weight, bits, symmetric, group_size, per_channel)
    dq = fake_quantize(weight, scale, zero_point, bits, symmetric, group_size)
    return dq.to(dtype=weight.dtype, device=weight.device)


# --------------------------------------------------------------------------- packing


def packed_len(n: int, bits: int) -> int:
    """Number of int32 words holding ``n`` codes of ``bits`` bits."""
    return math.ceil(n * bits / 32)


def _validate_pack_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"packing supports bits in [1, 8], got {bits!r}")


def pack_int32(q: torch.Tensor, bits: int, *, signed: bool = True, dim: int = -1) -> torch.Tensor:
    """Pack integer codes densely into int32 words along ``dim``.

    compressed-tensors' ``pack-quantized`` layout: codes are made unsigned
    (``signed=True`` adds ``2^(b-1)``; ``signed=False`` expects ``[0, 2^b - 1]``,
    e.g. asymmetric codes and zero points), then code ``i`` of a row occupies bits
    ``i*b .. i*b+b-1`` of the row's little-endian bit stream, crossing word
    boundaries for 3, 5, 6 and 7 bits. ``n`` codes give ``packed_len(n, bits)`` words.
    Zero points are packed along ``dim=0``.
    """
    _validate_pack_bits(bits)
    _validate_integer("codes to pack", q)
    offset = 1 << (bits - 1) if signed else 0
    u = q.to(torch.int64).movedim(dim, -1) + offset
    if u.numel() and (int(u.min()) < 0 or int(u.max()) >= 1 << bits):
        lo, hi = -offset, (1 << bits) - 1 - offset
        raise ValueError(
            f"codes outside the {'signed' if signed else 'unsigned'} {bits}-bit range "
            f"[{lo}, {hi}]: min {int(u.min()) - offset}, max {int(u.max()) - offset}"
        )
    n = u.shape[-1]
    chunks = math.ceil(n / 32)
    u = torch.nn.functional.pad(u, (0, chunks * 32 - n)).reshape(*u.shape[:-1], chunks, 32)
    # 32 codes of b bits fill exactly b words.
    words = torch.zeros(*u.shape[:-1], bits, dtype=torch.int64, device=u.device)
    for i in range(32):
        word, shift = divmod(i * bits, 32)
        words[..., word] |= (u[..., i] << shift) & 0xFFFFFFFF
        if shift + bits > 32:
            words[..., word + 1] |= u[..., i] >> (32 - shift)
    words = words.reshape(*u.shape[:-2], chunks * bits)[..., : packed_len(n, bits)]
    words = torch.where(words >= 1 << 31, words - (1 << 32), words)  # as two's complement
    return words.to(torch.int32).movedim(-1, dim)


def unpack_int32(
    packed: torch.Tensor, bits: int, original_len: int, *, signed: bool = True, dim: int = -1
) -> torch.Tensor:
    """Inverse of ``pack_int32``: int32 codes, ``original_len`` of them along ``dim``."""
    _validate_pack_bits(bits)
    if packed.dtype != torch.int32:
        raise ValueError(f"unpack_int32 needs int32 words, got dtype {packed.dtype}")
    words = packed.to(torch.int64).movedim(dim, -1) & 0xFFFFFFFF
    want = packed_len(original_len, bits)
    if words.shape[-1] != want:
        raise ValueError(
            f"{original_len} codes of {bits} bits pack into {want} words, but the packed dim has {words.shape[-1]}"
        )
    chunks = math.ceil(original_len / 32)
    words = torch.nn.functional.pad(words, (0, chunks * bits - want))
    words = words.reshape(*words.shape[:-1], chunks, bits)
    mask = (1 << bits) - 1
    u = torch.zeros(*words.shape[:-1], 32, dtype=torch.int64, device=words.device)
    for i in range(32):
        word, shift = divmod(i * bits, 32)
        v = words[..., word] >> shift
        if shift + bits > 32:
            v = v | (words[..., word + 1] << (32 - shift))
        u[..., i] = v & mask
    u = u.reshape(*u.shape[:-2], chunks * 32)[..., :original_len]
    offset = 1 << (bits - 1) if signed else 0
    return (u - offset).to(CODE_DTYPE).movedim(-1, dim)


# --------------------------------------------------------------------------- FP8


@dataclass(frozen=True)
class FP8Format:
    """Bit layout of an 8-bit float: 1 sign, ``exponent_bits``, ``mantissa_bits``."""

    name: str
    exponent_bits: int
    mantissa_bits: int
    bias: int
    max: float  # largest finite value
    has_inf: bool  # E5M2: IEEE-like inf/NaN; E4M3 "fn": no inf, NaN only at S.1111.111

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (1 - self.bias - self.mantissa_bits)


FP8_FORMATS: dict[str, FP8Format] = {
    "e4m3": FP8Format("e4m3", 4, 3, 7, 448.0, has_inf=False),
    "e5m2": FP8Format("e5m2", 5, 2, 15, 57344.0, has_inf=True),
}


def fp8_format(fmt: str) -> FP8Format:
    """The ``FP8Format`` named ``"e4m3"`` (OCP E4M3FN) or ``"e5m2"``."""
    try:
        return FP8_FORMATS[fmt]
    except (KeyError, TypeError):
        raise ValueError(f"unknown FP8 format {fmt!r}; expected one of {sorted(FP8_FORMATS)}") from None


def fp8_encode(x: torch.Tensor, fmt: str = "e4m3") -> torch.Tensor:
    """float -> uint8 FP8 codes, round to nearest even, saturating.

    Values beyond the finite max (infinities included) become ``±max``; NaN becomes
    the format's NaN code (``0x7F``, sign kept). Subnormals are encoded exactly.
    """
    f = fp8_format(fmt)
    m_bits = f.mantissa_bits
    x = x.detach().to(torch.float32)
    sign = torch.signbit(x).to(torch.int32) << 7
    a = torch.clamp(x.abs(), max=f.max)  # NaN stays NaN
    nan = torch.isnan(a)
    a = torch.where(nan, torch.zeros_like(a), a)
    # a = 2^e * (1 + frac) for normals; exponent clamped at the subnormal one.
    _, exp = torch.frexp(a)
    e = torch.where(a > 0, exp - 1, torch.full_like(exp, 1 - f.bias))
    e = torch.clamp(e, min=1 - f.bias)
    # a / 2^e * 2^m is exact; rounding it gives the implicit bit plus mantissa
    # (carrying into the exponent field when it rounds up to 2^(m+1)).
    mant = torch.round(torch.ldexp(a, (m_bits - e).to(torch.float32))).to(torch.int32)
    code = ((e + f.bias - 1) << m_bits) + mant
    code = torch.where(nan, torch.full_like(code, 0x7F), code)
    return (code | sign).to(torch.uint8)


def fp8_decode(codes: torch.Tensor, fmt: str = "e4m3") -> torch.Tensor:
    """uint8 FP8 codes -> float32 (NaN, and for E5M2 ±inf, where the format has them)."""
    f = fp8_format(fmt)
    if codes.dtype != torch.uint8:
        raise ValueError(f"fp8_decode needs uint8 codes, got dtype {codes.dtype}")
    c = codes.to(torch.int32)
    m_bits, e_mask = f.mantissa_bits, (1 << f.exponent_bits) - 1
    exp = (c >> m_bits) & e_mask
    mant = c & ((1 << m_bits) - 1)
    normal = exp > 0
    significand = torch.where(normal, mant + (1 << m_bits), mant).to(torch.float32)
    power = torch.where(normal, exp, torch.ones_like(exp)) - f.bias - m_bits
    val = torch.ldexp(significand, power.to(torch.float32))
    if f.has_inf:
        special = exp == e_mask
        val = torch.where(special & (mant == 0), math.inf, val)
        val = torch.where(special & (mant != 0), math.nan, val)
    else:
        val = torch.where((c & 0x7F) == 0x7F, math.nan, val)
    return torch.where((c & 0x80) != 0, -val, val)


def compute_fp8_scale(w: torch.Tensor, fmt: str = "e4m3", per_channel: bool = False) -> torch.Tensor:
    """``absmax / fp8_max`` per tensor (shape ``[1] * ndim``) or per output row (``[out, 1]``).

    A zero scale becomes float32 eps.
    """
    f = fp8_format(fmt)
    w = w.detach().to(torch.float32)
    if not bool(torch.isfinite(w).all()):
        raise ValueError("cannot compute an FP8 scale of a weight with inf or NaN")
    if per_channel:
        if w.ndim != 2:
            raise ValueError(f"per-channel FP8 needs a 2-D [out, in] weight, got shape {tuple(w.shape)}")
        absmax = w.abs().amax(dim=1, keepdim=True)
    else:
        absmax = w.abs().amax().reshape([1] * w.ndim)
    scale = absmax / torch.tensor(f.max)
    return torch.where(scale == 0, SCALE_EPS, scale)


def fp8_quantize(w: torch.Tensor, scale: torch.Tensor, fmt: str = "e4m3") -> torch.Tensor:
    """uint8 FP8 codes of ``w / scale``, saturated to the finite range."""
    _param_view(scale, w, None, "scale")
    return fp8_encode(w.detach().to(torch.float32) / scale.to(torch.float32), fmt)


def fp8_dequantize(codes: torch.Tensor, scale: torch.Tensor, fmt: str = "e4m3") -> torch.Tensor:
    """Float32 ``decode(codes) * scale``."""
    _param_view(scale, codes, None, "scale")
    return fp8_decode(codes, fmt) * scale.to(torch.float32)


def fp8_fake_quantize_weight(weight: torch.Tensor, fmt: str = "e4m3", per_channel: bool = True) -> torch.Tensor:
    """Scaled FP8 round trip of one weight; same shape, dtype and device as ``weight``."""
    scale = compute_fp8_scale(weight, fmt, per_channel)
    dq = fp8_dequantize(fp8_quantize(weight, scale, fmt), scale, fmt)
    return dq.to(dtype=weight.dtype, device=weight.device)
