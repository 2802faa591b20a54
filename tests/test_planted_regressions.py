"""Planted regressions stay caught: each one below must turn a run red, with the message that names it.

End to end (a pytest subprocess per run, real quantization and evaluation): 2-bit RTN on the embedded
SmolLM2 against the committed baseline at the demo's limits, then on the tiny model a tampered and a
truncated baseline, baselines recorded under another chat template, dtype or few-shot seed, a scheme
whose outputs are NaN, and a scheme whose evaluation is skipped under --quant-strict.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from quant_runs import require_embedded_stack, run

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.slow

TWO_BIT = """\
model: smollm2-135m-instruct
evaluation: {batch_size: 16}
schemes:
  w2-rtn: {method: rtn, weights: {bits: 2, group_size: 64}}
tasks:
  arc_easy:       {limit: 50}
  lambada_openai: {sequential: {first: 50, max: 400}}
budgets:
  - {name: loses-under-1pct, schemes: [w2-rtn], max_drop: 1%}
"""


def test_two_bit_rtn_under_a_one_percent_budget_fails_in_every_mode(pytester: pytest.Pytester, tmp_path: Path):
    """The demo's own tasks and limits, the committed baseline: 2-bit RTN is a violation shown in every mode."""
    require_embedded_stack()
    pytester.makefile(".quant.yaml", two_bit=TWO_BIT)
    for mode in ("point", "alarm", "gate"):
        report = pytester.path / f"{mode}.json"
        result = run(pytester, tmp_path / "cache", f"--quant-baseline-dir={ROOT / 'baselines'}", f"--quant-mode={mode}",
                     f"--quant-report={report}")
        result.assert_outcomes(failed=2)
        rows = json.loads(report.read_text())["items"]
        assert {r["evidence"] for r in rows} == {"violated"} and {r["verdict"] for r in rows} == {"fail"}, rows
        assert all(r["ci_low"] > 0.01 for r in rows)  # the loss's lower bound alone is far past the budget
        result.stdout.no_fnmatch_line("*stale baseline*")


SUITE = f"""\
model: MODEL
seed: SEED
evaluation: {{dtype: DTYPE}}
schemes:
  w8-rtn: {{method: rtn, weights: {{bits: 8, group_size: 64}}}}
tasks:
  arith: {{task: pq_arith, include_path: {DATA / 'tasks'}, limit: 12}}
  chat:  {{task: pq_echo, include_path: {DATA / 'tasks'}, limit: 6, apply_chat_template: true}}
budgets:
  - {{name: loose, schemes: [w8-rtn], max_drop: 50pp, mode: alarm}}
"""


def _build_tiny(folder: Path, *, nan_layer: str | None = None) -> Path:
    """A tiny Llama folder built in a subprocess (torch is never imported into a pytester test's process:
    pytester's module snapshot would import it twice). ``nan_layer``: a weight set to NaN."""
    pytest.importorskip("transformers")
    script = (
        "import sys, torch\n"
        "from safetensors.torch import load_file, save_file\n"
        "from pytest_quant.backends.models import build_tiny_llama\n"
        "out = build_tiny_llama(sys.argv[1])\n"
        "if sys.argv[2]:\n"
        "    w = load_file(out / 'model.safetensors')\n"
        "    name = next(k for k in w if k.endswith(sys.argv[2]))\n"
        "    w[name] = torch.full_like(w[name], float('nan'))\n"
        "    save_file(w, out / 'model.safetensors', metadata={'format': 'pt'})\n"
    )
    subprocess.run([sys.executable, "-c", script, str(folder), nan_layer or ""], check=True)
    return folder


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    return _build_tiny(tmp_path / "tiny-llama")


def _suite(model: Path, *, seed: int = 0, dtype: str = "float32") -> str:
    return SUITE.replace("MODEL", str(model)).replace("SEED", str(seed)).replace("DTYPE", dtype)


def test_a_tampered_or_truncated_baseline_fails_loudly(pytester: pytest.Pytester, tmp_path: Path, tiny_folder: Path):
    pytester.makefile(".quant.yaml", tiny=_suite(tiny_folder))
    cache = tmp_path / "cache"
    run(pytester, cache, "--quant-update-baselines").assert_outcomes(passed=2)
    (path,) = (pytester.path / "baselines").glob("*.json")
    good = path.read_text()
    doc = json.loads(good)
    doc["tasks"]["arith"]["result"]["scores"][0] = 1.0 - doc["tasks"]["arith"]["result"]["scores"][0]  # one item flipped
    path.write_text(json.dumps(doc, indent=1))
    tampered = run(pytester, cache)
    tampered.assert_outcomes(failed=2)
    tampered.stdout.fnmatch_lines(["*baseline checksum mismatch: the file was edited by hand or truncated*"])
    path.write_text(good[: len(good) // 2])
    truncated = run(pytester, cache)
    truncated.assert_outcomes(failed=2)
    truncated.stdout.fnmatch_lines(["*corrupt baseline (not valid JSON*"])


def test_a_baseline_recorded_under_another_template_dtype_or_seed_is_stale(
    pytester: pytest.Pytester, tmp_path: Path, tiny_folder: Path
):
    pytester.makefile(".quant.yaml", tiny=_suite(tiny_folder))
    cache = tmp_path / "cache"
    run(pytester, cache, "--quant-update-baselines").assert_outcomes(passed=2)
    for change, field in ((dict(seed=1234), "task.seed"), (dict(dtype="bfloat16"), "task.dtype")):
        pytester.makefile(".quant.yaml", tiny=_suite(tiny_folder, **change))
        stale = run(pytester, cache)
        stale.assert_outcomes(failed=2)
        stale.stdout.fnmatch_lines([f"*stale baseline for task 'arith':*", f"*{field}: *(baseline) != *(suite)*"])
    pytester.makefile(".quant.yaml", tiny=_suite(tiny_folder))
    other = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # another template, same model weights
    jinja = tiny_folder / "chat_template.jinja"  # where transformers 5 saves it (tokenizer_config.json before)
    if jinja.is_file():
        jinja.write_text(other)
    else:
        config = tiny_folder / "tokenizer_config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "chat_template": other}))
    template = run(pytester, cache)
    template.assert_outcomes(passed=1, failed=1)  # the chat task only: the other never applies the template
    template.stdout.fnmatch_lines(["*stale baseline for task 'chat':*", "*task.chat_template: 'sha:*(baseline) != 'sha:*"])


NAN_SUITE = f"""\
model: tiny-llama-test
schemes:
  broken: {{checkpoint: CHECKPOINT}}
tasks:
  corpus: {{perplexity: {DATA / 'corpus.txt'}, seq_len: 64}}
budgets:
  - {{name: any-loss, schemes: [broken], max_drop: 99%, mode: MODE}}
"""


def test_a_scheme_whose_outputs_are_nan_fails_in_every_mode(pytester: pytest.Pytester, tmp_path: Path):
    broken = _build_tiny(tmp_path / "broken", nan_layer="mlp.down_proj.weight")
    cache = tmp_path / "cache"
    for mode in ("point", "alarm", "gate"):
        pytester.makefile(".quant.yaml", nan=NAN_SUITE.replace("CHECKPOINT", str(broken)).replace("MODE", mode))
        result = run(pytester, cache, "--quant-update-baselines")
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["broken: task 'corpus' metric 'perplexity' is nan"])


SKIPPED = f"""\
model: tiny-llama-test
schemes:
  w4-awq: {{method: awq, backend: autoawq, weights: {{group_size: 64}}, calibration: {{samples: 8, seq_len: 64}}}}
tasks:
  corpus: {{perplexity: {DATA / 'corpus.txt'}, seq_len: 128}}
budgets:
  - {{name: awq-loss, schemes: [w4-awq], max_drop: 5%, mode: gate}}
"""


def test_a_scheme_whose_evaluation_is_skipped_fails_under_strict(pytester: pytest.Pytester, tmp_path: Path):
    """AutoAWQ is made missing for real in the subprocess (``sys.modules["awq"] = None``): its items skip."""
    pytester.makeconftest('import sys\n\nsys.modules["awq"] = None\n')
    pytester.makefile(".quant.yaml", skipped=SKIPPED)
    lax = run(pytester, tmp_path / "cache")
    assert lax.ret == pytest.ExitCode.OK and lax.parseoutcomes() == {"skipped": 1}
    strict = run(pytester, tmp_path / "cache", "--quant-strict")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.stdout.fnmatch_lines(["*--quant-strict: the session fails*", "*skipped.quant.yaml::awq-loss[[]w4-awq-corpus]: skipped:*"])
