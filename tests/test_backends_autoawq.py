"""The AutoAWQ backend (``method: awq``, ``backend: autoawq``).

- Our unpacking of AutoAWQ's GEMM layout, on hand-written words (no AutoAWQ needed) and against
  AutoAWQ's own packing (``WQLinear_GEMM.from_linear``) and reference (``dequantize_gemm``).
- What the scheme config accepts: 4-bit, group size 64 or 128, zero points; anything else is a
  collection error naming file, line, field and value.
- End to end on the tiny model: real AutoAWQ quantization on CPU, the dense artifact, its weights
  against AutoAWQ's own fake-quantized ones and the originals, and a perplexity evaluation.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pytest_quant.config import SchemeConfig  # noqa: E402
from pytest_quant.errors import QuantConfigError  # noqa: E402
from pytest_quant.suite import load_suite_text  # noqa: E402

try:  # the config tests need no torch; the rest do
    import torch
except ImportError:  # pragma: no cover - the [torch] extra is not installed
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

DATA = Path(__file__).parent / "data"
CALIB = {"samples": 8, "seq_len": 64}
AWQ = {"method": "awq", "backend": "autoawq", "weights": {"group_size": 64}, "calibration": CALIB}


# --------------------------------------------------------------------------- config
SUITE = textwrap.dedent(
    """\
    model: tiny-llama-test
    schemes:
      w4-awq: {method: awq, backend: autoawq}
    tasks:
      ppl: {perplexity: corpus.txt}
    budgets:
      - {max_drop: 5%}
    """
)


def test_awq_preset_fits_autoawq_and_llmcompressor_stays_the_default() -> None:
    suite, _ = load_suite_text(SUITE, "s.quant.yaml")
    s = suite.schemes["w4-awq"]
    assert (s.backend, s.weights.bits, s.weights.group_size, s.weights.symmetric) == ("autoawq", 4, 128, False)
    assert s.describe() == "awq W4A16 g128 asym"
    assert SchemeConfig(name="a", method="awq").backend == "llmcompressor"
    assert SchemeConfig(name="a", **{**AWQ, "weights": {"group_size": 64}}).group_size == 64
    # the backend is part of the artifact's identity: the same AWQ scheme by another engine is another artifact
    assert SchemeConfig(name="a", method="awq").fingerprint_payload() != SchemeConfig(name="a", method="awq", backend="autoawq").fingerprint_payload()


@pytest.mark.parametrize(
    "weights,field,words",
    [
        ("{bits: 8}", "weights.bits", "4-bit weights only (got 8)"),
        ("{group_size: 32}", "weights.group_size", "group_size 64 or 128 (got 32)"),
        ("{group_size: 256}", "weights.group_size", "group_size 64 or 128 (got 256)"),
        ("{group_size: null}", "weights.group_size", "(got per-channel (no group_size))"),
        ("{symmetric: true}", "weights.symmetric", "zero point per group (asymmetric); set symmetric: false (got true)"),
    ],
)
def test_unsupported_autoawq_schemes_name_file_line_field_and_value(weights: str, field: str, words: str) -> None:
    text = SUITE.replace("backend: autoawq}", f"backend: autoawq, weights: {weights}}}")
    with pytest.raises(QuantConfigError) as exc:
        load_suite_text(text, "s.quant.yaml")
    assert str(exc.value).startswith(f"s.quant.yaml:3: schemes.w4-awq.{field}: "), str(exc.value)
    assert words in str(exc.value)


def test_autoawq_is_only_an_awq_backend() -> None:
    with pytest.raises(QuantConfigError, match=r"s.quant.yaml:3: schemes.g: method 'gptq' has no backend 'autoawq'; choose one of llmcompressor"):
        load_suite_text(SUITE.replace("w4-awq: {method: awq", "g: {method: gptq"), "s.quant.yaml")


# --------------------------------------------------------------------------- the GEMM layout
from pytest_quant.backends.quantize.autoawq import dequantize_awq_gemm, unpack_awq_gemm  # noqa: E402  (imports torch lazily)


def _pack(codes):
    """Pack 4-bit codes [rows, 8k] the way AutoAWQ's docs and ``from_linear`` describe:
    nibble i of word c holds column 8c + (0, 2, 4, 6, 1, 3, 5, 7)[i]."""
    words = torch.zeros(codes.shape[0], codes.shape[1] // 8, dtype=torch.int64)
    for i, col in enumerate((0, 2, 4, 6, 1, 3, 5, 7)):
        words |= codes[:, col::8].to(torch.int64) << (4 * i)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)  # the bit pattern as int32


@needs_torch
def test_unpack_reads_awq_words_in_their_interleaved_order() -> None:
    # columns 0..7 holding 0..7: the nibbles, lowest first, hold columns 0, 2, 4, 6, 1, 3, 5, 7
    assert unpack_awq_gemm(torch.tensor([[0x75316420]], dtype=torch.int32)).tolist() == [list(range(8))]
    # codes 8..15 set the sign bit: arithmetic shifts must not leak it into the codes
    word = torch.tensor([[0xFDB9ECA8 - 2**32]], dtype=torch.int32)
    assert unpack_awq_gemm(word).tolist() == [list(range(8, 16))]
    codes = torch.randint(0, 16, (5, 24), generator=torch.Generator().manual_seed(0))
    assert torch.equal(unpack_awq_gemm(_pack(codes)), codes.to(torch.int32))


@needs_torch
def test_dequantize_is_exact_on_a_known_grid() -> None:
    gen = torch.Generator().manual_seed(1)
    in_features, out_features, group = 128, 16, 64
    q = torch.randint(0, 16, (in_features, out_features), generator=gen)
    z = torch.randint(0, 16, (in_features // group, out_features), generator=gen)
    s = (torch.rand(in_features // group, out_features, generator=gen) * 0.1 + 1e-3).half()
    w = dequantize_awq_gemm(_pack(q), _pack(z), s, group)
    expected = (q - z.repeat_interleave(group, 0)).double() * s.double().repeat_interleave(group, 0)
    assert w.dtype == torch.float32 and w.shape == (out_features, in_features)
    assert torch.equal(w.double(), expected.t())  # exact: no rounding anywhere
    with pytest.raises(ValueError, match="group_size 32"):
        dequantize_awq_gemm(_pack(q), _pack(z), s, 32)
    with pytest.raises(ValueError, match="4-bit"):
        unpack_awq_gemm(_pack(q), bits=8)


@needs_torch
def test_dequantize_agrees_with_autoawqs_packing_and_reference() -> None:
    """AutoAWQ packs a layer whose weights lie on a known grid; our dense weight is that grid exactly,
    and AutoAWQ's own reference ``dequantize_gemm`` (float16) is ours rounded to float16."""
    pytest.importorskip("awq")
    from awq.modules.linear.gemm import WQLinear_GEMM
    from awq.utils.packing_utils import dequantize_gemm

    gen = torch.Generator().manual_seed(2)
    in_features, out_features = 256, 64
    for group in (64, 128):
        q = torch.randint(0, 16, (out_features, in_features), generator=gen)
        z = torch.randint(0, 16, (out_features, in_features // group), generator=gen)
        s = (torch.rand(out_features, in_features // group, generator=gen) * 0.05 + 1e-3).half()
        grid = ((q - z.repeat_interleave(group, 1)) * s.float().repeat_interleave(group, 1)).float()
        linear = torch.nn.Linear(in_features, out_features, bias=False)
        linear.weight.data = grid.half()  # exact in float16: a small integer times a float16 step
        packed = WQLinear_GEMM.from_linear(linear, 4, group, scales=s.t().contiguous(), zeros=z.t().contiguous())
        ours = dequantize_awq_gemm(packed.qweight, packed.qzeros, packed.scales, group)
        assert torch.equal(unpack_awq_gemm(packed.qweight), q.t().to(torch.int32))
        assert torch.equal(unpack_awq_gemm(packed.qzeros), z.t().to(torch.int32))
        assert torch.equal(ours, grid)
        theirs = dequantize_gemm(packed.qweight, packed.qzeros, packed.scales, 4, group)  # [in, out], float16
        assert torch.equal(ours.t().half(), theirs)


# --------------------------------------------------------------------------- AutoAWQ on a CPU
@needs_torch
def test_autoawq_scale_search_corrupts_cpu_layers_unless_fixed() -> None:
    """AutoAWQ 0.2.9's ``_compute_best_scale`` must leave the layer as it found it (it only picks a
    scale). On the CPU its snapshot is no copy, so the layer keeps the first candidate's scaling;
    our workaround makes the snapshot a copy. When this test's first half fails, AutoAWQ was
    fixed: drop ``_cpu_scale_search_fix``."""
    pytest.importorskip("awq")
    from awq.quantize.quantizer import AwqQuantizer

    from pytest_quant.backends.quantize.autoawq import _cpu_scale_search_fix

    def search(layer: torch.nn.Linear, x: torch.Tensor) -> None:
        quantizer = AwqQuantizer.__new__(AwqQuantizer)  # only what _compute_best_scale reads
        quantizer.w_bit, quantizer.group_size, quantizer.zero_point = 4, 64, True
        quantizer.duo_scaling, quantizer.n_parallel_calib_samples, quantizer.max_chunk_memory = True, None, 2**30
        with torch.no_grad():
            w_mean = (layer.weight.abs() / layer.weight.abs().amax(dim=1, keepdim=True)).mean(0)
            quantizer._compute_best_scale(x, w_mean, x.abs().mean(0), layer, [layer], layer(x), {})

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(32, 128, generator=gen) * torch.linspace(0.1, 3.0, 128)  # uneven channels: scales != 1
    layer = torch.nn.Linear(128, 64, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(64, 128, generator=gen) / 11)
    before = layer.weight.detach().clone()
    search(layer, x)
    assert not torch.allclose(layer.weight, before)  # AutoAWQ's bug: the layer came back scaled
    layer.weight.data = before.clone()
    with _cpu_scale_search_fix():
        search(layer, x)
    assert torch.equal(layer.weight, before)
    assert "state_dict" not in vars(layer)  # the fix leaves nothing behind


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("awq")  # every test below runs AutoAWQ
    from pytest_quant.backends.models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="module")
def awq_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple]]:
    """The tiny model quantized by AutoAWQ through our backend, and, per quantized layer, what AutoAWQ
    quantized: ``(float16 weight after its scaling and clipping, its fake-quantized weight, scales)``,
    seen by a spy that calls AutoAWQ's ``_apply_quant`` unchanged."""
    from awq.quantize.quantizer import AwqQuantizer
    from awq.utils.module import get_op_name

    from pytest_quant.backends import get_quantizer

    seen: dict[str, tuple] = {}
    original = AwqQuantizer._apply_quant

    def spy(self, module, named_linears):
        block = get_op_name(self.model, module)
        for rel, linear in named_linears.items():
            w = linear.weight.detach().to(torch.float16)  # _apply_quant quantizes the float16 weight
            fake, scales, _ = self.pseudo_quantize_tensor(w.clone())
            seen[f"{block}.{rel}"] = (w, fake, scales)
        return original(self, module, named_linears)

    out = tmp_path_factory.mktemp("autoawq") / "model"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AwqQuantizer, "_apply_quant", spy)
        get_quantizer("autoawq").quantize(tiny_model, SchemeConfig(name="w4-awq", **AWQ), out)
    return out, seen


@pytest.mark.slow
def test_artifact_is_a_dense_float32_folder_with_a_record(awq_run, tiny_model: Path) -> None:
    from safetensors.torch import load_file

    from pytest_quant.backends.quantize.checkpoint import resolve_checkpoint

    out, seen = awq_run
    assert {"config.json", "model.safetensors", "tokenizer.json", "pytest_quant_scheme.json"} <= {p.name for p in out.iterdir()}
    assert not (out / ".autoawq-packed").exists()
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert resolve_checkpoint(out) == out.resolve()
    record = json.loads((out / "pytest_quant_scheme.json").read_text())
    assert record["backend"] == "autoawq" and record["autoawq_version"] == "0.2.9"
    assert record["scheme"] == SchemeConfig(name="w4-awq", **AWQ).fingerprint_payload()
    assert record["autoawq"]["q_group_size"] == 64 and record["autoawq"]["zero_point"] is True
    assert record["autoawq"]["calibration_windows"] == CALIB["samples"]
    assert record["ignored_layers"] == ["lm_head"] and len(record["quantized_layers"]) == 14
    assert sorted(seen) == record["quantized_layers"]
    # the packed sizes: 4 bits per weight, a 4-bit zero point and a float16 scale per group of 64
    down = record["awq_checkpoint"]["layers"]["model.layers.0.mlp.down_proj"]  # in 256, out 128
    assert down["qweight"] == {"shape": [256, 16], "dtype": "int32", "bytes": 256 * 128 // 2}
    assert down["qzeros"] == {"shape": [4, 16], "dtype": "int32", "bytes": 4 * 128 // 2}
    assert down["scales"] == {"shape": [4, 128], "dtype": "float16", "bytes": 4 * 128 * 2}
    dense, orig = load_file(out / "model.safetensors"), load_file(tiny_model / "model.safetensors")
    assert dense.keys() == orig.keys() and all(t.dtype == torch.float32 for t in dense.values())
    assert torch.equal(dense["lm_head.weight"], orig["lm_head.weight"])  # ignored
    assert torch.equal(dense["model.embed_tokens.weight"], orig["model.embed_tokens.weight"])
    total = record["awq_checkpoint"]["tensor_bytes"]
    dense_linears = sum(dense[f"{n}.weight"].numel() * 4 for n in record["quantized_layers"])
    assert total == sum(t.numel() * 4 for t in dense.values()) - dense_linears + record["awq_checkpoint"]["quantized_layer_bytes"]


@pytest.mark.slow
def test_dense_weights_are_autoawqs_own_quantized_weights(awq_run) -> None:
    """Every quantized layer: our dense weight, rounded to float16, is bit for bit the weight AutoAWQ
    fake-quantized before packing it, and within half a step of what AutoAWQ quantized."""
    from safetensors.torch import load_file

    out, seen = awq_run
    dense = load_file(out / "model.safetensors")
    assert len(seen) == 14
    for name, (before, fake, scales) in seen.items():
        w = dense[f"{name}.weight"]
        assert torch.equal(w.half(), fake), name
        step = scales.float().repeat_interleave(64, dim=1)
        err = (w - before.float()).abs()
        assert (err <= step / 2 * 1.02).all(), (name, float((err / step).max()))
        codes = torch.round(w / step)  # on the grid: (q - z) * s, 16 levels per group
        assert torch.allclose(codes * step, w, rtol=0, atol=1e-6), name
        assert max(len(torch.unique(g)) for row in w.reshape(w.shape[0], -1, 64) for g in row) <= 16


@pytest.mark.slow
def test_dense_weights_are_the_originals_within_the_quantization_error(awq_run, tiny_model: Path) -> None:
    """Against the untouched model: AWQ multiplies each input channel of q/k/v by s and divides
    the RMSNorm gain before them by s, so dense weight x saved gain is the original weight
    up to the rounding error of that channel: half a step times the gain. q/k are never clipped."""
    from safetensors.torch import load_file

    out, seen = awq_run
    dense, orig = load_file(out / "model.safetensors"), load_file(tiny_model / "model.safetensors")
    for layer in (0, 1):
        gain = dense[f"model.layers.{layer}.input_layernorm.weight"]
        assert torch.equal(orig[f"model.layers.{layer}.input_layernorm.weight"], torch.ones_like(gain))
        assert not torch.allclose(gain, torch.ones_like(gain))  # AWQ did scale the channels
        for proj in ("q_proj", "k_proj"):
            name = f"model.layers.{layer}.self_attn.{proj}"
            _, _, scales = seen[name]
            effective = dense[f"{name}.weight"] * gain  # per input channel
            original = orig[f"{name}.weight"]
            bound = scales.float().repeat_interleave(64, dim=1) / 2 * gain * 1.02 + original.abs() * 2**-10
            assert ((effective - original).abs() <= bound).all(), name
            rel = float((effective - original).norm() / original.norm())
            assert 0.005 < rel < 0.2, (name, rel)  # quantized, and by a 4-bit amount


@pytest.mark.slow
def test_autoawq_artifact_evaluates(awq_run, tiny_model: Path) -> None:
    from pytest_quant.backends import get_evaluator
    from pytest_quant.config import EvaluationConfig, TaskConfig

    out, _ = awq_run
    task = TaskConfig(name="ppl", perplexity=str(DATA / "corpus.txt"), seq_len=128)
    evaluator = get_evaluator("perplexity")
    base = evaluator.evaluate(tiny_model, task, EvaluationConfig())
    quant = evaluator.evaluate(out, task, EvaluationConfig())
    assert quant.n == base.n and quant.item_ids == base.item_ids
    assert math.isfinite(quant.value) and quant.value != base.value
    assert abs(quant.value / base.value - 1) < 0.25, (base.value, quant.value)


def test_ignore_that_autoawq_cannot_express_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    """AutoAWQ skips layers by their name inside every decoder block: one block's layer cannot be left out."""
    from pytest_quant.backends import get_quantizer

    one_block = SchemeConfig(name="w4", **AWQ, ignore=["lm_head", "model.layers.0.mlp.down_proj"])
    with pytest.raises(QuantConfigError, match=r"schemes.w4.ignore: .*'mlp.down_proj' in 'model.layers.0' only"):
        get_quantizer("autoawq").quantize(tiny_model, one_block, tmp_path / "out")
    head = SchemeConfig(name="w4", **AWQ, ignore=[])
    with pytest.raises(QuantConfigError, match=r"decoder blocks only; add 'lm_head' to 'ignore'"):
        get_quantizer("autoawq").quantize(tiny_model, head, tmp_path / "out")
