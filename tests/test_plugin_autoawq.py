"""``backend: autoawq`` without AutoAWQ installed: the items are skipped with the install command as
the reason (never an error, never a silent pass), in a YAML suite (at collection, before any baseline
or model work) and in a Python suite (``quant_model``). An AutoAWQ scheme it cannot run is a
collection error naming file, line, field and value.

AutoAWQ's absence is real in the pytest subprocess: its conftest sets ``sys.modules["awq"] = None``,
Python's documented way to make ``import awq`` raise ModuleNotFoundError and
``importlib.util.find_spec("awq")`` return None, whether or not AutoAWQ is installed here.
"""

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
INSTALL = "pip install --no-deps autoawq==0.2.9"

SUITE = f"""\
model: tiny-llama-test
schemes:
  w4-awq: {{method: awq, backend: autoawq, weights: {{group_size: 64}}, calibration: {{samples: 8, seq_len: 64}}}}
  w8-rtn: {{method: rtn, weights: {{bits: 8, group_size: 64}}}}
tasks:
  corpus: {{perplexity: {DATA / 'corpus.txt'}, seq_len: 128}}
budgets:
  - {{name: awq-loss, schemes: [w4-awq], max_drop: 5%, mode: point}}
  - {{compare: "w4-awq >= w8-rtn - 5%", mode: point}}
  - {{name: awq-memory, schemes: [w4-awq], max_memory: 0.5x}}
"""

PYTHON_SUITE = """\
def test_awq(quant_model):
    quant_model("tiny-llama-test", {"method": "awq", "backend": "autoawq", "weights": {"group_size": 64},
                                    "calibration": {"samples": 8, "seq_len": 64}})
    raise AssertionError("not reached: AutoAWQ is missing")


def test_unrelated():
    pass
"""

HIDE_AWQ = """\
import sys

sys.modules["awq"] = None  # AutoAWQ is not installed, as far as this session can tell
"""


def test_missing_autoawq_skips_its_schemes_with_the_install_command(pytester: pytest.Pytester, tmp_path: Path):
    pytester.makeconftest(HIDE_AWQ)
    pytester.makefile(".quant.yaml", tiny=SUITE)
    pytester.makepyfile(test_python_suite=PYTHON_SUITE)
    cache = tmp_path / "cache"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--quant-cache-dir={cache}", "-rs")
    result.assert_outcomes(passed=1, skipped=4)  # the three suite items and test_awq; test_unrelated runs
    reason = f"backend 'autoawq' needs the 'awq' module, which is not installed: {INSTALL}*"
    result.stdout.fnmatch_lines([f"SKIPPED [[]3] tiny.quant.yaml: scheme 'w4-awq': {reason}"])  # folded per file
    result.stdout.fnmatch_lines([f"SKIPPED [[]1] test_python_suite.py:2: {reason}"])  # the line that asked for the model
    result.stdout.no_fnmatch_line("*quantizing*")
    result.stdout.no_fnmatch_line("*evaluating*")
    assert not (cache / "builds.log").exists()  # no model, baseline or artifact was built for a skip
    assert not (pytester.path / "baselines").exists()


def test_unsupported_autoawq_scheme_is_a_collection_error(pytester: pytest.Pytester):
    pytester.makefile(".quant.yaml", tiny=SUITE.replace("weights: {group_size: 64}", "weights: {group_size: 32}"))
    result = pytester.runpytest_subprocess("--collect-only")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*tiny.quant.yaml:3: schemes.w4-awq.weights.group_size: backend 'autoawq' takes group_size 64 or 128 (got 32)*"])
    result.stdout.no_fnmatch_line("*Traceback*")
