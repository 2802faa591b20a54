"""Repository-wide test settings.

No hub is reachable on CI or on an air-gapped laptop: make every Hugging Face
library work offline instead of timing out, and keep Hypothesis runs bounded.
"""

import os

import pytest

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:
    from hypothesis import settings
except ImportError:  # the [test] extra is not installed
    pass
else:
    settings.register_profile("ci", deadline=None, print_blob=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# In CI the whole stack is installed on purpose: a test that skips because a
# library or wheel is missing would turn a broken install into a green run.
# `make test` sets PYTEST_QUANT_REQUIRE_STACK=1, which makes such skips failures.
_MISSING = ("could not import", "not installed", "No module named")
# Likewise PYTEST_QUANT_REQUIRE_VLLM=1 (also set by `make test`, which builds .venv-vllm first):
# a test skipped because the vLLM environment is absent fails, so the vllm backend cannot go untested.
_NO_VLLM = "no vLLM environment"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if not report.skipped or hasattr(report, "wasxfail"):
        return report
    reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if os.environ.get("PYTEST_QUANT_REQUIRE_STACK") and any(m in reason for m in _MISSING):
        report.outcome = "failed"
        report.longrepr = f"skipped for a missing dependency while PYTEST_QUANT_REQUIRE_STACK=1: {reason}"
    elif os.environ.get("PYTEST_QUANT_REQUIRE_VLLM") and _NO_VLLM in reason:
        report.outcome = "failed"
        report.longrepr = f"skipped for a missing vLLM environment while PYTEST_QUANT_REQUIRE_VLLM=1: {reason}"
    return report
