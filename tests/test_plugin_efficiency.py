"""Efficiency budgets and the Pareto plot end to end on the tiny model (real RTN artifacts, real generate).

Weight memory needs no model run; speed and peak memory are measured once per model in a
subprocess and cached, so a warm run imports nothing heavy.
"""

import json
import struct
from pathlib import Path

import pytest
from quant_runs import builds, run

DATA = Path(__file__).parent / "data"
HEAVY = ("torch", "transformers", "vllm", "llmcompressor", "lm_eval")

pytestmark = pytest.mark.slow

SUITE = f"""\
model: tiny-llama-test
schemes:
  w4-rtn: {{method: rtn, weights: {{bits: 4, group_size: 64}}}}
  w8-rtn: {{method: rtn, weights: {{bits: 8, group_size: 64}}}}
tasks:
  corpus: {{perplexity: {DATA / 'corpus.txt'}, seq_len: 128, max_tokens: 1024}}
efficiency: {{prompt_tokens: 16, new_tokens: 4, repeats: 1}}
budgets:
  - {{name: mem, schemes: [w4-rtn], max_memory: 0.35x}}
  - {{name: mem-tight, schemes: [w8-rtn], max_memory: 0.2x}}
  - {{name: decode, schemes: [w8-rtn], min_decode_speedup: 50x}}
  - {{name: ppl, tasks: [corpus], max_drop: 30%, mode: point}}
"""


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("quant-cache")


def report_rows(path: Path) -> dict[str, dict]:
    return {r["item"].split("::")[1]: r for r in json.loads(path.read_text())["items"]}


def test_memory_budget_passes_for_4bit_and_fails_for_8bit(pytester: pytest.Pytester, cache_dir):
    pytester.makefile(".quant.yaml", tiny=SUITE)
    report = pytester.path / "r.json"
    result = run(pytester, cache_dir, "-k", "mem", f"--quant-report={report}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*FAIL [[]point] w8-rtn vs baseline: weight memory*",
        "*baseline: 1.38 MiB   w8-rtn: 567.5 KiB   ratio: 0.401x*",
        "*budget: weight memory <= 0.2x baseline; 567.5 KiB > 282.7 KiB (0.401x)*",
        "*(a measurement compared as a point, not paired statistics)*",
        "*weights: dense RTN weights counted as deployed: 14 layers at 8 bits packed + per-group (g64) scales*",
    ])
    result.stdout.fnmatch_lines(["w4-rtn  -     weight_memory  1.38 MiB  423.5 KiB  0.300x*pass*"])
    rows = report_rows(report)
    assert rows["mem[w4-rtn]"]["verdict"] == "pass" and rows["mem-tight[w8-rtn]"]["verdict"] == "fail"
    assert rows["mem[w4-rtn]"]["ratio"] == pytest.approx(433664 / 1447424)  # 4-bit g64 + fp32 scales; embeddings, lm_head float32
    assert rows["mem[w4-rtn]"]["kind"] == "efficiency" and rows["mem[w4-rtn]"]["unit"] == "bytes"
    assert rows["mem[w4-rtn]"]["efficiency"]["checkpoint_bytes"] > 1_400_000  # the RTN artifact is stored dense
    assert "measuring speed" not in result.stdout.str() and not builds(cache_dir, "efficiency")  # memory runs no model


def test_impossible_decode_speedup_fails_and_is_cached(pytester: pytest.Pytester, cache_dir):
    pytester.makefile(".quant.yaml", tiny=SUITE)
    report = pytester.path / "r.json"
    result = run(pytester, cache_dir, "-k", "decode", f"--quant-report={report}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*measuring speed and peak memory of w8-rtn with hf (16 prompt + 4 new tokens, cpu) done in *s",
        "*measuring speed and peak memory of baseline with hf (16 prompt + 4 new tokens, cpu) done in *s",
        "*FAIL [[]point] w8-rtn vs baseline: decode speed*",
        "*budget: decode speed >= 50x baseline; *x < 50x*",
        "*measured: hf backend on cpu (float32, * threads), 16 prompt + 4 new tokens, batch 1, fastest of 1 after a warm-up*",
        "*peak memory: baseline * MiB   w8-rtn: * MiB*",
        "*note: the HF backend runs weight-only checkpoints dequantized*vLLM on a GPU*",
    ])
    row = report_rows(report)["decode[w8-rtn]"]
    eff = row["efficiency"]
    assert row["unit"] == "tokens/s" and row["value"] == eff["decode_tokens_per_s"] > 0 and row["ratio"] < 50
    assert eff["prefill_tokens_per_s"] > 0 and eff["baseline_prefill_tokens_per_s"] > 0
    assert 0 < eff["peak_memory_bytes"] < 2**30 and eff["prompt_tokens"] == 16 and eff["new_tokens"] == 4
    assert len(builds(cache_dir, "efficiency")) == 2  # the scheme and the unquantized model

    # Warm: the same verdict from the cache, nothing measured again, nothing heavy imported.
    pytester.makeconftest(
        "import sys\n"
        "def pytest_unconfigure(config):\n"
        f"    print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    # (only the items this test ran cold: under pytest-xdist the module's other tests may have
    # built their schemes in another worker's cache folder)
    result = run(pytester, cache_dir, "-k", "decode", "-s")
    result.assert_outcomes(failed=1)
    assert "measuring speed" not in result.stdout.str() and len(builds(cache_dir, "efficiency")) == 2
    result.stdout.fnmatch_lines(["HEAVY []"])


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    assert data[-8:-4] == b"IEND", "truncated PNG"
    return struct.unpack(">II", data[16:24])


def test_pareto_png_from_a_real_run(pytester: pytest.Pytester, cache_dir):
    pytest.importorskip("matplotlib")
    pytester.makefile(".quant.yaml", tiny=SUITE)
    png, md = pytester.path / "out" / "pareto.png", pytester.path / "r.md"
    result = run(pytester, cache_dir, "--quant-update-baselines", "-k", "ppl or mem", f"--quant-report-png={png}",
                 f"--quant-report-md={md}")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines([f"plot: {png}"])
    width, height = png_size(png)
    assert 500 <= width <= 900 and 400 <= height <= 700  # one model, one task: a single readable panel
    assert 15_000 < png.stat().st_size < 500_000
    assert not list(png.parent.glob(".*.tmp"))  # written atomically
    text = md.read_text()
    assert "| w4-rtn | corpus | perplexity |" in text and "| 423.5 KiB (0.30x) |" in text
    assert "| w8-rtn | - | weight_memory | 1.38 MiB | 567.5 KiB | 0.401x |" in text

    # The ini default, relative to rootdir; rows gathered from two xdist workers.
    pytester.makeini("[pytest]\nquant_report_png = plots/p.png\n")
    png.unlink()
    result = run(pytester, cache_dir, "-n", "2", "-k", "ppl or mem")
    result.assert_outcomes(passed=3, failed=1)
    assert png_size(pytester.path / "plots" / "p.png") == (width, height)

    # Nothing to plot: said in the summary, no file, the run's outcome unchanged.
    result = run(pytester, cache_dir, "-k", "mem", "--quant-report-png=none.png")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["plot: not written to none.png: no row has both a task value and a weight memory"])
    assert not (pytester.path / "none.png").exists()
