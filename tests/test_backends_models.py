"""Model resolution, the tiny test model, fingerprints, the group-size check,
calibration batches and checkpoint validation — real transformers, no mocks."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pytest_quant.backends.calibration import (  # noqa: E402
    builtin_corpus,
    calibration_dataset,
    calibration_windows,
    corpus_fingerprint,
)
from pytest_quant.backends.models import (  # noqa: E402
    MODEL_REGISTRY,
    build_tiny_llama,
    byte_level_tokenizer,
    validate_scheme_fits,
    linear_layer_shapes,
    load_causal_lm,
    model_fingerprint,
    resolve_model,
)
from pytest_quant.backends.quantize.checkpoint import resolve_checkpoint  # noqa: E402
from pytest_quant.config import CalibrationConfig, ModelConfig, SchemeConfig  # noqa: E402
from pytest_quant.errors import QuantConfigError  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


# --------------------------------------------------------------------------- tiny model
def test_tiny_llama_is_a_saved_hf_folder(tiny_model: Path) -> None:
    names = {p.name for p in tiny_model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    model, tok = load_causal_lm(tiny_model)
    assert model.dtype == torch.float32
    enc = tok("Hello, wörld", return_tensors="pt")
    assert enc["input_ids"][0, 0].item() == tok.bos_token_id
    logits = model(**enc).logits
    assert torch.isfinite(logits).all()
    # unit-variance init: predictions are far from uniform, so quantization shows
    assert logits[0, -1].softmax(-1).max() > 3.0 / model.config.vocab_size


def test_tiny_llama_is_deterministic_per_seed(tmp_path: Path, tiny_model: Path) -> None:
    again = build_tiny_llama(tmp_path / "again")
    other = build_tiny_llama(tmp_path / "other", seed=1)
    assert model_fingerprint(again) == model_fingerprint(tiny_model)
    assert model_fingerprint(other) != model_fingerprint(tiny_model)


def test_tiny_llama_linear_in_dims_fit_groups_of_64_and_32(tiny_model: Path) -> None:
    shapes = linear_layer_shapes(tiny_model)
    assert "model.layers.0.self_attn.q_proj" in shapes and "lm_head" in shapes
    assert shapes["model.layers.0.mlp.down_proj"] == (128, 256)  # (out_features, in_features)
    for name, (_, in_features) in shapes.items():
        assert in_features % 64 == 0, name


def test_byte_level_tokenizer_round_trips_any_text() -> None:
    tok = byte_level_tokenizer()
    text = "naïve café — 数字 ✓\n\ttabs"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode("utf-8"))
    assert ids == [3 + b for b in text.encode("utf-8")]
    assert tok.decode(ids) == text
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)


# --------------------------------------------------------------------------- resolution
def test_registry_builds_tiny_model_once_into_the_cache(tmp_path: Path) -> None:
    assert "tiny-llama-test" in MODEL_REGISTRY and "smollm2-135m-instruct" in MODEL_REGISTRY
    first = resolve_model(ModelConfig(name="tiny-llama-test"), tmp_path)
    assert first.path.is_relative_to(tmp_path) and first.display == "tiny-llama-test"
    mtime = (first.path / "model.safetensors").stat().st_mtime_ns
    second = resolve_model(ModelConfig(name="tiny-llama-test"), tmp_path)
    assert second == first
    assert (second.path / "model.safetensors").stat().st_mtime_ns == mtime  # not rebuilt


def test_local_folder_is_used_as_is(tmp_path: Path, tiny_model: Path) -> None:
    resolved = resolve_model(ModelConfig(name="mine", path=str(tiny_model)), tmp_path)
    assert resolved.path == tiny_model.resolve()
    assert resolved.fingerprint == model_fingerprint(tiny_model)


def test_missing_local_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(QuantConfigError, match="model folder './no/such/dir' does not exist"):
        resolve_model(ModelConfig(name="x", path="./no/such/dir"), tmp_path)


def test_hub_id_offline_is_a_clear_error_naming_the_model(tmp_path: Path) -> None:
    with pytest.raises(QuantConfigError, match=r"cannot get model 'some-org/not-cached-model' from the Hugging Face hub"):
        resolve_model(ModelConfig(name="some-org/not-cached-model"), tmp_path)
    with pytest.raises(QuantConfigError, match="did you mean the registered model 'tiny-llama-test'"):
        resolve_model(ModelConfig(name="tiny-lama-test"), tmp_path)


def test_missing_gguf_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(QuantConfigError, match="GGUF file .*missing.gguf.* does not exist"):
        resolve_model(ModelConfig(name="m", path=str(tmp_path / "missing.gguf")), tmp_path)


# --------------------------------------------------------------------------- fingerprints
def test_fingerprint_covers_weights_and_config_not_save_metadata(tmp_path: Path, tiny_model: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    base = model_fingerprint(copy)
    config = json.loads((copy / "config.json").read_text())
    config["transformers_version"] = "0.0.1"  # who saved it: not part of the identity
    (copy / "config.json").write_text(json.dumps(config, indent=4))
    assert model_fingerprint(copy) == base
    config["rms_norm_eps"] = 1e-6
    (copy / "config.json").write_text(json.dumps(config))
    assert model_fingerprint(copy) != base
    config["rms_norm_eps"] = 1e-5
    (copy / "config.json").write_text(json.dumps(config))
    with open(copy / "model.safetensors", "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\x01\x02\x03\x04")
    assert model_fingerprint(copy) != base


def test_fingerprint_memo_skips_rehashing_unchanged_files(tmp_path: Path, tiny_model: Path) -> None:
    cache = tmp_path / "cache"
    fp = model_fingerprint(tiny_model, cache)
    memo = json.loads((cache / "fingerprints.json").read_text())
    weights = str((tiny_model / "model.safetensors").resolve())
    assert weights in memo
    # A memo entry whose (size, mtime) still match is trusted: poison it and see it used.
    memo[weights]["sha256"] = "0" * 64
    (cache / "fingerprints.json").write_text(json.dumps(memo))
    assert model_fingerprint(tiny_model, cache) != fp
    assert model_fingerprint(tiny_model) == fp  # without the memo: hashed again


# --------------------------------------------------------------------------- group-size check
def test_group_size_check_names_scheme_layer_in_features_and_group(tmp_path: Path) -> None:
    odd = build_tiny_llama(tmp_path / "odd", intermediate_size=96)  # down_proj in_features 96
    scheme = SchemeConfig(name="w4g64", method="gptq", weights={"group_size": 64}, calibration={})
    with pytest.raises(QuantConfigError) as info:
        validate_scheme_fits(scheme, odd, source="suite.yaml")
    msg = str(info.value)
    assert msg.startswith("suite.yaml")
    for part in ("'w4g64'", "'model.layers.0.mlp.down_proj'", "in_features 96", "group_size 64"):
        assert part in msg
    assert info.value.field == "schemes.w4g64.weights.group_size"
    # ignoring the offending layers makes it fit; per-channel always fits
    validate_scheme_fits(scheme.model_copy(update={"ignore": ("lm_head", "re:.*down_proj")}), odd)
    validate_scheme_fits(SchemeConfig(name="pc", method="rtn", weights={"bits": 4}), odd)


def test_group_size_check_skips_ignored_lm_head(tmp_path: Path) -> None:
    # hidden 192: every Linear in-dim is 192 or 256; only groups of 64 fit, 128 does not
    model = build_tiny_llama(tmp_path / "h192", hidden_size=192, heads=4, kv_heads=2)
    validate_scheme_fits(SchemeConfig(name="g64", method="gptq", weights={"group_size": 64}, calibration={}), model)
    with pytest.raises(QuantConfigError, match="in_features 192"):
        validate_scheme_fits(SchemeConfig(name="g128", method="gptq", weights={"group_size": 128}, calibration={}), model)


# --------------------------------------------------------------------------- calibration
def test_calibration_windows_are_deterministic_and_seeded(tiny_model: Path) -> None:
    _, tok = load_causal_lm(tiny_model)
    calib = CalibrationConfig(samples=8, seq_len=64, seed=0)
    a = calibration_windows(tok, calib)
    assert a == calibration_windows(tok, calib)
    assert len(a) == 8 and all(len(w) == 64 and w[0] == tok.bos_token_id for w in a)
    assert len({tuple(w) for w in a}) == 8  # distinct, non-overlapping windows
    assert calibration_windows(tok, calib.model_copy(update={"seed": 1})) != a
    ds = calibration_dataset(tok, calib)
    assert ds.column_names == ["input_ids", "attention_mask"] and len(ds) == 8
    assert ds[0]["input_ids"] == a[0] and ds[0]["attention_mask"] == [1] * 64


def test_builtin_corpus_is_stable_text() -> None:
    text = builtin_corpus()
    assert len(text) > 100_000 and text == builtin_corpus()
    calib = CalibrationConfig()
    assert corpus_fingerprint(calib) == corpus_fingerprint(calib) and len(corpus_fingerprint(calib)) == 16


def test_calibration_file_and_errors(tmp_path: Path, tiny_model: Path) -> None:
    _, tok = load_causal_lm(tiny_model)
    corpus = Path(__file__).parent / "data" / "corpus.txt"
    calib = CalibrationConfig(samples=4, seq_len=32, dataset=str(corpus))
    windows = calibration_windows(tok, calib)
    text_bytes = corpus.read_bytes()
    assert bytes(t - 3 for t in windows[0][1:]) in text_bytes  # byte tokens: a real slice of the file
    assert corpus_fingerprint(calib) != corpus_fingerprint(CalibrationConfig())
    with pytest.raises(QuantConfigError, match="calibration file .*nope.txt.* does not exist"):
        calibration_windows(tok, CalibrationConfig(dataset=str(tmp_path / "nope.txt")))
    with pytest.raises(QuantConfigError, match=r"has \d+ tokens: \d+ windows of seq_len 1024, but samples 64"):
        calibration_windows(tok, CalibrationConfig(samples=64, seq_len=1024, dataset=str(corpus)))
    rel = CalibrationConfig(samples=2, seq_len=16, dataset="corpus.txt")
    assert calibration_windows(tok, rel, base_dir=corpus.parent)


# --------------------------------------------------------------------------- checkpoint schemes
def test_resolve_checkpoint_accepts_a_model_folder(tiny_model: Path) -> None:
    assert resolve_checkpoint(tiny_model, "suite.yaml") == tiny_model.resolve()
    assert resolve_checkpoint(tiny_model.name, "suite.yaml", base_dir=tiny_model.parent) == tiny_model.resolve()


def test_resolve_checkpoint_errors_name_the_path(tmp_path: Path, tiny_model: Path) -> None:
    missing = tmp_path / "gone"
    with pytest.raises(QuantConfigError, match=f"checkpoint folder '{missing}' does not exist") as info:
        resolve_checkpoint(missing, "suite.yaml")
    assert (info.value.source, info.value.field) == ("suite.yaml", "checkpoint")
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    shutil.copy(tiny_model / "config.json", no_weights / "config.json")
    with pytest.raises(QuantConfigError, match="has no weights"):
        resolve_checkpoint(no_weights, "suite.yaml")
    (no_weights / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes())
    config = json.loads((no_weights / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "no-such-method"}
    (no_weights / "config.json").write_text(json.dumps(config))
    with pytest.raises(QuantConfigError, match="cannot load quant_method 'no-such-method'"):
        resolve_checkpoint(no_weights, "suite.yaml")
    (no_weights / "config.json").unlink()
    with pytest.raises(QuantConfigError, match="has no config.json"):
        resolve_checkpoint(no_weights, "suite.yaml")
