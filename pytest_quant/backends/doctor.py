"""The checkpoint doctor: defects that have shipped in published quantized checkpoints, found
before anything is evaluated.

Engine layer. :func:`diagnose` reads a Hugging Face model folder's ``config.json`` and its
safetensors headers (sharded or not), then reads only the small tensors it judges (zero points,
scales, ``weight_shape``) one at a time; packed weights are judged by their shapes alone. It
understands three layouts:

=================== ==============================================================================
``gptq``            AutoGPTQ / GPTQModel: ``qweight`` int32 [in·bits/32, out], ``qzeros`` int32
                    [groups, out·bits/32], ``scales`` [groups, out], ``g_idx`` int32 [in];
                    ``checkpoint_format`` ``gptq`` (v1: zero point z stored as z−1) or ``gptq_v2``
``awq``             AutoAWQ GEMM: ``qweight`` int32 [in, out·bits/32], ``qzeros`` int32
                    [groups, out·bits/32], ``scales`` [groups, out]
``compressed-tensors`` ``weight_packed`` int32 [out, in·bits/32] + ``weight_shape`` (pack-quantized),
                    or ``weight`` int8 / FP8 [out, in] (int-, float-, naive-quantized), with
                    ``weight_scale`` [out, groups], optional ``weight_zero_point`` and ``input_scale``
=================== ==============================================================================

Each :class:`Finding` belongs to one of :data:`CHECKS`:

- ``zero_points``: a GPTQ v1 zero point stored as 2^bits−1 (the AutoGPTQ asymmetric bug: a true
  zero point 0 stored as −1 wraps, and the kernel adds 1 back to 2^bits, outside the range); a
  symmetric checkpoint whose zero points are not the symmetric midpoint;
- ``scales``: a scale tensor (``scales``, ``weight_scale``, ``input_scale``, ...) holding zeros, NaN or inf;
- ``group_size``: a group size that does not divide a quantized layer's in-features;
- ``shapes``: a packed tensor whose shape disagrees with the bits, group size and the layer's
  in/out features (taken from config.json where the layer's name says which, else from the tensors);
- ``layers``: a Linear the config quantizes stored as a float ``weight``, or one stored quantized
  that the config leaves unconverted (``modules_to_not_convert``, compressed-tensors ``ignore``).

Bad input (no config.json, unreadable weights, an unknown ``quant_method``) raises
:class:`~pytest_quant.errors.QuantConfigError` naming the file and field.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_quant.backends.dequantize import PackedFormat, packed_format
from pytest_quant.errors import QuantConfigError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["CHECKS", "CODES", "Diagnosis", "Finding", "checkable", "diagnose", "unpack_int32"]

CHECKS: tuple[str, ...] = ("zero_points", "scales", "group_size", "shapes", "layers")

# finding code -> the check it belongs to
CODES: dict[str, str] = {
    "zero_point_overflow": "zero_points",
    "zero_point_not_symmetric": "zero_points",
    "scale_zero": "scales",
    "scale_nan": "scales",
    "scale_inf": "scales",
    "group_size_indivisible": "group_size",
    "shape_mismatch": "shapes",
    "tensor_missing": "shapes",
    "layer_not_quantized": "layers",
    "layer_unexpectedly_quantized": "layers",
}

METHODS = ("gptq", "awq", "compressed-tensors")
INDEX = "model.safetensors.index.json"
_FLOATS = ("F64", "F32", "F16", "BF16")
_NOT_NUMPY = ("BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4")  # read through torch
# GPTQ/AWQ scales; compressed-tensors weight/input/output scales (and NVFP4 global scales); KV-cache scales
_SCALE = re.compile(r"^(scales|(weight|input|output|k|v|q|prob)_(global_)?scale)$")
_BLOCK = re.compile(r"\.\d+\.")  # a module inside a repeated block (model.layers.3.mlp.up_proj)
_ROUTER = re.compile(r"(\.mlp\.gate|\.router|\.block_sparse_moe\.gate|shared_expert_gate)$")
_TOWERS = ("vision", "visual", "audio", "mm_projector", "multi_modal_projector")


@dataclass(frozen=True)
class Finding:
    """One defect: ``code`` (a key of :data:`CODES`), the tensor at fault and what is wrong with it."""

    code: str
    tensor: str
    message: str
    count: int | None = None  # offending values (or layers), where counting makes sense
    total: int | None = None

    @property
    def check(self) -> str:
        return CODES[self.code]

    def line(self) -> str:
        return f"[{self.code}] {self.tensor}: {self.message}"


@dataclass(frozen=True)
class Diagnosis:
    """What :func:`diagnose` found in one checkpoint folder, and which checks ran on it."""

    folder: Path
    quant_method: str | None
    checks: tuple[str, ...]  # the checks that ran (none for an unquantized checkpoint)
    findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()
    summary: str = ""  # the quantization as the config states it, e.g. "gptq v1 4-bit g128 asym"

    @property
    def ok(self) -> bool:
        return not self.findings

    def of(self, check: str) -> list[Finding]:
        """The findings of one check, in tensor order."""
        return [f for f in self.findings if f.check == check]


# --------------------------------------------------------------------------- reading
def _read_config(folder: Path) -> dict[str, Any]:
    config_file = folder / "config.json"
    if not folder.is_dir():
        raise QuantConfigError(
            f"checkpoint folder {str(folder)!r} does not exist or is not a folder", field="checkpoint"
        )
    if not config_file.is_file():
        raise QuantConfigError(
            "no config.json: not a Hugging Face model folder", source=str(folder), field="config.json"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise QuantConfigError(f"not valid JSON ({exc})", source=str(config_file)) from None
    if not isinstance(config, dict):
        raise QuantConfigError(f"expected a JSON object, got {type(config).__name__}", source=str(config_file))
    return config


@dataclass(frozen=True)
class _Info:
    file: Path
    dtype: str
    shape: tuple[int, ...]


class _Weights:
    """Every tensor's file, dtype and shape from the safetensors headers; tensors read one at a time."""

    def __init__(self, folder: Path, stack: contextlib.ExitStack):
        from safetensors import SafetensorError, safe_open

        self._stack = stack
        self._open: dict[Path, Any] = {}
        self._torch: dict[Path, Any] = {}
        self.info: dict[str, _Info] = {}
        index = folder / INDEX
        wanted: dict[str, Path] | None = None
        if index.is_file():
            wanted = self._read_index(index)
            files = sorted(set(wanted.values()))
        else:
            files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise QuantConfigError(
                "no *.safetensors weights (the doctor reads safetensors only)", source=str(folder), field="weights"
            )
        for path in files:
            try:
                handle = stack.enter_context(safe_open(str(path), framework="numpy"))
                for name in handle.keys():
                    sl = handle.get_slice(name)
                    self.info[name] = _Info(path, str(sl.get_dtype()), tuple(int(d) for d in sl.get_shape()))
            except (SafetensorError, OSError, ValueError) as exc:
                raise QuantConfigError(f"weights file is truncated or corrupt ({exc})", source=str(path)) from None
            self._open[path] = handle
        for name, path in (wanted or {}).items():
            if name not in self.info or self.info[name].file != path:
                raise QuantConfigError(
                    f"the index maps {name!r} to {path.name}, which does not hold it",
                    source=str(index),
                    field=f"weight_map.{name}",
                )

    @staticmethod
    def _read_index(index: Path) -> dict[str, Path]:
        try:
            doc = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise QuantConfigError(f"not valid JSON ({exc})", source=str(index)) from None
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise QuantConfigError(
                "expected a non-empty mapping of tensor -> file", source=str(index), field="weight_map"
            )
        out: dict[str, Path] = {}
        for name, file in weight_map.items():
            path = index.parent / str(file)
            if not path.is_file():
                raise QuantConfigError(f"shard {file!r} does not exist", source=str(index), field=f"weight_map.{name}")
            out[str(name)] = path
        return out

    def read(self, name: str) -> np.ndarray:
        """The tensor as a NumPy array (BF16 and FP8 are read through torch and widened to float32)."""
        info = self.info[name]
        if info.dtype not in _NOT_NUMPY:
            return self._open[info.file].get_tensor(name)
        if info.file not in self._torch:
            from safetensors import safe_open

            self._torch[info.file] = self._stack.enter_context(safe_open(str(info.file), framework="pt"))
        return self._torch[info.file].get_tensor(name).float().numpy()


def unpack_int32(words: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The first ``count`` unsigned ``bits``-bit values packed into the int32 ``words`` along the last
    axis, least significant bits first as one bit stream (GPTQ's qzeros, compressed-tensors'
    dense packing; 3-bit values cross word boundaries). Returns uint32, shape ``(..., count)``."""
    import numpy as np

    w = np.ascontiguousarray(words).astype("<u4")
    stream = np.unpackbits(w.view(np.uint8), axis=-1, bitorder="little")
    n = min(count, stream.shape[-1] // bits)
    values = stream[..., : n * bits].reshape(*stream.shape[:-1], n, bits).astype(np.uint32)
    return (values << np.arange(bits, dtype=np.uint32)).sum(axis=-1, dtype=np.uint32)


# --------------------------------------------------------------------------- formats
@dataclass(frozen=True)
class _Spec:
    """How one layer is quantized, as the config says."""

    bits: int
    group_size: int | None  # None: per channel (or per tensor)
    symmetric: bool
    strategy: str = "group"  # compressed-tensors: tensor | channel | group | tensor_group | block
    block: tuple[int, int] | None = None
    layout: str = ""  # gptq | awq | pack-quantized | int-quantized | float-quantized | naive-quantized | ...

    def describe(self) -> str:
        gran = (
            f"g{self.group_size}" if self.group_size else self.strategy if self.strategy != "group" else "per-channel"
        )
        return f"{self.bits}-bit {gran} {'sym' if self.symmetric else 'asym'}"


@dataclass(frozen=True)
class _Expect:
    """What the config says about one Linear: quantized with ``spec``, or not (``why``), or unknown."""

    spec: _Spec | None
    why: str = ""
    known: bool = True


def _packed(qc: dict[str, Any], source: str) -> PackedFormat:
    """A GPTQ / AWQ ``quantization_config`` read as the dequantizer reads it (one parser for both)."""
    packed = packed_format({"quantization_config": qc}, source)
    assert packed is not None, "only GPTQ and AWQ formats are read this way"
    return packed


def _matches_hf(name: str, patterns: list[str]) -> str | None:
    """The ``modules_to_not_convert`` pattern that keeps ``name`` unconverted (transformers' rule)."""
    for key in patterns:
        with contextlib.suppress(re.error):
            if re.match(f"{key}\\.", name) or re.match(key, name) or name.endswith(key):
                return key
    return None


class _Format:
    """One quant_method's config and layout."""

    method = ""
    quantized_params: tuple[str, ...] = ()

    def __init__(self, qc: dict[str, Any], source: str):
        self.qc = qc
        self.source = source

    def describe(self) -> str:
        raise NotImplementedError

    def expect(self, module: str) -> _Expect:
        raise NotImplementedError

    def stored_quantized(self, params: dict[str, _Info]) -> bool:
        return any(p in params for p in self.quantized_params)

    def key_tensor(self, module: str, params: dict[str, _Info]) -> str:
        return f"{module}.{next((p for p in self.quantized_params if p in params), 'weight')}"

    def tensor_dims(
        self, spec: _Spec, params: dict[str, _Info], weights: _Weights, module: str
    ) -> tuple[int, int] | None:
        """(out, in) from the layer's own tensors, where the config cannot say."""
        raise NotImplementedError

    def expected_shapes(
        self, spec: _Spec, out: int, inp: int, params: dict[str, _Info]
    ) -> dict[str, list[tuple[int, ...]]]:
        raise NotImplementedError

    def zero_points(
        self, module: str, spec: _Spec, params: dict[str, _Info], out: int, weights: _Weights
    ) -> list[Finding]:
        return []


def _groups(spec: _Spec, inp: int) -> int:
    return math.ceil(inp / spec.group_size) if spec.group_size else 1


def _words(n: int, bits: int) -> int:
    return math.ceil(n * bits / 32)


class _GPTQ(_Format):
    method = "gptq"
    quantized_params = ("qweight", "qzeros", "g_idx")

    def __init__(self, qc: dict[str, Any], source: str):
        super().__init__(qc, source)
        packed = _packed(qc, source)
        self.v1 = packed.version == "v1"
        self.spec = _Spec(packed.bits, packed.group_size if packed.group_size > 0 else None, packed.symmetric, "gptq")
        self.skip = [str(p) for p in qc.get("modules_to_not_convert") or ()]
        self.lm_head = bool(qc.get("lm_head", False))
        blocks = qc.get("modules_in_block_to_quantize")
        self.in_block = {str(n) for group_ in blocks for n in group_} if isinstance(blocks, list) else None
        dynamic = qc.get("dynamic")
        self.dynamic: dict[str, Any] = dynamic if isinstance(dynamic, dict) else {}

    def describe(self) -> str:
        return f"gptq {'v1' if self.v1 else 'v2'} {self.spec.describe()}" + (
            " desc_act" if self.qc.get("desc_act") else ""
        )

    def expect(self, module: str) -> _Expect:
        spec = self.spec
        for pattern, override in self.dynamic.items():  # GPTQModel's per-module rules
            negative, regex = str(pattern).startswith("-:"), str(pattern).removeprefix("-:").removeprefix("+:")
            with contextlib.suppress(re.error):
                if re.match(regex, module):
                    if negative:
                        return _Expect(None, f"dynamic rule {pattern!r} skips it")
                    if isinstance(override, dict):
                        g = override.get("group_size", spec.group_size or -1)
                        spec = _Spec(
                            int(override.get("bits", spec.bits)),
                            int(g) if isinstance(g, int) and g > 0 else None,
                            bool(override.get("sym", spec.symmetric)),
                            layout="gptq",
                        )
                    break
        hit = _matches_hf(module, self.skip)
        if hit is not None:
            return _Expect(None, f"modules_to_not_convert has {hit!r}")
        if module.split(".")[-1] == "lm_head":
            return _Expect(spec) if self.lm_head else _Expect(None, "lm_head is not quantized unless 'lm_head': true")
        if any(t in module for t in _TOWERS) or not _BLOCK.search(module):
            return _Expect(None, "outside the quantized decoder blocks", known=False)
        if _ROUTER.search(module):
            return _Expect(None, "an MoE router", known=False)
        if self.in_block is not None and not any(module.endswith("." + n) for n in self.in_block):
            return _Expect(None, "not in modules_in_block_to_quantize")
        return _Expect(spec)

    def tensor_dims(
        self, spec: _Spec, params: dict[str, _Info], weights: _Weights, module: str
    ) -> tuple[int, int] | None:
        out = next((params[p].shape[-1] for p in ("scales", "qweight") if p in params and params[p].shape), None)
        if "g_idx" in params and len(params["g_idx"].shape) == 1:
            inp = params["g_idx"].shape[0]
        elif "qweight" in params and len(params["qweight"].shape) == 2:
            inp = params["qweight"].shape[0] * 32 // spec.bits
        else:
            return None
        return (out, inp) if out else None

    def expected_shapes(
        self, spec: _Spec, out: int, inp: int, params: dict[str, _Info]
    ) -> dict[str, list[tuple[int, ...]]]:
        groups, b = _groups(spec, inp), spec.bits
        shapes: dict[str, list[tuple[int, ...]]] = {
            "qweight": [(_words(inp, b), out)],
            "qzeros": [(groups, _words(out, b))],
            "scales": [(groups, out)],
            "bias": [(out,)],
        }
        if "g_idx" in params:
            shapes["g_idx"] = [(inp,)]
        return shapes

    def zero_points(
        self, module: str, spec: _Spec, params: dict[str, _Info], out: int, weights: _Weights
    ) -> list[Finding]:
        if "qzeros" not in params or len(params["qzeros"].shape) != 2:
            return []
        name = f"{module}.qzeros"
        stored = unpack_int32(weights.read(name), spec.bits, out)
        total = int(stored.size)
        top = (1 << spec.bits) - 1
        if spec.symmetric:
            mid = (1 << (spec.bits - 1)) - (1 if self.v1 else 0)
            off = stored != mid
            n = int(off.sum())
            if not n:
                return []
            seen = sorted({int(v) for v in stored[off].ravel()[:4096]})[:6]
            return [
                Finding(
                    "zero_point_not_symmetric",
                    name,
                    f"{n} of {total} stored zero points are not the symmetric midpoint {mid} "
                    f"({'v1 stores 2^(bits-1)-1' if self.v1 else 'v2 stores 2^(bits-1)'}) although the config says "
                    f"sym: true; seen {', '.join(map(str, seen))}",
                    n,
                    total,
                )
            ]
        if not self.v1:
            return []
        n = int((stored == top).sum())
        if not n:
            return []
        return [
            Finding(
                "zero_point_overflow",
                name,
                f"{n} of {total} stored zero points are {top} (2^{spec.bits}-1): GPTQ v1 stores z-1, so these are "
                f"a true zero point 0 wrapped to {top}, which the kernel reads back as {top + 1}, outside the "
                f"{spec.bits}-bit range [0, {top}] (the AutoGPTQ asymmetric bug; re-export as gptq_v2 or re-quantize)",
                n,
                total,
            )
        ]


class _AWQ(_Format):
    method = "awq"
    quantized_params = ("qweight", "qzeros")

    def __init__(self, qc: dict[str, Any], source: str):
        super().__init__(qc, source)
        packed = _packed(qc, source)
        if packed.version != "gemm":
            raise QuantConfigError(
                f"the doctor reads AWQ's GEMM layout, not {packed.version!r}",
                source=source,
                field="quantization_config.version",
            )
        self.spec = _Spec(packed.bits, packed.group_size if packed.group_size > 0 else None, packed.symmetric, "awq")
        self.skip = [str(p) for p in qc.get("modules_to_not_convert") or ()]

    def describe(self) -> str:
        return f"awq gemm {self.spec.describe()}"

    def expect(self, module: str) -> _Expect:
        hit = _matches_hf(module, self.skip)
        if hit is not None:
            return _Expect(None, f"modules_to_not_convert has {hit!r}")
        if module.split(".")[-1] == "lm_head":
            return _Expect(None, "AWQ leaves lm_head unquantized")
        if any(t in module for t in _TOWERS) or not _BLOCK.search(module):
            return _Expect(None, "outside the quantized decoder blocks", known=False)
        if _ROUTER.search(module):
            return _Expect(None, "an MoE router", known=False)
        return _Expect(self.spec)

    def tensor_dims(
        self, spec: _Spec, params: dict[str, _Info], weights: _Weights, module: str
    ) -> tuple[int, int] | None:
        if "qweight" not in params or len(params["qweight"].shape) != 2:
            return None
        out = params["scales"].shape[-1] if "scales" in params and params["scales"].shape else None
        out = out or params["qweight"].shape[1] * 32 // spec.bits
        return out, params["qweight"].shape[0]

    def expected_shapes(
        self, spec: _Spec, out: int, inp: int, params: dict[str, _Info]
    ) -> dict[str, list[tuple[int, ...]]]:
        groups, b = _groups(spec, inp), spec.bits
        shapes: dict[str, list[tuple[int, ...]]] = {
            "qweight": [(inp, _words(out, b))],
            "scales": [(groups, out)],
            "bias": [(out,)],
        }
        if "qzeros" in params or not spec.symmetric:
            shapes["qzeros"] = [(groups, _words(out, b))]
        return shapes


_CT_QUANTIZED = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape")


class _CompressedTensors(_Format):
    method = "compressed-tensors"
    quantized_params = _CT_QUANTIZED

    def __init__(self, qc: dict[str, Any], source: str):
        super().__init__(qc, source)
        groups = qc.get("config_groups")
        if not isinstance(groups, dict) or not groups:
            raise QuantConfigError(
                f"expected a mapping of quantization groups, got {groups!r}",
                source=source,
                field="quantization_config.config_groups",
            )
        top = str(qc.get("format") or "dense")
        self.groups: list[tuple[list[str], _Spec | None]] = []
        for gname, group in groups.items():
            where = f"quantization_config.config_groups.{gname}"
            if not isinstance(group, dict):
                raise QuantConfigError(f"expected a mapping, got {group!r}", source=source, field=where)
            targets = group.get("targets")
            if not isinstance(targets, list) or not targets:
                raise QuantConfigError(
                    f"expected a list of targets, got {targets!r}", source=source, field=f"{where}.targets"
                )
            w = group.get("weights")
            spec = None
            if isinstance(w, dict):
                bits = w.get("num_bits")
                if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 32:
                    raise QuantConfigError(
                        f"expected a whole number of bits, got {bits!r}",
                        source=source,
                        field=f"{where}.weights.num_bits",
                    )
                strategy = str(w.get("strategy") or ("group" if w.get("group_size") else "tensor"))
                g = w.get("group_size")
                block = w.get("block_structure")
                spec = _Spec(
                    bits,
                    int(g) if isinstance(g, int) and g > 0 and strategy in ("group", "tensor_group") else None,
                    bool(w.get("symmetric", True)),
                    strategy,
                    (int(block[0]), int(block[1])) if isinstance(block, list) and len(block) == 2 else None,
                    str(group.get("format") or top),
                )
            self.groups.append(([str(t) for t in targets], spec))
        self.ignore = [str(p) for p in qc.get("ignore") or ()]

    def describe(self) -> str:
        specs = sorted({f"{s.layout} {s.describe()}" for _, s in self.groups if s is not None})
        return f"compressed-tensors {', '.join(specs) or 'without weight quantization'}"

    @staticmethod
    def _match(module: str, target: str) -> bool:
        if target.startswith("re:"):
            with contextlib.suppress(re.error):
                return re.match(target[3:], module) is not None
            return False
        return module == target or target.endswith("Linear")  # a class name: every Linear

    def expect(self, module: str) -> _Expect:
        hit = next((p for p in self.ignore if self._match(module, p) and not p.endswith("Linear")), None)
        if hit is not None:
            return _Expect(None, f"ignore has {hit!r}")
        for targets, spec in self.groups:
            if any(self._match(module, t) for t in targets):
                return _Expect(spec) if spec is not None else _Expect(None, "its group quantizes no weights")
        return _Expect(None, "no config_groups target matches it")

    def stored_quantized(self, params: dict[str, _Info]) -> bool:
        if any(p in params for p in _CT_QUANTIZED):
            return True
        w = params.get("weight")
        return w is not None and w.dtype not in _FLOATS

    def tensor_dims(
        self, spec: _Spec, params: dict[str, _Info], weights: _Weights, module: str
    ) -> tuple[int, int] | None:
        if "weight_shape" in params:
            shape = weights.read(f"{module}.weight_shape").ravel()
            return (int(shape[0]), int(shape[-1])) if shape.size == 2 else None
        w = params.get("weight")
        return (w.shape[0], w.shape[1]) if w is not None and len(w.shape) == 2 else None

    def expected_shapes(
        self, spec: _Spec, out: int, inp: int, params: dict[str, _Info]
    ) -> dict[str, list[tuple[int, ...]]]:
        b, groups = spec.bits, _groups(spec, inp)
        shapes: dict[str, list[tuple[int, ...]]] = {"bias": [(out,)]}
        if spec.strategy in ("group", "tensor_group"):
            scale: list[tuple[int, ...]] = [(out, groups)]
        elif spec.strategy == "channel":
            scale = [(out, 1), (out,)]
        elif spec.strategy == "tensor":
            scale = [(1,), (), (1, 1)]
        elif spec.strategy == "block" and spec.block:
            scale = [(math.ceil(out / spec.block[0]), math.ceil(inp / spec.block[1]))]
        else:
            return shapes
        shapes["weight_scale"] = scale
        if spec.layout == "pack-quantized":
            shapes["weight_packed"] = [(out, _words(inp, b)), (out, math.ceil(inp / max(1, 32 // b)))]
            shapes["weight_shape"] = [(2,)]
            if "weight_zero_point" in params or (not spec.symmetric and spec.strategy in ("group", "channel")):
                shapes["weight_zero_point"] = [(_words(out, b), scale[0][-1]), *scale]
        elif spec.layout in ("int-quantized", "float-quantized", "naive-quantized"):
            shapes["weight"] = [(out, inp)]
            if "weight_zero_point" in params:
                shapes["weight_zero_point"] = scale
        else:
            shapes.pop("weight_scale")  # another layout (nvfp4, marlin-24, sparse): its own scale shapes
        return shapes

    def zero_points(
        self, module: str, spec: _Spec, params: dict[str, _Info], out: int, weights: _Weights
    ) -> list[Finding]:
        info = params.get("weight_zero_point")
        if info is None or not spec.symmetric:
            return []
        name = f"{module}.weight_zero_point"
        zp = weights.read(name)
        if info.dtype == "I32" and spec.layout == "pack-quantized" and zp.ndim == 2 and spec.bits < 32:
            zp = unpack_int32(zp.T, spec.bits, out).T.astype("int64") - (1 << (spec.bits - 1))
        n = int((zp != 0).sum())
        if not n:
            return []
        return [
            Finding(
                "zero_point_not_symmetric",
                name,
                f"{n} of {zp.size} zero points are not 0 although the config says symmetric: true",
                n,
                int(zp.size),
            )
        ]


_FORMATS: dict[str, type[_Format]] = {"gptq": _GPTQ, "awq": _AWQ, "compressed-tensors": _CompressedTensors}


# --------------------------------------------------------------------------- dimensions from config.json
def _config_dims(module: str, config: dict[str, Any]) -> tuple[int, int, str] | None:
    """(out, in, how) of a Linear whose name says what it is (q_proj, down_proj, ...) in a
    decoder described by config.json (``text_config`` for multimodal models), or None."""
    if any(t in module for t in _TOWERS):
        return None
    text = {**config, **config["text_config"]} if isinstance(config.get("text_config"), dict) else config
    leaf = module.rsplit(".", 1)[-1]

    def num(*keys: str) -> int | None:
        for key in keys:
            value = text.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    hidden, heads = num("hidden_size", "n_embd", "d_model"), num("num_attention_heads", "n_head")
    kv = num("num_key_value_heads") or heads
    head_dim = num("head_dim") or (hidden // heads if hidden and heads else None)
    inter = num("intermediate_size", "ffn_dim")
    if ".experts." in module:
        inter = num("moe_intermediate_size") or inter
    elif "shared_expert" in module:
        inter = num("shared_expert_intermediate_size") or inter
    table: dict[str, tuple[int | None, int | None, str]] = {}
    if hidden and heads and kv and head_dim:
        q, k = heads * head_dim, kv * head_dim
        table.update(
            q_proj=(q, hidden, "num_attention_heads × head_dim ← hidden_size"),
            k_proj=(k, hidden, "num_key_value_heads × head_dim ← hidden_size"),
            v_proj=(k, hidden, "num_key_value_heads × head_dim ← hidden_size"),
            o_proj=(hidden, q, "hidden_size ← num_attention_heads × head_dim"),
            qkv_proj=(q + 2 * k, hidden, "(heads + 2 × kv heads) × head_dim ← hidden_size"),
        )
    if hidden and inter:
        table.update(
            gate_proj=(inter, hidden, "intermediate_size ← hidden_size"),
            up_proj=(inter, hidden, "intermediate_size ← hidden_size"),
            down_proj=(hidden, inter, "hidden_size ← intermediate_size"),
            gate_up_proj=(2 * inter, hidden, "2 × intermediate_size ← hidden_size"),
        )
        if ".experts." in module:
            table.update(
                w1=(inter, hidden, "intermediate_size ← hidden_size"),
                w3=(inter, hidden, "intermediate_size ← hidden_size"),
                w2=(hidden, inter, "hidden_size ← intermediate_size"),
            )
    vocab = num("vocab_size")
    if hidden and vocab:
        table["lm_head"] = (vocab, hidden, "vocab_size ← hidden_size")
    out, inp, how = table.get(leaf, (None, None, ""))
    return (out, inp, f"config.json: {how}") if out and inp else None


# --------------------------------------------------------------------------- the checks
def _modules(weights: _Weights) -> dict[str, dict[str, _Info]]:
    modules: dict[str, dict[str, _Info]] = {}
    for name, info in weights.info.items():
        module, _, param = name.rpartition(".")
        modules.setdefault(module, {})[param] = info
    return modules


def _is_linear(module: str, params: dict[str, _Info], fmt: _Format) -> bool:
    leaf = module.rsplit(".", 1)[-1]
    if "embed" in leaf or leaf in ("wte", "wpe") or "norm" in leaf:
        return False
    if fmt.stored_quantized(params) or "qweight" in params or "weight_packed" in params:
        return True
    w = params.get("weight")
    return w is not None and len(w.shape) == 2 and w.dtype in _FLOATS


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _scale_findings(weights: _Weights) -> Iterator[Finding]:
    import numpy as np

    for name in sorted(weights.info):
        param = name.rpartition(".")[2]
        if not _SCALE.match(param) or weights.info[name].dtype not in (*_FLOATS, "F8_E4M3", "F8_E5M2", "F8_E8M0"):
            continue
        values = weights.read(name)
        total = int(values.size)
        with np.errstate(invalid="ignore"):
            counts = {
                "scale_zero": int((values == 0).sum()),
                "scale_nan": int(np.isnan(values).sum()),
                "scale_inf": int(np.isinf(values).sum()),
            }
        words = {"scale_zero": "zero", "scale_nan": "NaN", "scale_inf": "infinite"}
        for code, n in counts.items():
            if n:
                yield Finding(
                    code,
                    name,
                    f"{n} of {total} scales are {words[code]}: every weight (or activation) they scale "
                    f"dequantizes to {'0' if code == 'scale_zero' else words[code]}",
                    n,
                    total,
                )


def _layer_findings(module: str, params: dict[str, _Info], fmt: _Format, expect: _Expect) -> Iterator[Finding]:
    quantized = fmt.stored_quantized(params)
    if expect.spec is not None and not quantized:
        w = params.get("weight")
        what = f"a float {w.dtype} weight {_shape(w.shape)}" if w else "no quantized tensors"
        yield Finding(
            "layer_not_quantized",
            f"{module}.weight",
            f"the config quantizes this Linear ({fmt.method} {expect.spec.describe()}) but it is stored as {what}; "
            f"loaders build a quantized layer for it and find none of its quantized tensors",
        )
        return
    if expect.spec is None and quantized and expect.known:
        yield Finding(
            "layer_unexpectedly_quantized",
            fmt.key_tensor(module, params),
            f"stored quantized, but the config leaves this Linear unconverted ({expect.why}); loaders build a "
            f"float Linear and drop or reject the packed tensors",
        )


def _packed_findings(
    module: str, params: dict[str, _Info], fmt: _Format, spec: _Spec, config: dict[str, Any], weights: _Weights
) -> Iterator[Finding]:
    """Shapes, group size and zero points of one layer stored quantized."""
    dims = _config_dims(module, config)
    if dims is not None:
        out, inp, how = dims
    else:
        found = fmt.tensor_dims(spec, params, weights, module)
        if found is None:
            return
        (out, inp), how = found, "its own tensors"
    if spec.group_size and inp % spec.group_size:
        yield Finding(
            "group_size_indivisible",
            module,
            f"group_size {spec.group_size} does not divide in_features {inp} ({how}): the last group is partial, "
            f"which most kernels (Marlin, Exllama, Machete) reject or read past",
            inp,
        )
    expected = fmt.expected_shapes(spec, out, inp, params)
    for param, shapes in expected.items():
        name = f"{module}.{param}"
        if param not in params:
            if param != "bias" and not (param == "weight_scale" and spec.layout in ("dense", "")):
                yield Finding(
                    "tensor_missing",
                    name,
                    f"missing: a {fmt.method} {spec.describe()} layer stores {param} {_shape(shapes[0])} "
                    f"(out_features {out}, in_features {inp} from {how})",
                )
            continue
        actual = params[param].shape
        if actual not in shapes:
            yield Finding(
                "shape_mismatch",
                name,
                f"shape {_shape(actual)}, expected {_shape(shapes[0])} for {fmt.method} {spec.describe()} with "
                f"out_features {out}, in_features {inp} (from {how})",
            )
    if "weight_shape" in expected and "weight_shape" in params and params["weight_shape"].shape == (2,):
        stored = tuple(int(v) for v in weights.read(f"{module}.weight_shape").ravel())
        if stored != (out, inp):
            yield Finding(
                "shape_mismatch",
                f"{module}.weight_shape",
                f"says {list(stored)}, but the layer is [{out}, {inp}] (from {how})",
            )
    yield from fmt.zero_points(module, spec, params, out, weights)


def checkable(folder: Path | str) -> bool:
    """Whether ``folder``'s config.json reads back and declares a quant_method the doctor reads
    (:data:`METHODS`); an unquantized, unreadable or otherwise quantized folder is not checkable."""
    try:
        config = json.loads((Path(folder).expanduser() / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    qc = config.get("quantization_config", config.get("compression_config")) if isinstance(config, dict) else None
    return isinstance(qc, dict) and qc.get("quant_method") in METHODS


def diagnose(folder: Path | str) -> Diagnosis:
    """Check the quantized checkpoint in ``folder`` for the defects of :data:`CHECKS`.

    An unquantized checkpoint (no ``quantization_config``) gives no findings and a note. Raises
    :class:`QuantConfigError` naming the file and field for a folder that cannot be read.
    """
    folder = Path(folder).expanduser().resolve()
    config = _read_config(folder)
    source = str(folder / "config.json")
    qc = config.get("quantization_config", config.get("compression_config"))
    if qc is None:
        note = "config.json has no quantization_config: not a quantized checkpoint, nothing to check"
        return Diagnosis(folder, None, (), notes=(note,))
    if not isinstance(qc, dict):
        raise QuantConfigError(f"expected a mapping, got {qc!r}", source=source, field="quantization_config")
    method = qc.get("quant_method")
    if method not in _FORMATS:
        raise QuantConfigError(
            f"unknown quant_method {method!r}; the doctor reads {', '.join(METHODS)}",
            source=source,
            field="quantization_config.quant_method",
        )
    fmt = _FORMATS[method](qc, source)
    findings: list[Finding] = []
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        weights = _Weights(folder, stack)
        findings.extend(_scale_findings(weights))
        quantized = 0
        for module, params in sorted(_modules(weights).items()):
            if not _is_linear(module, params, fmt):
                continue
            expect = fmt.expect(module)
            findings.extend(_layer_findings(module, params, fmt, expect))
            if not fmt.stored_quantized(params):
                continue
            quantized += 1
            spec = (
                expect.spec or getattr(fmt, "spec", None) or next((s for _, s in getattr(fmt, "groups", ()) if s), None)
            )
            if spec is not None:
                findings.extend(_packed_findings(module, params, fmt, spec, config, weights))
    notes.append(f"{quantized} quantized layers in {len({i.file for i in weights.info.values()})} safetensors file(s)")
    if method == "awq":
        notes.append("AWQ stores zero points as they are (no z-1 offset): none can wrap")
    return Diagnosis(folder, method, CHECKS, tuple(findings), tuple(notes), fmt.describe())
