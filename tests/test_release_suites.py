"""The GPU release suites in suites/ collect and validate on a CPU machine and skip with reasons."""

from pathlib import Path

import pytest

SUITES = Path(__file__).parent.parent / "suites"


def test_release_suites_collect_on_cpu(pytester: pytest.Pytester):
    result = pytester.runpytest_subprocess("--collect-only", "-q", "-m", "gpu", str(SUITES), "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    out = result.stdout.str()
    for name in ("llama31_8b_release", "llama31_70b_release", "llama31_405b_release"):
        assert f"{name}.quant.yaml::" in out
    result.stdout.fnmatch_lines(["*llama31_405b_release.quant.yaml::fp8>=w8a8-sq[[]mmlu_pro]*"])
    result.stdout.fnmatch_lines(["*llama31_70b_release.quant.yaml::four-bit-70b-beats-bf16-8b[[]gsm8k]*"])
    assert "smollm2_cpu.quant.yaml::" not in out  # the CPU demo is not a gpu suite (its collection warnings may name it)


def test_release_suites_skip_without_gpus(pytester: pytest.Pytester):
    result = pytester.runpytest_subprocess("-m", "gpu", "-rs", str(SUITES / "llama31_70b_release.quant.yaml"),
                                           str(SUITES / "llama31_405b_release.quant.yaml"), "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) > 0 and "failed" not in outcomes and "error" not in outcomes
    result.stdout.fnmatch_lines(["*needs 4 CUDA device(s); 0 visible on this machine*"])
    result.stdout.fnmatch_lines(["*needs 16 CUDA device(s); 0 visible on this machine (set RAY_ADDRESS*"])


def test_release_suites_collect_without_an_undecidable_budget(pytester: pytest.Pytester):
    """Every gate and alarm of the GPU release suites is decidable at its task's full size with the flip
    rates the suites state (planning warns otherwise; -W error turns a warning into a collection error)."""
    result = pytester.runpytest_subprocess("--collect-only", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                                           "-W", "error::pytest_quant.errors.PytestQuantWarning",
                                           *(str(p) for p in sorted(SUITES.glob("llama31_*_release.quant.yaml"))))
    assert result.ret == 0, result.stdout.str()
    assert "PytestQuantWarning" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*llama31_8b_release.quant.yaml::eight-bit-average-loses-under-1pct[[]fp8-pooled]*"])
