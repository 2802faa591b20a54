"""Every scheme quantizes the tiny model for real (reference RTN, llm-compressor
RTN / GPTQ / AWQ / SmoothQuant / FP8 dynamic / FP8 static), the checkpoint
reloads and evaluates with lm-eval, and the same scheme twice gives the same
weights. No mocks: real llm-compressor, compressed-tensors and lm-eval."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("llmcompressor")
pytest.importorskip("lm_eval")

from safetensors.torch import load_file  # noqa: E402

from pytest_quant.backends import get_evaluator, get_quantizer  # noqa: E402
from pytest_quant.backends.models import build_tiny_llama, clear_model_cache, load_causal_lm  # noqa: E402
from pytest_quant.backends.quantize.checkpoint import resolve_checkpoint  # noqa: E402
from pytest_quant.config import EvaluationConfig, SchemeConfig, TaskConfig  # noqa: E402
from pytest_quant.errors import QuantConfigError  # noqa: E402

TASKS = Path(__file__).parent / "data" / "tasks"
CALIB = {"samples": 8, "seq_len": 64}

SCHEMES: dict[str, dict] = {
    "rtn-reference": {"method": "rtn", "weights": {"bits": 4, "group_size": 64}},
    "rtn-llmcompressor": {"method": "rtn", "backend": "llmcompressor", "weights": {"bits": 4, "group_size": 64}},
    "gptq": {"method": "gptq", "weights": {"group_size": 64}, "calibration": CALIB},
    "awq": {"method": "awq", "weights": {"group_size": 64}, "calibration": CALIB},
    "smoothquant": {"method": "smoothquant", "calibration": CALIB},
    "smoothquant-rtn": {"method": "smoothquant", "weight_rounding": "rtn", "calibration": CALIB},
    "fp8-dynamic": {"method": "fp8"},
    "fp8-static": {"method": "fp8", "activations": {"type": "float", "dynamic": False}, "calibration": CALIB},
}
# compressed-tensors storage of layers.0.mlp.down_proj (out 128, in 256) per scheme
STORAGE = {
    "rtn-llmcompressor": ("pack-quantized", {"weight_packed": torch.int32, "weight_scale": torch.float32}),
    "gptq": ("pack-quantized", {"weight_packed": torch.int32, "weight_scale": torch.float32}),
    "awq": ("pack-quantized", {"weight_packed": torch.int32, "weight_zero_point": torch.int32}),
    "smoothquant": ("int-quantized", {"weight": torch.int8, "weight_scale": torch.float32}),
    "smoothquant-rtn": ("int-quantized", {"weight": torch.int8, "weight_scale": torch.float32}),
    "fp8-dynamic": ("float-quantized", {"weight": torch.float8_e4m3fn, "weight_scale": torch.float32}),
    "fp8-static": ("float-quantized", {"weight": torch.float8_e4m3fn, "input_scale": torch.float32}),
}
SLOW = {"awq", "smoothquant", "smoothquant-rtn", "gptq", "fp8-static"}


def scheme(name: str) -> SchemeConfig:
    return SchemeConfig(name=name, **SCHEMES[name])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="module")
def quantized(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``quantized(name)``: the tiny model quantized with ``SCHEMES[name]``, once per module."""
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            s = scheme(name)
            out = tmp_path_factory.mktemp(name) / "model"
            get_quantizer(s.backend).quantize(tiny_model, s, out)
            done[name] = out
        return done[name]

    return get


def _params(names: list[str]) -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


@pytest.mark.parametrize("name", _params(list(SCHEMES)))
def test_scheme_quantizes_reloads_and_evaluates(name: str, quantized: Callable[[str], Path]) -> None:
    out = quantized(name)
    s = scheme(name)
    record = json.loads((out / "pytest_quant_scheme.json").read_text())
    assert record["backend"] == s.backend and record["scheme"] == s.fingerprint_payload()
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    if s.backend == "llmcompressor":
        qc = config["quantization_config"]
        fmt, tensors = STORAGE[name]
        assert qc["quant_method"] == "compressed-tensors" and qc["format"] == fmt
        assert qc["ignore"] == ["lm_head"]
        stored = load_file(out / "model.safetensors")
        for suffix, dtype in tensors.items():
            assert stored[f"model.layers.0.mlp.down_proj.{suffix}"].dtype == dtype, suffix
        assert stored["lm_head.weight"].dtype == torch.float32  # ignored: left dense
    else:
        assert "quantization_config" not in config

    assert resolve_checkpoint(out, "suite.yaml") == out.resolve()  # usable as a `checkpoint:` scheme
    model, tok = load_causal_lm(out)
    with torch.inference_mode():
        logits = model(**tok(["Quantization changes the numbers."], return_tensors="pt")).logits
    assert torch.isfinite(logits).all()

    task = TaskConfig(name="arith", task="pq_arith", include_path=str(TASKS), limit=20)
    result = get_evaluator("hf").evaluate(out, task, EvaluationConfig(), seed=0)
    assert result.n == 20 and result.metric == "acc_norm"
    assert math.isclose(result.value, sum(result.scores) / result.n)


def _group_levels(weight: torch.Tensor, group: int | None) -> int:
    w = weight.reshape(weight.shape[0], -1, group) if group else weight.unsqueeze(1)
    return max(len(torch.unique(g)) for row in w for g in row)


@pytest.mark.parametrize(("name", "levels"), [("rtn-reference", 16), ("rtn-llmcompressor", 16), ("gptq", 16)])
def test_loaded_int4_weights_lie_on_a_16_level_grid_per_group(name: str, levels: int, quantized) -> None:
    model, _ = load_causal_lm(quantized(name))
    for layer in (model.model.layers[0].mlp.down_proj, model.model.layers[1].self_attn.q_proj):
        assert _group_levels(layer.weight.detach(), 64) <= levels
    assert _group_levels(model.lm_head.weight.detach(), 64) > levels  # ignored


def test_reference_rtn_agrees_with_llmcompressor_rtn(quantized) -> None:
    """Same scheme (W4 g64 symmetric, RTN): our math and llm-compressor's give the same weights,
    up to rounding ties and float noise in the scale (at most one step apart, rarely)."""
    ref = load_file(quantized("rtn-reference") / "model.safetensors")
    model, _ = load_causal_lm(quantized("rtn-llmcompressor"))
    theirs = {k: v.detach() for k, v in model.state_dict().items()}
    name = "model.layers.0.mlp.down_proj.weight"
    a, b = ref[name], theirs[name]
    step = a.reshape(a.shape[0], -1, 64).abs().amax(-1) / 7  # symmetric int4: max |w| / 7 per group
    diff = (a - b).abs().reshape(a.shape[0], -1, 64)
    assert (diff <= step.unsqueeze(-1) * 1.0001 + 1e-7).all()
    assert (diff > 1e-6).float().mean() < 0.01


def test_activation_quantization_is_simulated_and_weight_qdq_is_not_repeated(quantized) -> None:
    """Finding behind load_causal_lm: ``CompressedTensorsConfig(dequantize=True)`` decompresses
    once (status DECOMPRESSED, no weight fake-quant per forward), while W8A8 / FP8 input
    activations are still quantized in every forward pass."""
    prompt = ["The lighthouse keeper climbed the spiral stairs every evening at dusk."]

    def logits_with_and_without_quant(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        model, tok = load_causal_lm(path)
        q_proj = model.model.layers[0].self_attn.q_proj
        assert str(q_proj.quantization_status.value) == "decompressed"
        enc = tok(prompt, return_tensors="pt")
        with torch.inference_mode():
            on = model(**enc).logits
            modules = [m for m in model.modules() if hasattr(m, "quantization_scheme")]
            try:
                for m in modules:
                    m.quantization_enabled = False
                off = model(**enc).logits
            finally:
                for m in modules:
                    m.quantization_enabled = True
        return on, off

    on, off = logits_with_and_without_quant(quantized("gptq"))  # weight-only
    assert torch.equal(on, off)
    for name in ("smoothquant", "fp8-dynamic"):  # W8A8 int8 / FP8 dynamic activations
        on, off = logits_with_and_without_quant(quantized(name))
        assert (on - off).abs().max() > 1e-3, name
    clear_model_cache()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gptq", "smoothquant", "fp8-static"])
def test_same_scheme_twice_gives_identical_weights(name: str, quantized, tiny_model: Path, tmp_path: Path) -> None:
    first = load_file(quantized(name) / "model.safetensors")
    s = scheme(name)
    get_quantizer(s.backend).quantize(tiny_model, s, tmp_path / "again")
    second = load_file(tmp_path / "again" / "model.safetensors")
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_group_size_that_does_not_divide_fails_before_quantizing(tmp_path: Path) -> None:
    odd = build_tiny_llama(tmp_path / "odd", intermediate_size=96)
    bad = SchemeConfig(name="w4g64", method="gptq", weights={"group_size": 64}, calibration=CALIB)
    with pytest.raises(QuantConfigError, match=r"in_features 96 of layer 'model.layers.0.mlp.down_proj'"):
        get_quantizer("llmcompressor").quantize(odd, bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    ref = SchemeConfig(name="r", method="rtn", weights={"bits": 4, "group_size": 64})
    with pytest.raises(QuantConfigError, match="group_size 64"):
        get_quantizer("reference").quantize(odd, ref, tmp_path / "out")


def test_reference_backend_refuses_what_it_cannot_do(tiny_model: Path, tmp_path: Path) -> None:
    fp8 = SchemeConfig(name="f", method="fp8")
    with pytest.raises(QuantConfigError, match="reference backend does weight-only integer RTN"):
        get_quantizer("reference").quantize(tiny_model, fp8, tmp_path / "out")


def test_reference_output_is_dense_float32_with_a_record(quantized, tiny_model: Path) -> None:
    out = quantized("rtn-reference")
    record = json.loads((out / "pytest_quant_scheme.json").read_text())
    assert record["ignored_layers"] == ["lm_head"] and len(record["quantized_layers"]) == 14
    ref, orig = load_file(out / "model.safetensors"), load_file(tiny_model / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in ref.values())
    assert torch.equal(ref["lm_head.weight"], orig["lm_head.weight"])
    assert torch.equal(ref["model.embed_tokens.weight"], orig["model.embed_tokens.weight"])
    assert not torch.equal(ref["model.layers.0.mlp.up_proj.weight"], orig["model.layers.0.mlp.up_proj.weight"])
