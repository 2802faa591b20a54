"""A budget that was never evaluated is not a pass: --quant-strict, and missing kernels on a GPU.

The evaluator here is a test double (``KernelMissingEvaluatorDouble``): a kernel missing on a GPU
cannot be produced on this CPU machine, so the double raises what vLLM's worker raises then
(KernelUnavailable). Everything else (the tiny model, RTN, the items, the reporter) is real.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from quant_runs import run

DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.slow

DOUBLE = """\
from pytest_quant import backends
from pytest_quant.errors import KernelUnavailable


class KernelMissingEvaluatorDouble:
    \"\"\"Test double: an evaluation engine without a kernel for any model on this device.\"\"\"

    name = "kernel-missing-double"
    measures_peak_memory = False

    def __init__(self, *, cache_dir=None):
        pass

    def environment_versions(self, evaluation):
        return {}

    def run(self, model_dir, task, evaluation, *, seed=0):
        raise KernelUnavailable("no kernel for this checkpoint on this device (test double)")


backends.EVALUATORS["hf"] = "conftest:KernelMissingEvaluatorDouble"
"""

SUITE = f"""\
model: tiny-llama-test
evaluation: {{device: DEVICE}}
schemes:
  w8-rtn: {{method: rtn, weights: {{bits: 8, group_size: 64}}}}
tasks:
  arith: {{task: pq_arith, include_path: {DATA / 'tasks'}, limit: 8}}
budgets:
  - {{name: eight-bit, schemes: [w8-rtn], max_drop: 30pp}}
"""


def test_a_kernel_missing_on_a_cpu_skips_and_on_a_gpu_fails(pytester: pytest.Pytester, tmp_path: Path):
    pytester.makeconftest(DOUBLE)
    pytester.makefile(".quant.yaml", cpu=SUITE.replace("DEVICE", "cpu"), gpu=SUITE.replace("DEVICE", "cuda"))
    result = run(pytester, tmp_path / "cache", "--quant-update-baselines", "-rs")
    result.assert_outcomes(skipped=1, failed=1)
    result.stdout.fnmatch_lines([
        "*on device 'cuda' a missing kernel is a failure, not a skip: the scheme was never evaluated*",
        "SKIPPED [[]1] cpu.quant.yaml:8: no kernel for this checkpoint on this device (test double)",
    ])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize("workers", [[], ["-n", "2"]])
def test_strict_fails_a_session_whose_quant_items_were_skipped_or_not_collected(
    pytester: pytest.Pytester, tmp_path: Path, workers: list[str]
):
    pytester.makeconftest(DOUBLE)
    pytester.makefile(".quant.yaml", cpu=SUITE.replace("DEVICE", "cpu"))
    pytester.makepyfile(test_broken_suite="import a_module_that_does_not_exist\n")
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    lax = run(pytester, tmp_path / "cache", "--quant-update-baselines", "--continue-on-collection-errors", *workers)
    assert lax.ret == pytest.ExitCode.TESTS_FAILED  # the import error alone fails, as pytest always does
    strict_skip_only = run(pytester, tmp_path / "cache", "--quant-update-baselines", *workers,
                           "cpu.quant.yaml", "test_plain.py")
    assert strict_skip_only.ret == pytest.ExitCode.OK  # without --quant-strict a skipped gate is green...
    strict_skip_only.stdout.fnmatch_lines(["*1 quant item(s) or file(s) were not evaluated (--quant-strict fails*"])
    strict = run(pytester, tmp_path / "cache", "--quant-update-baselines", "--quant-strict", *workers,
                 "cpu.quant.yaml", "test_plain.py")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED  # ...and with it, red
    strict.stdout.fnmatch_lines([
        "*--quant-strict: the session fails: 1 quant item(s) or file(s) were not evaluated*",
        "*cpu.quant.yaml::eight-bit[[]w8-rtn-arith]: skipped: no kernel for this checkpoint*",
    ])
    collection = run(pytester, tmp_path / "cache", "--quant-strict", "--continue-on-collection-errors", *workers,
                     "test_broken_suite.py", "test_plain.py")
    assert collection.ret != pytest.ExitCode.OK
    collection.stdout.fnmatch_lines(["*test_broken_suite.py: not collected: *No module named 'a_module_that_does_not_exist'*"])


def test_strict_is_also_an_ini_setting(pytester: pytest.Pytester, tmp_path: Path):
    pytester.makeconftest(DOUBLE)
    pytester.makeini("[pytest]\nquant_strict = true\n")
    pytester.makefile(".quant.yaml", cpu=SUITE.replace("DEVICE", "cpu"))
    result = run(pytester, tmp_path / "cache", "--quant-update-baselines")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*--quant-strict: the session fails*"])
