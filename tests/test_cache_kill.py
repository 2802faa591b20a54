"""``kill -9`` during quantization leaves no cache entry that looks valid.

A real GPTQ build of ``tiny-llama-test`` (llm-compressor) runs in a child process
through ``QuantSession.artifact``; the child is SIGKILLed while the build is in
progress -- once calibrating (the progress line has been printed and the temporary
folder exists), once while the checkpoint is being written (the first file has
appeared in the temporary folder). The child is stopped (SIGSTOP) before the state is
checked, so the SIGKILL lands in exactly that state. The key must then have no entry,
and the next build of the same key must succeed, sweep the leftovers and give a
loadable model.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCHEME = {"name": "w4-gptq", "method": "gptq", "weights": {"group_size": 64}, "calibration": {"samples": 8, "seq_len": 64}}

CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pytest_quant.config import ModelConfig, SchemeConfig
    from pytest_quant.session import Options, QuantSession
    from pytest_quant.artifacts import artifact, artifact_key

    cache, seed = Path(sys.argv[1]), int(sys.argv[2])
    scheme = SchemeConfig.model_validate({**%r, "calibration": {**%r["calibration"], "seed": seed}})
    session = QuantSession(Options(baseline_dir=cache / "baselines", cache_dir=cache), progress=lambda m: print(m, flush=True))
    model = ModelConfig(name="tiny-llama-test")
    print("key", artifact_key(session, model, scheme), flush=True)
    print("artifact", artifact(session, model, scheme), flush=True)
""") % (SCHEME, SCHEME)


def _start(cache: Path, seed: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(cache), str(seed)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # llm-compressor's log lines come through stdout too
        if line.startswith("key "):
            key = line.split()[1]
        elif line.startswith("quantizing tiny-llama-test with w4-gptq") and line.rstrip().endswith("..."):
            return proc, key  # build() has started: the temporary folder exists
    raise AssertionError(f"the child ended (rc {proc.wait()}) before it started quantizing")


def _kill_while(cache: Path, when: str, seed: int) -> tuple[str, list[Path]] | None:
    """Start a build, SIGKILL it at ``when``; the key and the temporary folders seen, or None if the build won the race."""
    proc, key = _start(cache, seed)
    artifacts = cache / "artifacts"
    tmp = list(artifacts.glob(f".tmp-{key}-*"))
    assert len(tmp) == 1 and not (artifacts / key).exists(), "no temporary folder while quantizing"
    if when == "writing":
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if any(tmp[0].iterdir()):
                    break
            except FileNotFoundError:  # already renamed into place: the race is lost
                break
            time.sleep(0.001)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGSTOP)  # freeze it, then look: SIGKILL lands in exactly the state checked below
        _, status = os.waitpid(proc.pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    if proc.returncode is not None or (artifacts / key).exists():  # the build finished between two polls
        proc.kill()
        proc.wait()
        return None
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    return key, tmp


@pytest.mark.parametrize("when", ["calibrating", "writing"])
def test_kill_during_quantization_leaves_no_entry_and_the_next_build_succeeds(tmp_path: Path, when: str) -> None:
    pytest.importorskip("llmcompressor")
    from pytest_quant.backends.cache import COMPLETE, ArtifactCache

    for seed in range(3):  # "writing" lasts ~0.1 s; on the rare miss, try again with another key and cache
        cache = tmp_path / f"cache-{seed}"
        killed = _kill_while(cache, when, seed)
        if killed is not None:
            break
    else:
        pytest.fail("the build finished before it could be killed while writing, three times")
    key, tmp = killed
    artifacts = cache / "artifacts"
    if when == "writing":
        assert any(tmp[0].iterdir()) and not (tmp[0] / COMPLETE).exists()  # half-written, and left behind

    # No entry: lookup finds nothing, no folder under the key's name, nothing logged as built.
    assert ArtifactCache(cache).lookup(key) is None
    assert not (artifacts / key).exists()
    assert all(p.name.startswith(f".tmp-{key}-") for p in artifacts.iterdir())
    assert [b for b in ArtifactCache(cache).builds() if b["key"] == key] == []

    # The next build of the same key (in this process) succeeds, sweeps the leftovers, and loads.
    import torch

    from pytest_quant.backends.models import clear_model_cache, load_causal_lm
    from pytest_quant.config import ModelConfig, SchemeConfig
    from pytest_quant.session import Options, QuantSession
    from pytest_quant.artifacts import artifact, artifact_key

    scheme = SchemeConfig.model_validate({**SCHEME, "calibration": {**SCHEME["calibration"], "seed": seed}})
    session = QuantSession(Options(baseline_dir=tmp_path / "baselines", cache_dir=cache))
    model = ModelConfig(name="tiny-llama-test")
    assert artifact_key(session, model, scheme) == key
    path = artifact(session, model, scheme)
    assert path == artifacts / key and ArtifactCache(cache).lookup(key) == path
    assert not list(artifacts.glob(".tmp-*"))
    assert [b["kind"] for b in ArtifactCache(cache).builds() if b["key"] == key] == ["artifact"]
    loaded, tok = load_causal_lm(path)
    with torch.inference_mode():
        logits = loaded(**tok(["The cache survived a kill."], return_tensors="pt")).logits
    assert torch.isfinite(logits).all()
    clear_model_cache()
