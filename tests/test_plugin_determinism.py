"""Determinism: the same suite run twice, each time in a fresh process with a fresh cache and
fresh baselines, gives the same numbers -- every report row, every per-item score, the same
quantized weights bit for bit. The scheme is calibrated (GPTQ through llm-compressor), so the
calibration sampling and every RNG involved must be seeded; the two runs also get different
``PYTHONHASHSEED`` values, so nothing may depend on set or dict-of-hash ordering."""

import json
from pathlib import Path

import pytest

from pytest_quant.results import TaskResult

DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.slow

SUITE = f"""\
model: tiny-llama-test
schemes:
  w4-gptq: {{method: gptq, weights: {{group_size: 64}}, calibration: {{samples: 8, seq_len: 64}}}}
tasks:
  corpus: {{perplexity: {DATA / 'corpus.txt'}, seq_len: 128}}
  arith:  {{task: pq_arith, include_path: {DATA / 'tasks'}, limit: 20}}
budgets:
  - {{name: four-bit, schemes: [w4-gptq], max_drop: 50%, mode: alarm}}
"""


def _results(cache: Path) -> dict[str, tuple]:
    """Every cached evaluation by key: the numbers and item ids (not the meta, which names cache paths)."""
    out = {}
    for path in sorted((cache / "results").glob("*.json")):
        r = TaskResult.from_json(json.loads(path.read_text()))
        out[path.stem] = (r.task, r.metric, r.value, r.item_ids, r.scores, r.weights, r.fingerprint)
    return out


def test_same_suite_twice_in_fresh_processes_gives_identical_numbers(pytester: pytest.Pytester, tmp_path: Path, monkeypatch):
    pytester.makefile(".quant.yaml", tiny=SUITE)
    runs = []
    for i in (1, 2):
        monkeypatch.setenv("PYTHONHASHSEED", str(i))
        cache, baselines, report = tmp_path / f"cache-{i}", tmp_path / f"baselines-{i}", tmp_path / f"report-{i}.json"
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", f"--quant-cache-dir={cache}", f"--quant-baseline-dir={baselines}",
            "--quant-update-baselines", f"--quant-report={report}",
        )
        result.assert_outcomes(passed=2)
        runs.append((cache, baselines, json.loads(report.read_text())["items"]))
    (cache_1, baselines_1, rows_1), (cache_2, baselines_2, rows_2) = runs

    assert len(rows_1) == 2 and rows_1 == rows_2  # every field of every row, floats compared exactly

    results_1, results_2 = _results(cache_1), _results(cache_2)
    assert len(results_1) == 4  # baseline and w4-gptq, on corpus and arith
    assert results_1 == results_2
    assert all(len(scores) == len(ids) > 0 for _, _, _, ids, scores, _, _ in results_1.values())  # per-item scores

    (key,) = [p.name for p in (cache_1 / "artifacts").iterdir()]
    assert (cache_1 / "artifacts" / key / "model.safetensors").read_bytes() == (cache_2 / "artifacts" / key / "model.safetensors").read_bytes()

    def baseline_tasks(folder: Path) -> dict:
        return {name: entry["result"] for name, entry in json.loads((folder / "tiny-llama-test.json").read_text())["tasks"].items()}

    assert baseline_tasks(baselines_1) == baseline_tasks(baselines_2)
