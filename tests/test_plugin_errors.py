"""Error isolation: a broken scheme, model or evaluation fails its own items with a readable
message (the file, field or value at fault; no library traceback) and every other item of the
same session still runs and passes.

One pytest session on ``tiny-llama-test`` holds, next to items that must pass:

- a ``checkpoint:`` scheme whose folder does not exist, and one whose safetensors file is truncated;
- a suite whose model folder has a corrupt config.json, and one whose weights are truncated;
- an evaluation that runs out of memory for real: a perplexity task with 131072-token windows
  makes transformers build a [T, T] attention mask for the padded batch (16 GiB), above the
  session's memory ceiling (``RLIMIT_DATA``, as on a CI runner), so torch's allocator refuses it.
"""

from __future__ import annotations

import json
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_DATA is enforced on Linux")]

# The session's memory ceiling; the probe makes sure the kernel enforces it before anything big runs.
CONFTEST = """\
import mmap
import resource

_, hard = resource.getrlimit(resource.RLIMIT_DATA)
resource.setrlimit(resource.RLIMIT_DATA, (6 << 30, hard))
try:
    mmap.mmap(-1, 7 << 30, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS).close()
except OSError:
    pass
else:
    raise SystemExit("RLIMIT_DATA is not enforced here")
"""

MAIN = f"""\
model: tiny-llama-test
schemes:
  w8: {{method: rtn, weights: {{bits: 8, group_size: 64}}}}
  w4: {{method: rtn, weights: {{bits: 4, group_size: 64}}}}
  missing: {{checkpoint: ./no/such/folder}}
  truncated: {{checkpoint: ./truncated-checkpoint}}
tasks:
  corpus: {{perplexity: {DATA / 'corpus.txt'}, seq_len: 128}}
  short: {{perplexity: {DATA / 'corpus.txt'}, seq_len: 64}}
  long-windows: {{perplexity: ./long.txt, seq_len: 131072}}
budgets:
  - {{name: before, schemes: [w8, missing, truncated], tasks: [corpus], max_drop: 50%, mode: point}}
  - {{compare: "w8 >= w4", tasks: [long-windows], mode: point}}
  - {{name: after, schemes: [w4], tasks: [short], max_drop: 50%, mode: point}}
"""

BROKEN = f"""\
model: {{name: {{name}}, path: ./{{name}}}}
schemes:
  w8: {{method: rtn, weights: {{bits: 8, group_size: 64}}}}
tasks:
  corpus: {{perplexity: {DATA / 'corpus.txt'}, seq_len: 128}}
budgets:
  - {{name: eight-bit, max_drop: 50%, mode: point}}
"""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from pytest_quant.backends.models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


def _truncated_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return weights


def test_each_broken_thing_fails_its_own_items_and_the_rest_pass(pytester: pytest.Pytester, tiny_model: Path, tmp_path: Path):
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".quant.yaml", main=MAIN)
    pytester.makefile(".quant.yaml", **{"bad-config": BROKEN.replace("{name}", "bad-config-model")})
    pytester.makefile(".quant.yaml", **{"bad-weights": BROKEN.replace("{name}", "bad-weights-model")})
    (pytester.path / "long.txt").write_text((DATA / "corpus.txt").read_text(encoding="utf-8") * 33, encoding="utf-8")
    truncated_ckpt = _truncated_copy(tiny_model, pytester.path / "truncated-checkpoint")
    truncated_model = _truncated_copy(tiny_model, pytester.path / "bad-weights-model")
    shutil.copytree(tiny_model, pytester.path / "bad-config-model")
    bad_config = pytester.path / "bad-config-model" / "config.json"
    bad_config.write_text(bad_config.read_text()[:40])

    report, junit = pytester.path / "report.json", pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--quant-cache-dir={tmp_path / 'cache'}", "--quant-update-baselines",
        f"--quant-report={report}", f"--junitxml={junit}", "-rA",
    )
    assert "RLIMIT_DATA is not enforced" not in result.stdout.str() + result.stderr.str()
    rows = {r["item"]: r for r in json.loads(report.read_text())["items"]}
    failures = {
        f"{case.get('classname')}::{case.get('name')}": (case.find("failure").text or "")
        for case in ET.parse(junit).getroot().iter("testcase") if case.find("failure") is not None
    }
    expected_errors = {
        "main.quant.yaml::before[missing-corpus]": ["checkpoint", "no/such/folder", "does not exist"],
        "main.quant.yaml::before[truncated-corpus]": ["checkpoint", str(truncated_ckpt), "is truncated or corrupt"],
        "bad-config.quant.yaml::eight-bit[w8-corpus]": ["model", str(bad_config), "is not valid JSON"],
        "bad-weights.quant.yaml::eight-bit[w8-corpus]": ["model", str(truncated_model), "is truncated or corrupt"],
        "main.quant.yaml::w8>=w4[long-windows]": [
            "out of memory while evaluating 'w4' on task 'long-windows' (batch_size 8, seq_len 131072)",
            "can't allocate memory", "lower tasks.long-windows.batch_size",
        ],
    }
    assert sorted(failures) == sorted(expected_errors), {k: v[-600:] for k, v in failures.items()}
    for name, words in expected_errors.items():
        text = failures[name]  # the item's whole longrepr: the explanation, no traceback
        assert "Traceback" not in text and "site-packages" not in text and ".py:" not in text, (name, text[-2000:])
        for word in words:
            assert word in text, (name, word, text)
        assert rows[name]["verdict"] == "error" and rows[name]["error"] == text.strip()

    # Everything else in the session ran, before and after the failures, and passed.
    result.assert_outcomes(passed=2, failed=5)
    assert rows["main.quant.yaml::before[w8-corpus]"]["verdict"] == "pass"
    assert rows["main.quant.yaml::after[w4-short]"]["verdict"] == "pass"


# -- out of memory raised as torch.OutOfMemoryError / MemoryError -------------------------------
# A CPU-only machine cannot make torch raise torch.OutOfMemoryError (the CUDA error type) or make
# Python raise MemoryError on cue, so these two test doubles stand in for the quantizer and the
# evaluator, registered under the real names for one test only; the session and cache around them are real.
def _oom(kind: str) -> BaseException:
    import torch

    if kind == "torch.OutOfMemoryError":
        return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.11 GiB total capacity)")
    return MemoryError()


class OutOfMemoryQuantizerDouble:
    """A test double for a quantizer that runs out of memory (a real OOM is tested above, under RLIMIT_DATA)."""

    kind = "MemoryError"
    name = "oom-double"

    def existing(self, scheme, *, source):
        return None

    def quantize(self, model_dir, scheme, out_dir):
        (Path(out_dir) / "config.json").write_text("{}")  # something half-written, then the failure
        raise _oom(self.kind)


class OutOfMemoryEvaluatorDouble:
    """A test double for an evaluator whose run runs out of memory."""

    kind = "MemoryError"
    name = "oom-double"
    measures_peak_memory = False

    def __init__(self, *, cache_dir=None):
        pass

    def environment_versions(self, evaluation):
        return {}

    def run(self, model_dir, task, evaluation, *, seed=0):
        raise _oom(self.kind)


@pytest.mark.parametrize("kind", ["torch.OutOfMemoryError", "MemoryError"])
def test_out_of_memory_while_quantizing_or_evaluating_is_explained(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("transformers")
    from pytest_quant import backends
    from pytest_quant.backends.cache import ArtifactCache
    from pytest_quant.config import EvaluationConfig, ModelConfig, SchemeConfig, TaskConfig
    from pytest_quant.errors import QuantOutOfMemoryError
    from pytest_quant.session import Options, QuantSession
    from pytest_quant.artifacts import artifact, artifact_key
    from pytest_quant.evaluation import evaluate

    monkeypatch.setitem(backends.QUANTIZERS, "llmcompressor", f"{__name__}:OutOfMemoryQuantizerDouble")
    monkeypatch.setitem(backends.EVALUATORS, "perplexity", f"{__name__}:OutOfMemoryEvaluatorDouble")
    monkeypatch.setattr(OutOfMemoryQuantizerDouble, "kind", kind)
    monkeypatch.setattr(OutOfMemoryEvaluatorDouble, "kind", kind)
    session = QuantSession(Options(baseline_dir=tmp_path / "baselines", cache_dir=tmp_path / "cache"))
    model = ModelConfig(name="tiny-llama-test")
    gptq = SchemeConfig(name="w4-gptq", method="gptq", weights={"group_size": 64}, calibration={"samples": 16, "seq_len": 512})

    with pytest.raises(QuantOutOfMemoryError) as exc:
        artifact(session, model, gptq)
    msg = str(exc.value)
    assert msg.startswith("out of memory while quantizing tiny-llama-test with scheme 'w4-gptq' (gptq W4A16 g64)")
    assert kind.split(".")[-1] in msg and "lower schemes.w4-gptq.calibration.samples or .seq_len (now 16 x 512 tokens)" in msg
    assert exc.value.__cause__ is None and exc.value.__context__ is None  # the failed attempt's frames are not kept
    key = artifact_key(session, model, gptq)
    assert ArtifactCache(tmp_path / "cache").lookup(key) is None and not list((tmp_path / "cache" / "artifacts").iterdir())

    task = TaskConfig(name="corpus", perplexity=str(DATA / "corpus.txt"), seq_len=128, batch_size=4)
    with pytest.raises(QuantOutOfMemoryError, match=r"^out of memory while evaluating 'baseline' on task 'corpus' "
                       r"\(batch_size 4, seq_len 128\): .*\n  lower tasks.corpus.batch_size"):
        evaluate(session, model, None, task, EvaluationConfig())
    assert not (tmp_path / "cache" / "results").exists() or not list((tmp_path / "cache" / "results").iterdir())
