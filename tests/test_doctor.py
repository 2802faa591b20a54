"""The checkpoint doctor on real checkpoints: small Llama-shaped models packed in the GPTQ v1 / v2
and AWQ GEMM layouts by the packers below (AutoGPTQ's and AutoAWQ's packing loops), and
compressed-tensors checkpoints made by llm-compressor's own ``oneshot``. A clean one has no
findings; each defect, planted on purpose, is found with its code, tensor and count.

The packers use NumPy only (``save`` writes with ``safetensors.torch`` here and with
``safetensors.numpy`` in ``test_plugin_doctor.py``, whose in-process runs must not import torch).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_quant.backends.doctor import CHECKS, diagnose, unpack_int32
from pytest_quant.errors import QuantConfigError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, VOCAB = 64, 128, 2, 4, 2, 256
HEAD_DIM = HIDDEN // HEADS
LINEARS: dict[str, tuple[int, int]] = {  # name in a decoder layer -> (out, in)
    "self_attn.q_proj": (HEADS * HEAD_DIM, HIDDEN),
    "self_attn.k_proj": (KV_HEADS * HEAD_DIM, HIDDEN),
    "self_attn.v_proj": (KV_HEADS * HEAD_DIM, HIDDEN),
    "self_attn.o_proj": (HIDDEN, HEADS * HEAD_DIM),
    "mlp.gate_proj": (INTER, HIDDEN),
    "mlp.up_proj": (INTER, HIDDEN),
    "mlp.down_proj": (HIDDEN, INTER),
}
N_LAYERS = LAYERS * len(LINEARS)
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AutoAWQ GEMM's interleaving of 8 nibbles in a word

Tensors = dict[str, np.ndarray]
Save = Callable[[Tensors, Path], None]


def save_torch(tensors: Tensors, path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    def as_torch(v: Any) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v.contiguous()

    save_file({k: as_torch(v) for k, v in tensors.items()}, str(path))


def load_torch(path: Path) -> Tensors:
    """The tensors as NumPy arrays, except BF16 / FP8 ones (NumPy has no such dtypes): kept as torch tensors."""
    import torch
    from safetensors.torch import load_file

    def as_numpy(v: torch.Tensor) -> Any:
        return v if v.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2) else v.numpy()

    return {k: as_numpy(v) for k, v in load_file(str(path)).items()}


# --------------------------------------------------------------------------- packers
def pack_along(q: np.ndarray, bits: int, axis: int, order: tuple[int, ...] | None = None) -> np.ndarray:
    """AutoGPTQ's loop: 32/bits values per int32, value j of a word at bits [bits*j, bits*j+bits)
    (AutoAWQ: value ``order[j]`` of each 8 at slot j)."""
    per = 32 // bits
    q = np.moveaxis(q.astype(np.uint32), axis, -1)
    q = q.reshape(*q.shape[:-1], q.shape[-1] // per, per)
    words = np.zeros(q.shape[:-1], np.uint32)
    for slot in range(per):
        words |= (q[..., order[slot] if order else slot] & ((1 << bits) - 1)) << (bits * slot)
    return np.moveaxis(words.view(np.int32), -1, axis)


def quantize_groups(w: np.ndarray, bits: int, group: int, sym: bool) -> tuple[np.ndarray, ...]:
    """Round-to-nearest of ``w`` [out, in] per group of ``group`` inputs: q [in, out], scales and
    zero points [groups, out] (GPTQ's and AWQ's orientation)."""
    out, inp = w.shape
    g = w.T.reshape(-1, group, out)  # [groups, group, out]
    qmax = (1 << bits) - 1
    if sym:
        scales = np.abs(g).max(axis=1) / ((qmax - 1) / 2)
        zeros = np.full_like(scales, 1 << (bits - 1), dtype=np.int64)
    else:
        lo, hi = np.minimum(g.min(axis=1), 0), np.maximum(g.max(axis=1), 0)
        scales = (hi - lo) / qmax
        zeros = np.clip(np.round(-lo / scales), 0, qmax).astype(np.int64)
    q = np.clip(np.round(g / scales[:, None, :]) + zeros[:, None, :], 0, qmax).astype(np.int64)
    return q.reshape(inp, out), scales.astype(np.float16), zeros


def llama_config(quantization_config: dict[str, Any] | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "vocab_size": VOCAB,
        "torch_dtype": "float16",
    }
    if quantization_config is not None:
        config["quantization_config"] = quantization_config
    return config


def write_checkpoint(folder: Path, config: dict[str, Any], tensors: Tensors, save: Save = save_torch) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save(tensors, folder / "model.safetensors")
    return folder


def float_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Every Linear's float weight [out, in] and the non-Linear tensors of the tiny Llama."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": rng.standard_normal((VOCAB, HIDDEN)).astype(np.float16),
        "model.norm.weight": np.ones(HIDDEN, np.float16),
        "lm_head.weight": (rng.standard_normal((VOCAB, HIDDEN)) / 8).astype(np.float16),
    }
    for i in range(LAYERS):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[f"model.layers.{i}.{norm}.weight"] = np.ones(HIDDEN, np.float16)
        for name, (o, n) in LINEARS.items():
            out[f"model.layers.{i}.{name}.weight"] = (rng.standard_normal((o, n)) / np.sqrt(n)).astype(np.float32)
    return out


def gptq_checkpoint(
    folder: Path,
    *,
    fmt: str = "gptq",
    sym: bool = False,
    bits: int = 4,
    group_size: int = 32,
    positive: dict[str, int] | None = None,
    save: Save = save_torch,
    **extra: Any,
) -> Path:
    """A GPTQ checkpoint (``fmt`` 'gptq' = v1, zero points stored z-1; 'gptq_v2': stored z).
    ``positive`` maps a Linear to a number of its output channels made all-positive: their true
    zero point is 0, which v1 stores as -1 and so wraps (the AutoGPTQ bug)."""
    tensors: Tensors = {}
    for name, w in float_weights().items():
        module = name.removesuffix(".weight")
        if module.split(".", 3)[-1] not in LINEARS:
            tensors[name] = w.astype(np.float16)
            continue
        w = w.copy()
        if positive and module in positive:
            w[: positive[module]] = np.abs(w[: positive[module]]) + 0.05
        inp = w.shape[1]
        g = group_size if group_size > 0 else inp
        pad = (-inp) % g  # a group size that does not divide: the last group is partial
        wp = np.pad(w, ((0, 0), (0, pad)), constant_values=0.01) if pad else w
        q, scales, zeros = quantize_groups(wp, bits, g, sym)
        stored = zeros - 1 if fmt == "gptq" else zeros
        tensors[f"{module}.qweight"] = pack_along(q[:inp], bits, axis=0)
        tensors[f"{module}.qzeros"] = pack_along(stored, bits, axis=1)
        tensors[f"{module}.scales"] = scales
        tensors[f"{module}.g_idx"] = (np.arange(inp) // g).astype(np.int32)
    qc = {
        "quant_method": "gptq",
        "bits": bits,
        "group_size": group_size,
        "sym": sym,
        "desc_act": False,
        "checkpoint_format": fmt,
        **extra,
    }
    return write_checkpoint(folder, llama_config(qc), tensors, save)


def awq_checkpoint(folder: Path, *, group_size: int = 32, save: Save = save_torch) -> Path:
    """An AutoAWQ GEMM checkpoint: qweight [in, out/8], qzeros [groups, out/8] in AWQ's order."""
    tensors: Tensors = {}
    for name, w in float_weights().items():
        module = name.removesuffix(".weight")
        if module.split(".", 3)[-1] not in LINEARS:
            tensors[name] = w.astype(np.float16)
            continue
        q, scales, zeros = quantize_groups(w, 4, group_size, sym=False)
        tensors[f"{module}.qweight"] = pack_along(q, 4, axis=1, order=AWQ_ORDER)
        tensors[f"{module}.qzeros"] = pack_along(zeros, 4, axis=1, order=AWQ_ORDER)
        tensors[f"{module}.scales"] = scales
    qc = {"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True, "version": "gemm"}
    return write_checkpoint(folder, llama_config(qc), tensors, save)


def edit(folder: Path, change: Callable[[Tensors], None], *, config: Callable[[dict], None] | None = None) -> Path:
    """Load the checkpoint's tensors, change them in place, write them back (and the config)."""
    path = folder / "model.safetensors"
    tensors = load_torch(path)
    change(tensors)
    save_torch(tensors, path)
    if config is not None:
        doc = json.loads((folder / "config.json").read_text())
        config(doc)
        (folder / "config.json").write_text(json.dumps(doc))
    return folder


def codes(folder: Path) -> list[tuple[str, str, int | None]]:
    return [(f.code, f.tensor, f.count) for f in diagnose(folder).findings]


# --------------------------------------------------------------------------- compressed-tensors by llm-compressor
@pytest.fixture(scope="module")
def ct_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """llm-compressor's ``oneshot`` on a tiny random Llama (hidden 64, intermediate 128, 2 layers):
    W4A16 g32 asymmetric and symmetric (pack-quantized), and FP8 with static input scales."""
    pytest.importorskip("llmcompressor")
    from pytest_quant.backends.models import build_tiny_llama
    from pytest_quant.backends.quantize.llmcompressor import LLMCompressorQuantizer
    from pytest_quant.config import SchemeConfig

    root = tmp_path_factory.mktemp("ct")
    model = build_tiny_llama(root / "tiny", hidden_size=HIDDEN, intermediate_size=INTER, layers=LAYERS)
    schemes = {
        "w4-asym": SchemeConfig(name="w4-asym", method="rtn", backend="llmcompressor",
                                weights={"bits": 4, "group_size": 32, "symmetric": False}),
        "w4-sym": SchemeConfig(name="w4-sym", method="rtn", backend="llmcompressor",
                               weights={"bits": 4, "group_size": 32, "symmetric": True}),
        "fp8-static": SchemeConfig(name="fp8-static", method="fp8", activations={"type": "float", "dynamic": False},
                                   calibration={"samples": 4, "seq_len": 32}),
    }  # fmt: skip
    out = {"tiny": model}
    for name, scheme in schemes.items():
        LLMCompressorQuantizer().quantize(model, scheme, root / name)
        out[name] = root / name
    return out


def ct_copy(ct_checkpoints: dict[str, Path], name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ct_checkpoints[name], tmp_path / name))


# --------------------------------------------------------------------------- unpacking
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_unpack_agrees_with_compressed_tensors_packing(bits: int) -> None:
    torch = pytest.importorskip("torch")
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    rng = np.random.default_rng(bits)
    half = 1 << (bits - 1)
    values = rng.integers(-half, half, size=(5, 96), dtype=np.int8)
    packed = pack_to_int32(torch.from_numpy(values), bits).numpy()
    assert np.array_equal(unpack_int32(packed, bits, 96), values.astype(np.int64) + half)


def test_unpack_reads_autogptq_packing() -> None:
    q = np.arange(64).reshape(4, 16) % 16
    assert np.array_equal(unpack_int32(pack_along(q, 4, axis=1), 4, 16), q)


# --------------------------------------------------------------------------- clean checkpoints
@pytest.mark.parametrize(
    "fmt,sym",
    [("gptq", False), ("gptq", True), ("gptq_v2", False), ("gptq_v2", True)],
    ids=["v1-asym", "v1-sym", "v2-asym", "v2-sym"],
)
def test_clean_gptq_has_no_findings(tmp_path: Path, fmt: str, sym: bool) -> None:
    diagnosis = diagnose(gptq_checkpoint(tmp_path / "ckpt", fmt=fmt, sym=sym))
    assert diagnosis.findings == ()
    assert diagnosis.checks == CHECKS
    assert diagnosis.quant_method == "gptq"
    assert diagnosis.summary.startswith(f"gptq {'v1' if fmt == 'gptq' else 'v2'} 4-bit g32")
    assert f"{N_LAYERS} quantized layers in 1 safetensors file(s)" in diagnosis.notes


def test_clean_awq_has_no_findings(tmp_path: Path) -> None:
    diagnosis = diagnose(awq_checkpoint(tmp_path / "ckpt"))
    assert (diagnosis.findings, diagnosis.summary) == ((), "awq gemm 4-bit g32 asym")


@pytest.mark.parametrize("name", ["w4-asym", "w4-sym", "fp8-static"])
def test_clean_llmcompressor_checkpoints_have_no_findings(ct_checkpoints: dict[str, Path], name: str) -> None:
    diagnosis = diagnose(ct_checkpoints[name])
    assert diagnosis.findings == ()
    assert diagnosis.quant_method == "compressed-tensors"
    assert f"{N_LAYERS} quantized layers in 1 safetensors file(s)" in diagnosis.notes


def test_unquantized_checkpoint_has_nothing_to_check(ct_checkpoints: dict[str, Path]) -> None:
    diagnosis = diagnose(ct_checkpoints["tiny"])
    assert (diagnosis.findings, diagnosis.checks, diagnosis.quant_method) == ((), (), None)
    assert "nothing to check" in diagnosis.notes[0]


# --------------------------------------------------------------------------- zero points
def test_v1_wrapped_zero_points_are_found_with_layer_and_count(tmp_path: Path) -> None:
    q_proj = "model.layers.0.self_attn.q_proj"
    found = diagnose(gptq_checkpoint(tmp_path / "ckpt", positive={q_proj: 3})).findings
    groups = HIDDEN // 32
    assert [(f.code, f.tensor, f.count, f.total) for f in found] == [
        ("zero_point_overflow", f"{q_proj}.qzeros", 3 * groups, groups * HIDDEN)
    ]
    assert "are 15 (2^4-1)" in found[0].message and "reads back as 16" in found[0].message


def test_v2_stores_a_zero_point_of_zero_as_is(tmp_path: Path) -> None:
    positive = {"model.layers.0.self_attn.q_proj": 3}
    assert codes(gptq_checkpoint(tmp_path / "ckpt", fmt="gptq_v2", positive=positive)) == []


def test_8bit_v1_wraps_to_255(tmp_path: Path) -> None:
    down = "model.layers.1.mlp.down_proj"
    found = diagnose(gptq_checkpoint(tmp_path / "ckpt", bits=8, positive={down: 2})).findings
    assert [(f.code, f.tensor, f.count) for f in found] == [("zero_point_overflow", f"{down}.qzeros", 2 * INTER // 32)]
    assert "are 255" in found[0].message


def test_symmetric_zero_points_off_the_midpoint(tmp_path: Path) -> None:
    # v2 zero points (8) in a checkpoint that says it is v1 (where symmetric means 7)
    folder = gptq_checkpoint(tmp_path / "ckpt", fmt="gptq_v2", sym=True)
    edit(folder, lambda t: None, config=lambda c: c["quantization_config"].update(checkpoint_format="gptq"))
    found = diagnose(folder).findings
    assert {f.code for f in found} == {"zero_point_not_symmetric"}
    assert len(found) == N_LAYERS
    first = found[0]
    assert (first.tensor, first.count, first.total) == ("model.layers.0.mlp.down_proj.qzeros", 4 * HIDDEN, 4 * HIDDEN)
    assert "midpoint 7" in first.message and "seen 8" in first.message


def test_symmetric_compressed_tensors_with_a_zero_point(ct_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    import torch
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    folder = ct_copy(ct_checkpoints, "w4-sym", tmp_path)
    name = "model.layers.1.self_attn.o_proj.weight_zero_point"
    zp = np.zeros((HIDDEN, 2), np.int8)
    zp[5, 1] = 3
    packed = pack_to_int32(torch.from_numpy(zp), 4, packed_dim=0).numpy()
    edit(folder, lambda t: t.update({name: packed}))
    assert codes(folder) == [("zero_point_not_symmetric", name, 1)]


# --------------------------------------------------------------------------- scales
def test_zero_gptq_scales(tmp_path: Path) -> None:
    name = "model.layers.1.mlp.down_proj.scales"
    folder = edit(gptq_checkpoint(tmp_path / "ckpt"), lambda t: t[name].__setitem__((0, slice(0, 3)), 0))
    found = diagnose(folder).findings
    assert [(f.code, f.tensor, f.count, f.total) for f in found] == [("scale_zero", name, 3, 4 * HIDDEN)]
    assert diagnose(folder).of("scales") == list(found)


def test_nan_weight_scale(ct_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    name = "model.layers.0.mlp.gate_proj.weight_scale"
    folder = edit(ct_copy(ct_checkpoints, "w4-asym", tmp_path), lambda t: t[name].__setitem__((slice(0, 2), 1), np.nan))
    assert codes(folder) == [("scale_nan", name, 2)]


def test_inf_input_scale(ct_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    name = "model.layers.1.self_attn.v_proj.input_scale"
    folder = edit(ct_copy(ct_checkpoints, "fp8-static", tmp_path), lambda t: t[name].__setitem__(0, np.inf))
    found = diagnose(folder).findings
    assert [(f.code, f.tensor, f.count) for f in found] == [("scale_inf", name, 1)]
    assert found[0].message.startswith("1 of 1 scales are infinite")


def test_awq_zero_scale(tmp_path: Path) -> None:
    name = "model.layers.0.self_attn.k_proj.scales"
    folder = edit(awq_checkpoint(tmp_path / "ckpt"), lambda t: t[name].__setitem__((1, 7), 0))
    assert codes(folder) == [("scale_zero", name, 1)]


# --------------------------------------------------------------------------- group size and shapes
def test_group_size_that_does_not_divide(tmp_path: Path) -> None:
    found = diagnose(gptq_checkpoint(tmp_path / "ckpt", group_size=48)).findings
    assert {f.code for f in found} == {"group_size_indivisible"}  # packed consistently: shapes agree
    assert len(found) == N_LAYERS
    down = next(f for f in found if f.tensor == "model.layers.0.mlp.down_proj")
    assert down.count == INTER
    assert f"group_size 48 does not divide in_features {INTER}" in down.message


def test_truncated_gptq_qweight(tmp_path: Path) -> None:
    name = "model.layers.1.self_attn.o_proj.qweight"
    folder = edit(gptq_checkpoint(tmp_path / "ckpt"), lambda t: t.update({name: t[name][:4]}))
    found = diagnose(folder).findings
    assert [(f.code, f.tensor) for f in found] == [("shape_mismatch", name)]
    assert "shape [4, 64], expected [8, 64]" in found[0].message and "in_features 64" in found[0].message


def test_truncated_awq_qweight(tmp_path: Path) -> None:
    name = "model.layers.0.mlp.down_proj.qweight"
    folder = edit(awq_checkpoint(tmp_path / "ckpt"), lambda t: t.update({name: t[name][:, :4]}))
    found = diagnose(folder).findings
    assert [(f.code, f.tensor) for f in found] == [("shape_mismatch", name)]
    assert "shape [128, 4], expected [128, 8]" in found[0].message


def test_truncated_weight_packed_and_lying_weight_shape(ct_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    packed = "model.layers.0.mlp.up_proj.weight_packed"
    shape = "model.layers.1.mlp.up_proj.weight_shape"

    def change(t: Tensors) -> None:
        t[packed] = t[packed][:, :6]
        t[shape] = np.array([INTER, 96])

    found = diagnose(edit(ct_copy(ct_checkpoints, "w4-asym", tmp_path), change)).findings
    assert [(f.code, f.tensor) for f in found] == [("shape_mismatch", packed), ("shape_mismatch", shape)]
    assert "says [128, 96], but the layer is [128, 64]" in found[1].message


def test_gptq_scales_missing(tmp_path: Path) -> None:
    name = "model.layers.0.self_attn.v_proj.scales"
    folder = edit(gptq_checkpoint(tmp_path / "ckpt"), lambda t: t.pop(name))
    assert codes(folder) == [("tensor_missing", name, None)]


# --------------------------------------------------------------------------- quantized layers vs the config
def gptq_as_float(t: Tensors, module: str) -> None:
    for p in ("qweight", "qzeros", "scales", "g_idx"):
        t.pop(f"{module}.{p}")
    t[f"{module}.weight"] = np.zeros(LINEARS[module.split(".", 3)[-1]], np.float16)


def test_quantized_layer_stored_as_float(tmp_path: Path) -> None:
    module = "model.layers.0.mlp.up_proj"
    folder = edit(gptq_checkpoint(tmp_path / "ckpt"), lambda t: gptq_as_float(t, module))
    found = diagnose(folder).findings
    assert [(f.code, f.tensor) for f in found] == [("layer_not_quantized", f"{module}.weight")]
    assert "stored as a float F16 weight [128, 64]" in found[0].message


def test_float_layers_in_modules_to_not_convert_are_fine(tmp_path: Path) -> None:
    def change(t: Tensors) -> None:
        for i in range(LAYERS):
            gptq_as_float(t, f"model.layers.{i}.mlp.up_proj")

    folder = gptq_checkpoint(tmp_path / "ckpt", modules_to_not_convert=["up_proj"])
    assert codes(edit(folder, change)) == []


def test_compressed_tensors_layer_stored_as_float(ct_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    module = "model.layers.1.self_attn.k_proj"

    def change(t: Tensors) -> None:
        for p in ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point"):
            t.pop(f"{module}.{p}")
        t[f"{module}.weight"] = np.zeros((KV_HEADS * HEAD_DIM, HIDDEN), np.float32)

    found = codes(edit(ct_copy(ct_checkpoints, "w4-asym", tmp_path), change))
    assert found == [("layer_not_quantized", f"{module}.weight", None)]


def test_qweight_on_a_layer_the_config_does_not_convert(tmp_path: Path) -> None:
    folder = gptq_checkpoint(tmp_path / "ckpt", modules_to_not_convert=["model.layers.1.mlp.down_proj"])
    found = diagnose(folder).findings
    assert [(f.code, f.tensor) for f in found] == [
        ("layer_unexpectedly_quantized", "model.layers.1.mlp.down_proj.qweight")
    ]
    assert "modules_to_not_convert has 'model.layers.1.mlp.down_proj'" in found[0].message


def test_gptq_dynamic_rule_that_skips_a_layer(tmp_path: Path) -> None:
    down = "model.layers.1.mlp.down_proj"
    folder = gptq_checkpoint(tmp_path / "ckpt", dynamic={r"-:.*\.1\.mlp\.down_proj": {}})
    found = diagnose(folder).findings
    assert [(f.code, f.tensor) for f in found] == [("layer_unexpectedly_quantized", f"{down}.qweight")]
    assert "dynamic rule" in found[0].message
    assert codes(edit(folder, lambda t: gptq_as_float(t, down))) == []


def test_packed_lm_head_that_compressed_tensors_ignores(ct_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    def change(t: Tensors) -> None:
        w = t.pop("lm_head.weight")
        t["lm_head.weight_packed"] = np.zeros((w.shape[0], HIDDEN // 8), np.int32)
        t["lm_head.weight_scale"] = np.ones((w.shape[0], 2), np.float32)
        t["lm_head.weight_shape"] = np.array(w.shape)

    found = diagnose(edit(ct_copy(ct_checkpoints, "w4-sym", tmp_path), change)).findings
    assert [(f.code, f.tensor) for f in found] == [("layer_unexpectedly_quantized", "lm_head.weight_packed")]
    assert "ignore has 'lm_head'" in found[0].message


# --------------------------------------------------------------------------- sharded checkpoints
def shard(folder: Path) -> None:
    """Split model.safetensors into two shards and a model.safetensors.index.json."""
    tensors = load_torch(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
        file = f"model-0000{i + 1}-of-00002.safetensors"
        save_torch({n: tensors[n] for n in part}, folder / file)
        weight_map.update(dict.fromkeys(part, file))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_sharded_checkpoint(tmp_path: Path) -> None:
    q_proj = "model.layers.1.self_attn.q_proj"  # sorts into the second shard
    folder = gptq_checkpoint(tmp_path / "ckpt", positive={q_proj: 1})
    shard(folder)
    diagnosis = diagnose(folder)
    assert [(f.code, f.tensor) for f in diagnosis.findings] == [("zero_point_overflow", f"{q_proj}.qzeros")]
    assert f"{N_LAYERS} quantized layers in 2 safetensors file(s)" in diagnosis.notes
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(QuantConfigError, match="shard 'model-00002-of-00002.safetensors' does not exist") as err:
        diagnose(folder)
    assert err.value.source == str(folder.resolve() / "model.safetensors.index.json")
    assert err.value.field is not None and err.value.field.startswith("weight_map.")


# --------------------------------------------------------------------------- bad input
def test_no_config_json(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(QuantConfigError, match="no config.json") as err:
        diagnose(tmp_path / "ckpt")
    assert err.value.field == "config.json" and err.value.source == str((tmp_path / "ckpt").resolve())


def test_truncated_safetensors_names_the_file(tmp_path: Path) -> None:
    folder = gptq_checkpoint(tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(QuantConfigError, match="truncated or corrupt") as err:
        diagnose(folder)
    assert err.value.source == str(weights.resolve())


@pytest.mark.parametrize(
    "change,field,problem",
    [
        ({"quant_method": "hqq"}, "quantization_config.quant_method", "unknown quant_method 'hqq'"),
        ({"bits": 5}, "quantization_config.bits", "GPTQ checkpoints pack 2, 3, 4, 8 bits; got 5"),
        ({"bits": "4"}, "quantization_config.bits", "GPTQ checkpoints pack 2, 3, 4, 8 bits; got '4'"),
        ({"checkpoint_format": "marlin"}, "quantization_config.checkpoint_format", "not 'marlin'"),
    ],
)
def test_bad_quantization_config_names_the_field(tmp_path: Path, change: dict, field: str, problem: str) -> None:
    folder = gptq_checkpoint(tmp_path / "ckpt")
    edit(folder, lambda t: None, config=lambda c: c["quantization_config"].update(change))
    with pytest.raises(QuantConfigError) as err:
        diagnose(folder)
    assert err.value.field == field and problem in err.value.detail
    assert str(err.value).startswith(f"{folder.resolve() / 'config.json'}: {field}: ")
