"""Efficiency budgets without a model: parsing, suite errors, weight memory from files, verdicts, the plot.

Weight memory is read from safetensors headers (no torch), so these run in milliseconds;
the plugin tests in test_plugin_efficiency.py cover the tiny model end to end.
"""

import json
import struct
import textwrap

import pytest

from pytest_quant.backends.efficiency import read_safetensors_header, weight_footprint
from pytest_quant.budget import MemoryLimit, Ratio, parse_memory_limit, parse_ratio
from pytest_quant.errors import QuantConfigError
from pytest_quant.plot import pareto_front
from pytest_quant.report import markdown, table_lines, to_json
from pytest_quant.suite import expand_checks, load_suite_text
from pytest_quant.verdict import ResultError, judge_efficiency

SUITE = textwrap.dedent(
    """\
    model: tiny-llama-test
    schemes:
      w4: {method: rtn, weights: {bits: 4, group_size: 64}}
      w8: {method: rtn, weights: {bits: 8, group_size: 64}}
    tasks:
      arc: {task: arc_easy, limit: 50}
    efficiency: {prompt_tokens: 32, new_tokens: 8, repeats: 2}
    budgets:
      - {max_memory: 0.35x}
      - {schemes: [w8], min_decode_speedup: 1.0x}
      - {schemes: [baseline, w4], max_memory: 4GiB}
      - {schemes: w4, min_prefill_speedup: 1.5x, name: prefill}
      - {schemes: [w4], max_drop: 2pp}
    """
)


# -- parsing -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,want",
    [("0.35x", MemoryLimit(ratio=0.35)), (" 1X ", MemoryLimit(ratio=1.0)), ("4GiB", MemoryLimit(size=4 * 2**30)),
     ("500 MB", MemoryLimit(size=500_000_000)), ("1.5KiB", MemoryLimit(size=1536))],
)
def test_memory_limits_parse(text, want):
    assert parse_memory_limit(text) == want


@pytest.mark.parametrize(
    "text,words",
    [(0.35, "ambiguous"), ("0.35", "ambiguous"), ("35%", "not a memory budget"), ("0x", "above 0"),
     ("0B", "above 0"), ("-1x", "not a memory budget"), (True, "expected a memory budget"), ("4 GiBs", "not a memory budget")],
)
def test_bad_memory_limits_say_what_to_write(text, words):
    with pytest.raises(ValueError, match=words) as exc:
        parse_memory_limit(text)
    assert "0.35x" in str(exc.value) or "above 0" in str(exc.value)


def test_speedups_parse_and_refuse_bare_numbers():
    assert parse_ratio("1.0x") == Ratio(1.0) and str(Ratio(1.0)) == "1x" and parse_ratio("2.5x").factor == 2.5
    for bad, words in ((1, "with an 'x'"), ("1.0", "with an 'x'"), ("fast", "not a ratio"), ("0x", "above 0"), (None, "expected")):
        with pytest.raises(ValueError, match=words):
            parse_ratio(bad)


# -- suites ----------------------------------------------------------------------------------
def test_efficiency_budgets_expand_per_scheme_not_per_task():
    suite, lines = load_suite_text(SUITE, "s.quant.yaml")
    checks = expand_checks(suite, lines)
    assert [(c.name, c.task, c.line) for c in checks] == [
        ("memory<=0.35x[w4]", None, 9), ("memory<=0.35x[w8]", None, 9), ("decode>=1x[w8]", None, 10),
        ("memory<=4GiB[baseline]", None, 11), ("memory<=4GiB[w4]", None, 11), ("prefill[w4]", None, 12),
        ("drop<=2pp[w4-arc]", "arc", 13),
    ]
    assert suite.efficiency.new_tokens == 8 and suite.budgets[0].efficiency == "weight_memory"
    assert suite.budgets[1].efficiency == "decode_tokens_per_s" and suite.budgets[4].efficiency is None


@pytest.mark.parametrize(
    "edit,where,words",
    [
        (("max_memory: 0.35x}", "max_memory: 35%}"), "s.quant.yaml:9: budgets[0].max_memory", "not a memory budget: write a factor of the baseline's weight memory such as '0.35x' or a size such as '4GiB' (got '35%')"),
        (("max_memory: 0.35x}", "max_memory: 0.35}"), "s.quant.yaml:9: budgets[0].max_memory", "is ambiguous"),
        (("max_memory: 0.35x}", "max_memory: 0x}"), "s.quant.yaml:9: budgets[0].max_memory", "above 0 (got '0x')"),
        (("min_decode_speedup: 1.0x", "min_decode_speedup: 1.0"), "s.quant.yaml:10: budgets[1].min_decode_speedup", "(got 1.0)"),
        (("min_decode_speedup: 1.0x", "min_decode_speedup: twice"), "s.quant.yaml:10: budgets[1].min_decode_speedup", "(got 'twice')"),
        (("min_prefill_speedup: 1.5x", "min_prefill_speedup: -2x"), "s.quant.yaml:12: budgets[3].min_prefill_speedup", "(got '-2x')"),
        (("{max_memory: 0.35x}", "{max_memory: 0.35x, tasks: [arc]}"), "s.quant.yaml:9: budgets[0].tasks", "it has no task"),
        (("{max_memory: 0.35x}", "{max_memory: 0.35x, mode: gate}"), "s.quant.yaml:9: budgets[0].mode", "compared as a point"),
        (("{max_memory: 0.35x}", "{max_memory: 0.35x, confidence: 0.9}"), "s.quant.yaml:9: budgets[0].confidence", "not a paired statistic"),
        (("{max_memory: 0.35x}", "{max_memory: 0.35x, max_drop: 1%}"), "s.quant.yaml:9: budgets[0]", "exactly one of"),
        (("{max_memory: 0.35x}", "{max_memory: 0.35x, schemes: [w16]}"), "s.quant.yaml:9: budgets[0].schemes", "unknown scheme 'w16'"),
        (("[baseline, w4], max_memory: 4GiB", "[baseline], max_memory: 0.5x"), "s.quant.yaml:11: budgets[2].schemes", "compared with itself"),
        (("efficiency: {prompt_tokens: 32,", "efficiency: {prompt_tokens: 0,"), "s.quant.yaml:7: efficiency.prompt_tokens", "(got 0)"),
        (("efficiency: {prompt_tokens: 32,", "efficiency: {prompt: 32,"), "s.quant.yaml:7: efficiency.prompt", "unknown key 'prompt'"),
    ],
)
def test_bad_efficiency_budgets_name_file_line_field_and_value(edit, where, words):
    text = SUITE.replace(*edit)
    assert text != SUITE
    with pytest.raises(QuantConfigError) as exc:
        load_suite_text(text, "s.quant.yaml")
    assert str(exc.value).startswith(where), str(exc.value)
    assert words in str(exc.value), str(exc.value)


def test_a_suite_without_schemes_has_no_efficiency_to_compare():
    text = "model: m\ntasks: {t: {}}\nbudgets:\n  - {max_memory: 0.5x}\n"
    with pytest.raises(QuantConfigError, match=r"s.quant.yaml:4: budgets\[0\]: the suite has no schemes: an efficiency budget"):
        load_suite_text(text, "s.quant.yaml")
    suite, _ = load_suite_text(text.replace("{max_memory: 0.5x}", "{schemes: [baseline], max_memory: 2GiB}"), "s.quant.yaml")
    assert [c.name for c in expand_checks(suite)] == ["memory<=2GiB[baseline]"]


# -- weight memory from the files ----------------------------------------------------------------
_DTYPE_BYTES = {"F32": 4, "BF16": 2, "I32": 4, "I64": 8, "I8": 1, "F8_E4M3": 1}


def write_safetensors(path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A valid safetensors file of zeros: ``{name: (dtype, shape)}`` (written by hand: no torch needed)."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        n = _DTYPE_BYTES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(offset))


def test_dense_folder_counts_every_tensor_and_every_file(tmp_path):
    write_safetensors(tmp_path / "model.safetensors", {"a.weight": ("F32", [64, 32]), "norm.weight": ("BF16", [32])})
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / ".complete").write_text("x")  # hidden: not part of the checkpoint
    fp = weight_footprint(tmp_path)
    assert fp.weight_bytes == 64 * 32 * 4 + 32 * 2
    assert fp.checkpoint_bytes == (tmp_path / "model.safetensors").stat().st_size + 2
    assert fp.quantized_layers == 0 and fp.how == "safetensors tensor sizes"
    assert read_safetensors_header(tmp_path / "model.safetensors")["a.weight"]["shape"] == [64, 32]


def test_compressed_tensors_checkpoint_is_counted_as_stored(tmp_path):
    """pack-quantized W4A16 g32: eight 4-bit values per int32 word, one scale (and zero point) per group."""
    out_f, in_f, g = 64, 128, 32
    write_safetensors(tmp_path / "model-00001-of-00002.safetensors", {
        "q.weight_packed": ("I32", [out_f, in_f // 8]), "q.weight_scale": ("BF16", [out_f, in_f // g]),
        "q.weight_zero_point": ("I32", [out_f // 8, in_f // g]), "q.weight_shape": ("I64", [2]),
    })
    write_safetensors(tmp_path / "model-00002-of-00002.safetensors", {"lm_head.weight": ("BF16", [300, in_f])})
    fp = weight_footprint(tmp_path)
    packed = out_f * in_f // 2
    assert fp.weight_bytes == packed + out_f * (in_f // g) * 2 + (out_f // 8) * (in_f // g) * 4 + 16 + 300 * in_f * 2
    assert fp.quantized_layers == 1


@pytest.mark.parametrize("bits,group,sym", [(4, 64, True), (8, 64, True), (4, None, True), (3, 32, False)])
def test_dense_rtn_artifact_is_counted_at_its_scheme(tmp_path, bits, group, sym):
    write_safetensors(tmp_path / "model.safetensors", {
        "l.0.weight": ("F32", [256, 128]), "l.1.weight": ("F32", [128, 256]), "emb.weight": ("F32", [300, 128]),
    })
    (tmp_path / "pytest_quant_scheme.json").write_text(json.dumps({
        "scheme": {"weights": {"bits": bits, "group_size": group, "symmetric": sym}}, "quantized_layers": ["l.0", "l.1"],
    }))
    fp = weight_footprint(tmp_path)
    groups = 256 * (128 // group if group else 1) + 128 * (256 // group if group else 1)
    want = 2 * 256 * 128 * bits // 8 + groups * 4 + (0 if sym else -(-groups * bits // 8)) + 300 * 128 * 4
    assert fp.weight_bytes == want and fp.quantized_layers == 2
    assert f"{bits} bits packed" in fp.how and ("zero points" in fp.how) == (not sym)


def test_a_folder_without_weights_is_a_config_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(QuantConfigError, match="no weights"):
        weight_footprint(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0" * 100)
    assert weight_footprint(tmp_path).weight_bytes == 100


# -- verdicts and reports ------------------------------------------------------------------------
def test_memory_and_speed_verdicts_are_point_comparisons():
    ok = judge_efficiency("weight_memory", baseline=1000.0, value=300.0, limit=MemoryLimit(ratio=0.35), cand_label="w4")
    assert ok.passed and ok.row["ratio"] == 0.3 and ok.row["kind"] == "efficiency" and ok.row["mode"] == "point"
    assert "not paired statistics" in ok.explanation and "budget: weight memory <= 0.35x baseline" in ok.explanation
    bad = judge_efficiency("weight_memory", baseline=1000.0, value=400.0, limit=MemoryLimit(ratio=0.35), cand_label="w8")
    assert not bad.passed and bad.explanation.startswith("FAIL [point] w8 vs baseline: weight memory")
    assert judge_efficiency("weight_memory", baseline=1e9, value=2**30, limit=MemoryLimit(size=2**30), cand_label="b").passed
    slow = judge_efficiency("decode_tokens_per_s", baseline=100.0, value=99.0, limit=Ratio(1.0), cand_label="w8",
                            details=("note: dequantized",))
    assert not slow.passed and "0.990x < 1x" in slow.explanation and "note: dequantized" in slow.explanation
    assert judge_efficiency("prefill_tokens_per_s", baseline=100.0, value=100.0, limit=Ratio(1.0), cand_label="w8").passed
    with pytest.raises(ResultError):
        judge_efficiency("decode_tokens_per_s", baseline=0.0, value=1.0, limit=Ratio(1.0), cand_label="w8")


def test_reports_show_efficiency_rows_beside_accuracy():
    mem = judge_efficiency("weight_memory", baseline=2**20, value=2**18, limit=MemoryLimit(ratio=0.35), cand_label="w4").row
    mem.update(scheme="w4", model="m", weight_bytes=2**18, baseline_weight_bytes=2**20)
    acc = {"scheme": "w4", "model": "m", "task": "arc", "metric": "acc", "baseline": 0.5, "value": 0.49, "drop": 0.01,
           "ci_low": 0.0, "ci_high": 0.02, "relative": False, "recovery": 0.98, "n": 100, "budget": "2pp", "mode": "alarm",
           "confidence": 0.95, "verdict": "pass", "weight_bytes": 2**18, "baseline_weight_bytes": 2**20}
    lines = table_lines([acc, mem])
    assert "w4      -     weight_memory  1 MiB     256 KiB    0.250x" in lines[3]
    md = markdown([acc, mem])
    assert "| w4 | - | weight_memory | 1 MiB | 256 KiB | 0.250x | - | - |" in md and "| 256 KiB (0.25x) |" in md
    assert "measurements compared as points, not paired statistics" in md and "dequantizes weight-only" in md
    items = json.loads(to_json([acc, mem]))["items"]
    assert [i["kind"] for i in items] == ["accuracy", "efficiency"] and items[1]["ratio"] == 0.25 and items[1]["unit"] == "bytes"


def test_pareto_front():
    pts = [(1.0, 0.5), (0.3, 0.48), (0.5, 0.47), (0.25, 0.40), (0.5, 0.49)]
    assert pareto_front(pts) == [(0.25, 0.40), (0.3, 0.48), (0.5, 0.49), (1.0, 0.5)]
    assert pareto_front([(1.0, 9.0), (0.3, 9.4), (0.5, 9.2), (0.5, 9.6)], higher_is_better=False) == [(0.3, 9.4), (0.5, 9.2), (1.0, 9.0)]


def test_pareto_png_from_rows():
    pytest.importorskip("matplotlib")
    from pytest_quant.plot import pareto_png, pareto_points

    rows = []
    for task, metric, base in (("arc", "acc", 0.6), ("wiki", "perplexity", 9.0)):
        for i, (scheme, share) in enumerate((("w8", 0.5), ("w4", 0.28), ("fp8", 0.52))):
            rows.append({"model": "m", "task": task, "metric": metric, "scheme": scheme, "baseline": base,
                         "value": base * (1 - 0.01 * i) if metric == "acc" else base * (1 + 0.01 * i),
                         "weight_bytes": share * 2**31, "baseline_weight_bytes": 2**31})
    rows.append({"model": "m", "task": "arc", "scheme": "w8 vs w4", "metric": "acc", "value": 0.6})  # compare: no memory
    points = pareto_points(rows)["m"]
    assert points[("arc", "acc")]["baseline"] == (2048.0, 0.6) and set(points[("arc", "acc")]["schemes"]) == {"w8", "w4", "fp8"}
    assert points[("wiki", "perplexity")]["higher_is_better"] is False
    png = pareto_png(rows)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert 900 <= width <= 1400 and 400 <= height <= 700
    assert pareto_png([{"model": "m", "task": "t", "value": 1.0}]) is None  # nothing has a weight memory


def test_missing_matplotlib_is_reported_not_raised(tmp_path, monkeypatch):
    import sys

    from pytest_quant.reporter import write_png

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    row = {"model": "m", "task": "t", "metric": "acc", "scheme": "w4", "value": 0.5, "baseline": 0.5,
           "weight_bytes": 1, "baseline_weight_bytes": 4}
    msg = write_png(tmp_path / "p.png", [row])
    assert "matplotlib is not installed" in msg and not (tmp_path / "p.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("bits,sym", [(4, True), (4, False), (8, True)])
def test_rtn_count_matches_llmcompressors_packed_checkpoint(tmp_path_factory, bits, sym):
    """Oracle: the reference RTN artifact (dense) counted at its scheme takes what llm-compressor's
    compressed-tensors checkpoint of the same scheme stores, less its 16-byte ``weight_shape`` per layer."""
    pytest.importorskip("llmcompressor")
    from pathlib import Path

    from pytest_quant.config import ModelConfig, SchemeConfig
    from pytest_quant.session import Options, QuantSession
    from pytest_quant.artifacts import artifact

    cache = tmp_path_factory.getbasetemp() / "efficiency-oracle-cache"
    session = QuantSession(Options(baseline_dir=Path(cache / "b"), cache_dir=cache))
    model = ModelConfig(name="tiny-llama-test")
    weights = {"bits": bits, "group_size": 64, "symmetric": sym}
    dense = weight_footprint(artifact(session, model, SchemeConfig(name="r", method="rtn", weights=weights)))
    packed = weight_footprint(artifact(session, model, SchemeConfig(name="c", method="rtn", backend="llmcompressor", weights=weights)))
    assert dense.quantized_layers == packed.quantized_layers == 14
    assert packed.weight_bytes - dense.weight_bytes == 14 * 16
    assert packed.checkpoint_bytes < dense.checkpoint_bytes / 2  # the dense artifact is stored in float32
