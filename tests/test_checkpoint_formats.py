"""Published checkpoint formats as ``checkpoint:`` schemes: GPTQ (v1 / v2, 2/3/4/8-bit, desc_act),
AWQ GEMM, compressed-tensors (llm-compressor) and GGUF files of the tiny random Llama.

The checkpoints are made here from real tensors: GPTQ packed by :func:`autogptq_pack`, a transcription
of AutoGPTQ's ``QuantLinear.pack`` loop (its 3-bit branch included), AWQ by AutoAWQ's
``WQLinear_GEMM.from_linear`` packing order, GGUF by the ``gguf`` library's own writer and quantizers,
compressed-tensors by llm-compressor. Checked: (a) the dense weights are the format's arithmetic,
exactly, on known grids (GGUF blocks decoded here from their bytes); (b) the dequantized model's logits
are the fake-quantized model's and close to the float model's within the quantization error;
(c) a suite of ``checkpoint:`` schemes runs end to end through the plugin. No test doubles: the one
path that needs gptqmodel on CUDA is a ``gpu`` test that skips here.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from quant_runs import builds, run

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402

from pytest_quant.backends.dequantize import (  # noqa: E402
    FORMAT,
    RECORD,
    dequantize_checkpoint,
    dequantize_gptq,
    is_dequantized,
    unpack_bits,
)
from pytest_quant.backends.doctor import unpack_int32  # noqa: E402
from pytest_quant.backends.models import TINY_SPECIAL_TOKENS, _bytes_to_unicode, build_tiny_llama  # noqa: E402
from pytest_quant.backends.quantize.checkpoint import loading_plan, resolve_checkpoint  # noqa: E402
from pytest_quant.errors import BackendUnavailable, KernelUnavailable, QuantConfigError  # noqa: E402

DATA = Path(__file__).parent / "data"
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
LINEARS += ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
GGUF_TYPES = ("F16", "BF16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "MXFP4")
PROMPT_IDS = [[1, *(3 + b for b in b"The quick brown fox jumps over 12 lazy dogs.")]]


# --------------------------------------------------------------------------- packers (AutoGPTQ / AutoAWQ loops)
def autogptq_pack(intweight: np.ndarray, bits: int) -> np.ndarray:
    """AutoGPTQ ``QuantLinear.pack``: rows of ``intweight`` [n, m] (values < 2**bits) into int32 [n*bits/32, m]."""
    intweight = intweight.astype(np.uint32)
    qweight = np.zeros((intweight.shape[0] // 32 * bits, intweight.shape[1]), dtype=np.uint32)
    i = row = 0
    while row < qweight.shape[0]:
        if bits in (2, 4, 8):
            for j in range(i, i + 32 // bits):
                qweight[row] |= intweight[j] << (bits * (j - i))
            i += 32 // bits
            row += 1
        else:  # bits == 3: 32 values in 3 words, two of them split across words
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i))
            i += 10
            qweight[row] |= intweight[i] << 30
            row += 1
            qweight[row] |= (intweight[i] >> 2) & 1
            i += 1
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i) + 1)
            i += 10
            qweight[row] |= intweight[i] << 31
            row += 1
            qweight[row] |= (intweight[i] >> 1) & 0x3
            i += 1
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i) + 2)
            i += 10
            row += 1
    return qweight.view(np.int32)


def awq_pack(intweight: np.ndarray) -> np.ndarray:
    """AutoAWQ ``WQLinear_GEMM.from_linear``: columns of [n, m] 4-bit values into int32 [n, m/8], in the
    order 0 2 4 6 1 3 5 7."""
    order = (0, 2, 4, 6, 1, 3, 5, 7)
    q = intweight.astype(np.uint32).reshape(intweight.shape[0], -1, 8)
    words = np.zeros(q.shape[:2], np.uint32)
    for i in range(8):
        words |= q[..., order[i]] << (4 * i)
    return words.view(np.int32)


def gptq_layer(
    w: np.ndarray, bits: int, group: int, *, sym: bool, v1: bool, desc_act: bool, seed: int = 0
) -> tuple[dict[str, Any], np.ndarray]:
    """GPTQ's tensors of float weight ``w`` [out, in] (round to nearest on AutoGPTQ's grid, its Quantizer's
    scale and zero rules) and the dense weight they stand for (float64, the format's arithmetic)."""
    out_f, in_f = w.shape
    group = in_f if group == -1 else group
    maxq = (1 << bits) - 1
    g_idx = np.arange(in_f) // group
    if desc_act:  # columns quantized in a permuted order: g_idx maps each original column to its group
        perm = np.random.default_rng(seed).permutation(in_f)
        g_idx = np.empty(in_f, np.int64)
        g_idx[perm] = np.arange(in_f) // group
    groups = in_f // group
    scales, zeros = np.zeros((groups, out_f)), np.zeros((groups, out_f), np.int64)
    for g in range(groups):
        cols = w[:, g_idx == g]
        lo, hi = np.minimum(cols.min(axis=1), 0), np.maximum(cols.max(axis=1), 0)
        if sym:
            hi = np.maximum(-lo, hi)
            lo = -hi
        scale = (hi - lo) / maxq
        scales[g] = scale.astype(np.float16)
        zeros[g] = np.full(out_f, (maxq + 1) // 2) if sym else np.round(-lo / scale)
    s, z = scales[g_idx].T, zeros[g_idx].T  # [out, in]
    q = np.clip(np.round(w / s) + z, 0, maxq).astype(np.int64)
    if v1:
        assert zeros.min() >= 1, "a zero point of 0 wraps in GPTQ v1"
    stored = zeros - 1 if v1 else zeros
    tensors = {
        "qweight": autogptq_pack(q.T, bits),
        "qzeros": autogptq_pack(stored.T.astype(np.uint32) & maxq, bits).T.copy(),
        "scales": scales.astype(np.float16),
        "g_idx": g_idx.astype(np.int32),
    }
    return tensors, (q - z) * s


def awq_layer(w: np.ndarray, group: int) -> tuple[dict[str, Any], np.ndarray]:
    out_f, in_f = w.shape
    g = w.T.reshape(in_f // group, group, out_f)
    lo, hi = np.minimum(g.min(axis=1), 0), np.maximum(g.max(axis=1), 0)
    scales = ((hi - lo) / 15).astype(np.float16).astype(np.float64)
    zeros = np.clip(np.round(-lo / scales), 0, 15).astype(np.int64)
    q = np.clip(np.round(g / scales[:, None]) + zeros[:, None], 0, 15).astype(np.int64).reshape(in_f, out_f)
    dense = ((q - np.repeat(zeros, group, axis=0)) * np.repeat(scales, group, axis=0)).T
    tensors = {"qweight": awq_pack(q), "qzeros": awq_pack(zeros), "scales": scales.astype(np.float16)}
    return tensors, dense


# --------------------------------------------------------------------------- checkpoints of the tiny Llama
@pytest.fixture(scope="module")
def fp_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("fp") / "tiny-llama")


def _linear_names(config: dict[str, Any]) -> list[str]:
    return [f"model.layers.{i}.{name}" for i in range(config["num_hidden_layers"]) for name in LINEARS]


def write_packed(
    fp_model: Path, out: Path, quantization_config: dict[str, Any], make_layer: Any, *, shards: int = 1
) -> tuple[Path, dict[str, np.ndarray]]:
    """A checkpoint of the float model with every decoder Linear packed by ``make_layer(name, w)``; returns it
    and the dense weights it stands for. ``shards`` 2 splits it so that layers' packed tensors straddle files."""
    out.mkdir(parents=True)
    for path in fp_model.iterdir():
        if path.suffix != ".safetensors" and path.name != "config.json":
            shutil.copy2(path, out / path.name)
    config = json.loads((fp_model / "config.json").read_text())
    config["quantization_config"] = quantization_config
    config["dtype"] = "float16"
    (out / "config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.numpy() for k, v in load_file(fp_model / "model.safetensors").items()}
    tensors: dict[str, Any] = {}
    dense: dict[str, np.ndarray] = {}
    for name in _linear_names(config):
        packed, dense[name] = make_layer(name, state.pop(f"{name}.weight").astype(np.float64))
        tensors |= {f"{name}.{k}": v for k, v in packed.items()}
    tensors |= {k: v.astype(np.float16) for k, v in state.items()}
    as_torch = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    if shards == 1:
        save_file(as_torch, str(out / "model.safetensors"))
    else:
        names = sorted(as_torch)
        parts = {f"model-0000{i + 1}-of-00002.safetensors": names[i::2] for i in range(2)}  # interleaved
        for file, part in parts.items():
            save_file({k: as_torch[k] for k in part}, str(out / file))
        weight_map = {k: file for file, part in parts.items() for k in part}
        (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return out, dense


GPTQ_VARIANTS = {  # name: (bits, group, sym, v1, desc_act)
    "gptq-v1-4bit-g32-asym": (4, 32, False, True, False),
    "gptq-v2-4bit-g32-sym-desc": (4, 32, True, False, True),
    "gptq-v1-3bit-g64-asym-desc": (3, 64, False, True, True),
    "gptq-v2-3bit-perchannel-asym": (3, -1, False, False, False),
    "gptq-v1-2bit-g32-sym": (2, 32, True, True, False),
    "gptq-v2-2bit-g32-asym": (2, 32, False, False, False),
    "gptq-v1-8bit-g128-sym-desc": (8, 128, True, True, True),
    "gptq-v2-8bit-perchannel-asym": (8, -1, False, False, False),
}


def gptq_qc(bits: int, group: int, sym: bool, v1: bool, desc_act: bool) -> dict[str, Any]:
    return {
        "quant_method": "gptq",
        "bits": bits,
        "group_size": group,
        "sym": sym,
        "desc_act": desc_act,
        "checkpoint_format": "gptq" if v1 else "gptq_v2",
    }


@pytest.fixture(scope="module")
def gptq_checkpoints(fp_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("gptq")
    out = {}
    for i, (name, (bits, group, sym, v1, desc)) in enumerate(GPTQ_VARIANTS.items()):

        def layer(module: str, w: np.ndarray, bits=bits, group=group, sym=sym, v1=v1, desc=desc) -> Any:
            return gptq_layer(w, bits, group, sym=sym, v1=v1, desc_act=desc, seed=hash(module) % 1000)

        qc = gptq_qc(bits, group, sym, v1, desc)
        out[name] = write_packed(fp_model, root / name, qc, layer, shards=2 if i == 0 else 1)
    return out


@pytest.fixture(scope="module")
def awq_checkpoint(fp_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    qc = {"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": True, "version": "gemm"}
    return write_packed(fp_model, tmp_path_factory.mktemp("awq") / "awq-gemm", qc, lambda m, w: awq_layer(w, 32))


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf reordering of q/k rows for its RoPE (transformers undoes it on load)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(fp_model: Path, path: Path, qtype: str) -> Path:
    """The tiny Llama as a GGUF file (test_gguf.py's writer, with this model's byte-level vocabulary):
    every matrix in ``qtype``, norms F32, untied output."""
    gguf = pytest.importorskip("gguf")
    config = json.loads((fp_model / "config.json").read_text())
    kind = getattr(gguf.GGMLQuantizationType, qtype)
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(config["hidden_size"] // heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    byte_chars = _bytes_to_unicode()
    tokens = [*TINY_SPECIAL_TOKENS, *(byte_chars[b] for b in range(256))]
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))  # no merges: one token per byte, as the model's own tokenizer
    writer.add_token_types([3] * len(TINY_SPECIAL_TOKENS) + [1] * 256)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    names = {"model.embed_tokens.weight": "token_embd", "model.norm.weight": "output_norm", "lm_head.weight": "output"}
    short = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v"}
    short |= {"self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up"}
    short |= {"mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for i in range(config["num_hidden_layers"]):
        names |= {f"model.layers.{i}.{k}.weight": f"blk.{i}.{v}" for k, v in short.items()}
    state = load_file(fp_model / "model.safetensors")
    for hf_name, gguf_name in names.items():
        w = state[hf_name].numpy()
        if gguf_name.endswith("attn_q"):
            w = _permute(w, heads)
        elif gguf_name.endswith("attn_k"):
            w = _permute(w, kv_heads)
        if w.ndim == 1:
            writer.add_tensor(f"{gguf_name}.weight", w.astype(np.float32))
        else:
            writer.add_tensor(f"{gguf_name}.weight", gguf.quants.quantize(w, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def gguf_files(fp_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gguf")
    return {t: write_gguf(fp_model, root / f"tiny-llama.{t}.gguf", t) for t in GGUF_TYPES}


def logits(folder: Path) -> Any:
    from pytest_quant.backends.models import load_causal_lm

    model, _ = load_causal_lm(folder)
    with torch.inference_mode():
        return model(torch.tensor(PROMPT_IDS)).logits[0].double()


# --------------------------------------------------------------------------- (a) the format's arithmetic
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_unpack_bits_reads_autogptqs_packing_and_agrees_with_the_doctor(bits: int) -> None:
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 1 << bits, size=(64, 24))
    words = autogptq_pack(values, bits)
    assert torch.equal(unpack_bits(torch.from_numpy(words), bits, 64, dim=0), torch.from_numpy(values))
    doctor = unpack_int32(words.T, bits, 64).T  # the doctor's NumPy bit stream, along the last axis
    assert np.array_equal(doctor, values)


@pytest.mark.parametrize("v1", [True, False], ids=["v1", "v2"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group", [32, -1], ids=["g32", "per-channel"])
def test_gptq_dense_weight_is_scale_times_code_minus_zero_on_a_known_grid(bits: int, group: int, v1: bool) -> None:
    """Random codes, zero points, fp16 scales and a permuted g_idx (desc_act): w = s[g] * (q - z[g]) exactly."""
    rng = np.random.default_rng(bits * 10 + v1)
    in_f, out_f, maxq = 128, 64, (1 << bits) - 1
    groups = 1 if group == -1 else in_f // group
    q = rng.integers(0, maxq + 1, size=(in_f, out_f))
    z = rng.integers(1 if v1 else 0, maxq + 1, size=(groups, out_f))  # v1 cannot store a zero point of 0
    s = (rng.random((groups, out_f)) * 0.1 + 1e-3).astype(np.float16)
    g_idx = rng.permutation(np.arange(in_f) % groups if group != -1 else np.zeros(in_f, np.int64))
    stored = (z - 1) if v1 else z
    dense = dequantize_gptq(
        torch.from_numpy(autogptq_pack(q, bits)),
        torch.from_numpy(autogptq_pack(stored.T, bits).T.copy()),
        torch.from_numpy(s),
        torch.from_numpy(g_idx.astype(np.int32)),
        bits=bits,
        group_size=group,
        v1=v1,
    )
    want = (s.astype(np.float64)[g_idx] * (q - z[g_idx])).T
    assert dense.dtype == torch.float32 and dense.shape == (out_f, in_f)
    assert np.array_equal(dense.numpy().astype(np.float64), want)
    # without g_idx, group i // group_size: the same grid in order
    ordered = np.arange(in_f) // (in_f if group == -1 else group)
    plain = dequantize_gptq(
        torch.from_numpy(autogptq_pack(q, bits)),
        torch.from_numpy(autogptq_pack(stored.T, bits).T.copy()),
        torch.from_numpy(s),
        None,
        bits=bits,
        group_size=group,
        v1=v1,
    )
    assert np.array_equal(plain.numpy().astype(np.float64), (s.astype(np.float64)[ordered] * (q - z[ordered])).T)


def test_gptq_v1_reads_a_wrapped_zero_point_as_the_kernels_do() -> None:
    """v1 zero = stored + 1, unmasked: a stored 2**bits - 1 (AutoGPTQ's wrapped zero point 0) reads 2**bits."""
    q = np.full((32, 32), 3)
    wrapped = np.full((32, 1), 15)
    dense = dequantize_gptq(
        torch.from_numpy(autogptq_pack(q, 4)),
        torch.from_numpy(autogptq_pack(wrapped, 4).T.copy()),
        torch.ones(1, 32, dtype=torch.float16),
        None,
        bits=4,
        group_size=-1,
        v1=True,
    )
    assert torch.all(dense == 3 - 16)


@pytest.mark.parametrize("name", list(GPTQ_VARIANTS))
def test_gptq_checkpoint_dequantizes_to_its_arithmetic_and_loads(name: str, gptq_checkpoints, fp_model, tmp_path):
    checkpoint, dense = gptq_checkpoints[name]
    bits, group, *_ = GPTQ_VARIANTS[name]
    out = tmp_path / "dense"
    record = dequantize_checkpoint(checkpoint, out, fingerprint="abc")
    assert is_dequantized(out) and record["format"] == FORMAT and record["dequantized_by"] == "pytest-quant"
    assert record["source"] == str(checkpoint) and record["source_fingerprint"] == "abc" and record["layers"] == 14
    assert record["how"].startswith(f"dequantized by pytest-quant from gptq v{1 if 'v1' in name else 2} {bits}-bit")
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float16"
    state: dict[str, Any] = {}
    for shard in out.glob("*.safetensors"):
        state |= load_file(shard)
    assert (out / "model.safetensors.index.json").is_file() == (len(list(out.glob("*.safetensors"))) > 1)
    assert not [k for k in state if k.endswith(("qweight", "qzeros", "scales", "g_idx"))]
    for module, want in dense.items():
        assert np.array_equal(state[f"{module}.weight"].numpy().astype(np.float64), want), module
    got = logits(out)
    assert got.isfinite().all() and {p.name for p in fp_model.iterdir()} - {p.name for p in out.iterdir()} <= {
        "model.safetensors"
    }


def test_awq_gemm_checkpoint_dequantizes_to_its_arithmetic(awq_checkpoint, tmp_path) -> None:
    checkpoint, dense = awq_checkpoint
    record = dequantize_checkpoint(checkpoint, tmp_path / "dense")
    assert record["how"] == "dequantized by pytest-quant from awq gemm 4-bit g32"
    state = load_file(tmp_path / "dense" / "model.safetensors")
    for module, want in dense.items():
        assert np.array_equal(state[f"{module}.weight"].numpy().astype(np.float64), want), module


def _decode_block(kind: str, block: bytes) -> np.ndarray:
    """One GGUF block of 32 weights decoded from its bytes (ggml's layouts), for the types written here."""
    half = np.frombuffer(block, np.float16).astype(np.float64)
    if kind == "Q8_0":  # d, 32 x int8
        return half[0] * np.frombuffer(block[2:], np.int8)
    low_high = lambda qs: np.concatenate([qs & 0xF, qs >> 4]).astype(np.int64)  # noqa: E731
    if kind == "Q4_0":  # d, 16 bytes of nibbles (low: weights 0..15, high: 16..31); w = d * (q - 8)
        return half[0] * (low_high(np.frombuffer(block[2:], np.uint8)) - 8)
    if kind == "Q4_1":  # d, m, nibbles; w = d * q + m
        return half[0] * low_high(np.frombuffer(block[4:], np.uint8)) + half[1]
    start = 2 if kind == "Q5_0" else 4
    qh = int.from_bytes(block[start : start + 4], "little")
    q = low_high(np.frombuffer(block[start + 4 :], np.uint8)) | (((qh >> np.arange(32)) & 1) << 4)
    return half[0] * (q - 16) if kind == "Q5_0" else half[0] * q + half[1]


@pytest.mark.parametrize("kind", ["Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "F16"])
def test_gguf_checkpoint_weights_are_the_blocks_arithmetic(kind: str, gguf_files, tmp_path) -> None:
    gguf = pytest.importorskip("gguf")
    from pytest_quant.backends.gguf import convert_gguf

    folder = convert_gguf(gguf_files[kind], tmp_path / "hf")
    state = load_file(folder / "model.safetensors")
    tensors = {t.name: t for t in gguf.GGUFReader(gguf_files[kind]).tensors}
    for gguf_name, hf_name in (("blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"),
                               ("output.weight", "lm_head.weight")):  # fmt: skip
        t = tensors[gguf_name]
        raw = np.asarray(t.data)
        rows = raw.shape[0]
        if kind == "F16":
            want = raw.astype(np.float64)
        else:
            flat = raw.reshape(rows, -1).tobytes()
            size = len(flat) // rows // (t.shape[0] // 32)  # bytes per block
            blocks = [flat[i : i + size] for i in range(0, len(flat), size)]
            want = np.concatenate([_decode_block(kind, b) for b in blocks]).reshape(rows, -1)
        assert np.array_equal(state[hf_name].numpy().astype(np.float64), want), (kind, hf_name)


# --------------------------------------------------------------------------- (b) close to the float model
def test_dequantized_logits_are_the_fake_quantized_model_and_the_error_shrinks_with_bits(
    gptq_checkpoints, awq_checkpoint, fp_model, tmp_path
) -> None:
    from transformers import AutoModelForCausalLM

    reference = logits(fp_model)
    errors: dict[str, float] = {}
    for name, (checkpoint, dense) in {**gptq_checkpoints, "awq": awq_checkpoint}.items():
        out = dequantize_checkpoint(checkpoint, tmp_path / name) and tmp_path / name
        got = logits(out)
        # the float model with the packer's dense weights put in: the same function
        model = AutoModelForCausalLM.from_pretrained(fp_model, dtype=torch.float32).eval()
        with torch.no_grad():
            for param in model.parameters():  # the checkpoint stores the other tensors in float16
                param.copy_(param.half().float())
            for module, w in dense.items():
                model.get_submodule(module).weight.copy_(torch.from_numpy(w))
            want = model(torch.tensor(PROMPT_IDS)).logits[0].double()
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-4), name
        errors[name] = float((got - reference).norm() / reference.norm())
    assert errors["gptq-v2-8bit-perchannel-asym"] < 0.02 and errors["gptq-v1-8bit-g128-sym-desc"] < 0.02
    assert errors["gptq-v1-4bit-g32-asym"] < 0.15 and errors["awq"] < 0.15
    assert errors["gptq-v1-8bit-g128-sym-desc"] < errors["gptq-v1-4bit-g32-asym"] < errors["gptq-v2-2bit-g32-asym"]
    assert max(errors.values()) < 1.0, errors


@pytest.mark.parametrize("kind", GGUF_TYPES)
def test_gguf_checkpoint_logits_are_close_to_the_float_model(kind: str, gguf_files, fp_model, tmp_path) -> None:
    from pytest_quant.backends.gguf import convert_gguf

    reference = logits(fp_model)
    got = logits(convert_gguf(gguf_files[kind], tmp_path / "hf"))
    error = float((got - reference).norm() / reference.norm())
    bound = {"F16": 1e-3, "BF16": 1e-2, "Q8_0": 0.02, "Q5_1": 0.15, "Q5_0": 0.15}.get(kind, 0.35)  # ~ 2**-bits
    assert error < bound, (kind, error)


# --------------------------------------------------------------------------- how each format is loaded
def test_loading_plan_per_format_and_device(gptq_checkpoints, awq_checkpoint, gguf_files, fp_model) -> None:
    kernels = importlib.util.find_spec("gptqmodel") is not None
    gptq, _ = gptq_checkpoints["gptq-v1-4bit-g32-asym"]
    plan = loading_plan(gptq, "cpu")
    assert (plan.kind, plan.how) == ("dequantize", "dequantized by pytest-quant from gptq v1 4-bit g32 asym")
    assert loading_plan(gptq, "cuda").kind == ("as is" if kernels else "dequantize")
    assert loading_plan(gptq, None).kind == "as is"  # its own files: what it takes deployed
    assert loading_plan(awq_checkpoint[0], "cpu").how == "dequantized by pytest-quant from awq gemm 4-bit g32"
    assert loading_plan(fp_model, "cpu").how == "as is"
    assert loading_plan(resolve_checkpoint(gguf_files["Q4_0"]), "cpu").kind == "gguf"


@pytest.mark.parametrize(("method", "package"), [("exl2", "exllamav2"), ("bitblas", "bitblas")])
def test_cuda_only_formats_say_what_they_need(method: str, package: str, fp_model, tmp_path) -> None:
    folder = tmp_path / method
    shutil.copytree(fp_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": method, "bits": 4}
    (folder / "config.json").write_text(json.dumps(config))
    assert resolve_checkpoint(folder, "suite.yaml") == folder.resolve()  # a valid checkpoint, only not here
    installed = importlib.util.find_spec(package) is not None
    with pytest.raises(BackendUnavailable, match=f"needs CUDA and the {package} package") as info:
        loading_plan(folder, "cpu")
    assert isinstance(info.value, KernelUnavailable) == installed


def test_bad_gptq_config_names_the_field(gptq_checkpoints, tmp_path) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(gptq_checkpoints["gptq-v1-4bit-g32-asym"][0], folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"]["bits"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(QuantConfigError, match="pack 2, 3, 4, 8 bits; got 5") as info:
        loading_plan(folder, "cpu")
    assert info.value.field == "quantization_config.bits" and str(folder) in str(info.value)
    not_gguf = tmp_path / "fake.gguf"
    not_gguf.write_bytes(b"nope")
    with pytest.raises(QuantConfigError, match="is not a GGUF file"):
        resolve_checkpoint(not_gguf, "suite.yaml")


# --------------------------------------------------------------------------- (c) end to end through the plugin
@pytest.fixture(scope="module")
def compressed_tensors_checkpoint(fp_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A W4A16 g32 compressed-tensors checkpoint made by llm-compressor (round to nearest)."""
    pytest.importorskip("llmcompressor")
    from pytest_quant.backends import get_quantizer
    from pytest_quant.config import SchemeConfig

    scheme = SchemeConfig(name="ct", method="rtn", backend="llmcompressor", weights={"bits": 4, "group_size": 32})  # type: ignore[arg-type]
    out = tmp_path_factory.mktemp("ct") / "w4a16"
    get_quantizer("llmcompressor").quantize(fp_model, scheme, out)
    return out


@pytest.mark.slow
def test_suite_of_checkpoint_schemes_runs_end_to_end(
    pytester: pytest.Pytester,
    tmp_path,
    fp_model,
    gptq_checkpoints,
    awq_checkpoint,
    gguf_files,
    compressed_tensors_checkpoint,
) -> None:
    picks = {
        "gptq-v1-4bit": gptq_checkpoints["gptq-v1-4bit-g32-asym"][0],
        "gptq-v1-3bit-desc": gptq_checkpoints["gptq-v1-3bit-g64-asym-desc"][0],
        "gptq-v1-8bit": gptq_checkpoints["gptq-v1-8bit-g128-sym-desc"][0],
        "awq-gemm": awq_checkpoint[0],
        "ct-w4a16": compressed_tensors_checkpoint,
    }
    # GGUF checkpoints are judged against the F16 GGUF of the same model: transformers' GGUF tokenizer
    # ignores tokenizer.ggml.add_bos_token, so against the HF folder (which adds BOS) the items differ
    ggufs = {f"gguf-{kind.lower()}": gguf_files[kind] for kind in ("Q8_0", "Q5_1", "Q4_0", "MXFP4")}
    corpus = f"{{perplexity: {DATA / 'corpus.txt'}, seq_len: 64, max_tokens: 512}}"

    def suite(model: Path, schemes: dict[str, Path], extra: str = "") -> str:
        lines = "\n".join(f"  {name}: {{checkpoint: {path}}}" for name, path in schemes.items())
        return (
            f"model: {model}\nschemes:\n{lines}\ntasks:\n  corpus: {corpus}\n{extra}budgets:\n"
            f"  - {{name: loose, schemes: [{', '.join(schemes)}], tasks: [corpus], max_drop: 90%, mode: point}}\n"
        )

    arith = f"  arith: {{task: pq_arith, include_path: {DATA / 'tasks'}, limit: 8}}\n"
    hf_suite = suite(fp_model, picks, arith) + (
        "  - {name: arith, schemes: [gptq-v1-4bit], tasks: [arith], max_drop: 99pp, mode: point}\n"
    )
    pytester.makefile(".quant.yaml", formats=hf_suite, gguf_formats=suite(gguf_files["F16"], ggufs))
    cache, report = tmp_path / "cache", pytester.path / "report.json"
    result = run(pytester, cache, "--quant-update-baselines", f"--quant-report={report}")
    outcomes = result.parseoutcomes()
    budgets = len(picks) + 1 + len(ggufs)
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()
    assert outcomes["passed"] >= budgets  # and the checkpoint doctor's items of each folder
    rows = {(r["scheme"], r["task"]): r for r in json.loads(report.read_text())["items"] if r.get("task")}
    loaded = {scheme: r.get("checkpoint_loading") for (scheme, _), r in rows.items()}
    assert loaded["gptq-v1-4bit"] == "dequantized by pytest-quant from gptq v1 4-bit g32 asym"
    assert loaded["gptq-v1-3bit-desc"] == "dequantized by pytest-quant from gptq v1 3-bit g64 asym desc_act"
    assert loaded["gptq-v1-8bit"] == "dequantized by pytest-quant from gptq v1 8-bit g128 sym desc_act"
    assert loaded["awq-gemm"] == "dequantized by pytest-quant from awq gemm 4-bit g32"
    assert loaded["ct-w4a16"] == "as is"
    assert all(str(loaded[name]).startswith("converted from GGUF") for name in ggufs)
    assert all(rows[(name, "corpus")]["verdict"] == "pass" for name in [*picks, *ggufs])
    result.stdout.fnmatch_lines_random(
        [
            "*checkpoint gptq-v1-4bit: loaded dequantized by pytest-quant from gptq v1 4-bit g32 asym*",
            "*checkpoint gguf-q4_0: loaded converted from GGUF*",
            "*checkpoint ct-w4a16: loaded as is*",
            "gptq-v1-3bit-desc *corpus*perplexity*pass*",
            "gguf-mxfp4 *corpus*perplexity*pass*",
        ]
    )
    folders = [p for p in (cache / "artifacts").iterdir() if p.name.startswith("dequantized-")]
    assert len(folders) == 4 and all(json.loads((f / RECORD).read_text())["format"] == FORMAT for f in folders)
    assert len(builds(cache, "artifact")) == 4  # each GPTQ/AWQ checkpoint dequantized once (arith reuses one)

    # a second session reuses the dense folders and the results
    again = run(pytester, cache, f"--quant-report={report}")
    assert again.parseoutcomes()["passed"] == outcomes["passed"]
    assert len(builds(cache, "artifact")) == 4


# --------------------------------------------------------------------------- GPU: as is through gptqmodel
@pytest.mark.gpu
def test_gptq_as_is_through_gptqmodel_agrees_with_the_dequantized_path(gptq_checkpoints, tmp_path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    pytest.importorskip("gptqmodel")
    from pytest_quant.backends.models import load_causal_lm

    checkpoint, _ = gptq_checkpoints["gptq-v2-4bit-g32-sym-desc"]
    assert loading_plan(checkpoint, "cuda").kind == "as is"
    model, _ = load_causal_lm(checkpoint, device="cuda", dtype="float16")
    assert any("QuantLinear" in type(m).__name__ for m in model.modules())  # gptqmodel's kernels, not dense
    with torch.inference_mode():
        as_is = model(torch.tensor(PROMPT_IDS, device="cuda")).logits[0].double().cpu()
    dequantize_checkpoint(checkpoint, tmp_path / "dense")
    model, _ = load_causal_lm(tmp_path / "dense", device="cuda", dtype="float16")
    with torch.inference_mode():
        dense = model(torch.tensor(PROMPT_IDS, device="cuda")).logits[0].double().cpu()
    assert float((as_is - dense).norm() / dense.norm()) < 1e-2
