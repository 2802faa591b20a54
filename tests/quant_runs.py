"""Running YAML suites in pytester, shared by the plugin tests.

Each run is a subprocess: torch cannot be imported twice in one process, which in-process runs would do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_quant.backends.cache import ArtifactCache


def run(pytester: pytest.Pytester, cache_dir: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--quant-cache-dir={cache_dir}", "-rA", *args)


def builds(cache_dir: Path, kind: str) -> list[dict]:
    """The cache's builds.log entries of one kind (``artifact``, ``result``, ``run``, ``efficiency``)."""
    return [e for e in ArtifactCache(cache_dir).builds() if e["kind"] == kind]
