"""Hypothesis strategies for testing quantization kernels against ``pytest_quant.primitives``.

    import torch
    from hypothesis import given
    from pytest_quant import primitives as P
    from pytest_quant.strategies import weights_and_args

    @given(weights_and_args(bits=[4], symmetric=[True]))
    def test_my_w4_kernel(case):
        w, args = case
        assert torch.equal(my_kernel(w, *args), P.rtn_fake_quantize_weight(w, *args))

Weights are small 2-D float32 ``[out, in]`` tensors (the shrunk counterexample is
readable). Arguments are checked when a strategy is built, so a bad combination
fails at collection with the values named, not halfway through a run.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pytest_quant import primitives as P

__all__ = [
    "QuantArgs",
    "fp8_codes",
    "fp8_values",
    "int_codes",
    "quant_args",
    "weight_shapes",
    "weights",
    "weights_and_args",
]

DEFAULT_GROUP_SIZES: tuple[int | None, ...] = (None, 4, 8, 16)
MAX_OUT = 8
MAX_GROUPS = 4
MAX_IN = 32
# Exact float32 powers of two, so scales stay normal floats: absmax / 127.5 >= 2^-23.
DEFAULT_MIN_ABS = 2.0**-16
DEFAULT_MAX_ABS = 2.0**8
OUTLIER_FACTORS = (8.0, 64.0, 1000.0)
FLOAT32_MAX = float(np.finfo(np.float32).max)


class QuantArgs(NamedTuple):
    """``(bits, symmetric, group_size)``, in the order the primitives take them."""

    bits: int
    symmetric: bool
    group_size: int | None


# --------------------------------------------------------------------------- validation


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate_group_size(group_size: int | None) -> None:
    if group_size is not None and (not _is_int(group_size) or group_size <= 0):
        raise ValueError(f"group_size must be a positive int or None, got {group_size!r}")


def _validate_shape(shape: tuple[int, int], group_size: int | None) -> tuple[int, int]:
    if not isinstance(shape, (tuple, list)) or len(shape) != 2 or not all(_is_int(d) and d > 0 for d in shape):
        raise ValueError(f"shape must be a 2-D (out, in) tuple of positive ints, got {shape!r}")
    _validate_group_size(group_size)
    if group_size is not None and shape[1] % group_size != 0:
        raise ValueError(f"shape {tuple(shape)}: in_features {shape[1]} is not divisible by group_size {group_size}")
    return (shape[0], shape[1])


def _choices(name: str, values: object, check) -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        values = [values]
    values = list(values)
    if not values:
        raise ValueError(f"{name} must not be empty")
    for v in values:
        check(v)
    return values


def _validate_bits(bits: object) -> None:
    if not _is_int(bits) or not P.MIN_BITS <= bits <= P.MAX_BITS:  # type: ignore[operator]
        raise ValueError(f"bits must be ints in [{P.MIN_BITS}, {P.MAX_BITS}], got {bits!r}")


def _validate_bool(v: object) -> None:
    if not isinstance(v, bool):
        raise ValueError(f"symmetric must be True or False, got {v!r}")


def _f32_inward(lo: float, hi: float) -> tuple[float, float]:
    """Nearest float32 values inside ``[lo, hi]`` (Hypothesis needs exact bounds)."""
    lo32, hi32 = np.float32(lo), np.float32(hi)
    if lo32 < lo:
        lo32 = np.nextafter(lo32, np.float32(np.inf))
    if hi32 > hi:
        hi32 = np.nextafter(hi32, np.float32(-np.inf))
    return float(lo32), float(hi32)


def _flag(value: bool | None) -> st.SearchStrategy[bool]:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"expected True, False or None (let Hypothesis choose), got {value!r}")
    return st.booleans() if value is None else st.just(value)


# --------------------------------------------------------------------------- shapes and args


def weight_shapes(
    group_size: int | None = None,
    *,
    max_out: int = MAX_OUT,
    max_in: int = MAX_IN,
) -> st.SearchStrategy[tuple[int, int]]:
    """``(out, in)`` shapes with ``in`` a multiple of ``group_size`` (when given)."""
    _validate_group_size(group_size)
    for name, v in (("max_out", max_out), ("max_in", max_in)):
        if not _is_int(v) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if group_size is None:
        ins = st.integers(1, max_in)
    else:
        max_groups = max(1, min(MAX_GROUPS, max_in // group_size))
        ins = st.integers(1, max_groups).map(lambda k: k * group_size)
    return st.tuples(st.integers(1, max_out), ins)


def quant_args(
    *,
    bits: int | Iterable[int] = range(P.MIN_BITS, P.MAX_BITS + 1),
    symmetric: bool | Iterable[bool] = (True, False),
    group_sizes: Iterable[int | None] = DEFAULT_GROUP_SIZES,
) -> st.SearchStrategy[QuantArgs]:
    """``QuantArgs`` drawn from the allowed values (``None`` group size: per-channel)."""
    bits_ = _choices("bits", bits, _validate_bits)
    sym_ = _choices("symmetric", symmetric, _validate_bool)
    groups_ = _choices("group_sizes", group_sizes, _validate_group_size)
    return st.builds(QuantArgs, st.sampled_from(bits_), st.sampled_from(sym_), st.sampled_from(groups_))


# --------------------------------------------------------------------------- weights


@st.composite
def _weights(
    draw,
    shape: tuple[int, int] | None,
    group_size: int | None,
    min_abs: float,
    max_abs: float,
    outliers: st.SearchStrategy[bool],
    zeros: st.SearchStrategy[bool],
    constant_rows: st.SearchStrategy[bool],
) -> torch.Tensor:
    if shape is None:
        shape = draw(weight_shapes(group_size))
    magnitude = st.floats(min_abs, max_abs, width=32)
    if draw(st.booleans(), label="gaussian"):
        # Realistic weights: a normal sample (seeded, so it replays and shrinks).
        seed = draw(st.integers(0, 2**32 - 1), label="seed")
        std = draw(magnitude, label="std")
        a = (np.random.default_rng(seed).standard_normal(shape) * std).astype(np.float32)
    else:
        # Hypothesis' own arrays: few distinct values, ties, repeats and extremes.
        a = draw(hnp.arrays(np.float32, shape, elements=st.floats(-max_abs, max_abs, width=32)))
    a = np.clip(a, -max_abs, max_abs)
    a[np.abs(a) < min_abs] = 0.0
    cells = st.tuples(st.integers(0, shape[0] - 1), st.integers(0, shape[1] - 1))
    if draw(outliers, label="outliers"):
        for r, c in draw(st.lists(cells, min_size=1, max_size=3)):
            big = min(max_abs * draw(st.sampled_from(OUTLIER_FACTORS)), FLOAT32_MAX)
            a[r, c] = np.float32(big if draw(st.booleans()) else -big)
    if draw(zeros, label="zeros"):
        for r, c in draw(st.lists(cells, min_size=1, max_size=max(1, a.size // 2))):
            a[r, c] = 0.0
    if draw(constant_rows, label="constant_rows"):
        for r in draw(st.lists(st.integers(0, shape[0] - 1), min_size=1, max_size=shape[0])):
            a[r, :] = draw(st.one_of(st.just(0.0), magnitude, magnitude.map(lambda v: -v)))
    return torch.from_numpy(a)


def weights(
    shape: tuple[int, int] | None = None,
    *,
    group_size: int | None = None,
    outliers: bool | None = None,
    zeros: bool | None = None,
    constant_rows: bool | None = None,
    min_abs: float = DEFAULT_MIN_ABS,
    max_abs: float = DEFAULT_MAX_ABS,
) -> st.SearchStrategy[torch.Tensor]:
    """Float32 ``[out, in]`` weights; ``shape`` fixed or drawn (``in`` divisible by ``group_size``).

    Half are seeded normal samples (realistic), half Hypothesis arrays (few
    distinct values: ties, repeats, extremes). Elements are 0 or have magnitude
    in ``[min_abs, max_abs]``. ``outliers`` adds 1-3 entries 8-1000x ``max_abs``;
    ``zeros`` sprinkles exact zeros; ``constant_rows`` makes whole rows one value
    (0 included). ``None`` lets Hypothesis choose.
    """
    if shape is not None:
        shape = _validate_shape(shape, group_size)
    else:
        _validate_group_size(group_size)
    if not (0 < min_abs <= max_abs < math.inf):
        raise ValueError(f"need 0 < min_abs <= max_abs < inf, got min_abs={min_abs!r}, max_abs={max_abs!r}")
    lo, hi = _f32_inward(min_abs, max_abs)
    if lo > hi:
        raise ValueError(f"no float32 value lies in [min_abs={min_abs!r}, max_abs={max_abs!r}]")
    return _weights(shape, group_size, lo, hi, _flag(outliers), _flag(zeros), _flag(constant_rows))


def weights_and_args(
    *,
    bits: int | Iterable[int] = range(P.MIN_BITS, P.MAX_BITS + 1),
    symmetric: bool | Iterable[bool] = (True, False),
    group_sizes: Iterable[int | None] = DEFAULT_GROUP_SIZES,
    outliers: bool | None = None,
    zeros: bool | None = None,
    constant_rows: bool | None = None,
) -> st.SearchStrategy[tuple[torch.Tensor, QuantArgs]]:
    """``(weight, QuantArgs)`` pairs whose shapes always fit the group size."""
    args = quant_args(bits=bits, symmetric=symmetric, group_sizes=group_sizes)
    for flag in (outliers, zeros, constant_rows):
        _flag(flag)  # validate now, not at draw time
    return args.flatmap(
        lambda a: st.tuples(
            weights(group_size=a.group_size, outliers=outliers, zeros=zeros, constant_rows=constant_rows),
            st.just(a),
        )
    )


def int_codes(
    shape: tuple[int, int] | None = None,
    *,
    bits: int,
    symmetric: bool,
) -> st.SearchStrategy[torch.Tensor]:
    """Int32 code tensors inside ``int_range(bits, symmetric)``, ends included."""
    _validate_bits(bits)
    _validate_bool(symmetric)
    if shape is not None:
        shape = _validate_shape(shape, None)
    qmin, qmax = P.int_range(bits, symmetric)
    shapes = st.just(shape) if shape is not None else weight_shapes()
    return shapes.flatmap(lambda s: hnp.arrays(np.int32, s, elements=st.integers(qmin, qmax)).map(torch.from_numpy))


# --------------------------------------------------------------------------- FP8


@functools.cache
def _fp8_finite(fmt: str) -> tuple[float, ...]:
    """Every finite value of the format, sorted (±0 collapse to one 0)."""
    vals = P.fp8_decode(torch.arange(256, dtype=torch.uint8), fmt)
    return tuple(torch.unique(vals[torch.isfinite(vals)]).tolist())


def fp8_codes(fmt: str = "e4m3", *, finite: bool = True) -> st.SearchStrategy[int]:
    """FP8 codes 0..255 as ints; with ``finite`` only those of finite values."""
    P.fp8_format(fmt)
    codes = torch.arange(256, dtype=torch.uint8)
    if finite:
        codes = codes[torch.isfinite(P.fp8_decode(codes, fmt))]
    return st.sampled_from(codes.tolist())


def fp8_values(
    fmt: str = "e4m3",
    shape: tuple[int, ...] | None = None,
) -> st.SearchStrategy[torch.Tensor]:
    """Float32 tensors inside the format's finite range, rich in hard cases.

    Elements mix arbitrary floats, exact FP8 values and the midpoints between
    neighbours (where round-to-nearest-even decides), subnormals included.
    """
    f = P.fp8_format(fmt)
    if shape is not None and not (isinstance(shape, tuple) and all(_is_int(d) and d >= 0 for d in shape)):
        raise ValueError(f"shape must be a tuple of non-negative ints, got {shape!r}")
    finite = _fp8_finite(fmt)
    mids = [(a + b) / 2 for a, b in itertools.pairwise(finite)]
    elements = st.one_of(
        st.floats(-f.max, f.max, width=32),
        st.sampled_from(finite),
        st.sampled_from(mids),
    )
    shapes = st.just(shape) if shape is not None else hnp.array_shapes(min_dims=1, max_dims=2, max_side=6)
    return shapes.flatmap(lambda s: hnp.arrays(np.float32, s, elements=elements).map(torch.from_numpy))
