"""Suite loading: valid suites expand to stable items; invalid ones name file, line, field and value."""

import textwrap

import pytest

from pytest_quant.config import SchemeConfig
from pytest_quant.errors import QuantConfigError
from pytest_quant.suite import expand_checks, load_suite_text

GOOD = textwrap.dedent(
    """\
    model: tiny-llama-test
    schemes:
      w8a16-rtn:  {method: rtn, weights: {bits: 8, group_size: 64}}
      w4a16-gptq: {method: gptq, weights: {bits: 4, group_size: 64}, calibration: {samples: 32, seq_len: 128}}
      w8a8-sq:    {method: smoothquant, smoothing_strength: 0.8}
      fp8:        {method: fp8}
      release:    {checkpoint: ./out/my-w4a16}
    tasks:
      arc_easy:  {metric: acc_norm, limit: 500}
      my_ppl:    {perplexity: ./corpus.txt}
    budgets:
      - {schemes: [w8a16-rtn, fp8], max_drop: 1%}
      - {schemes: [w4a16-gptq],     max_drop: 2pp, tasks: [arc_easy]}
      - {compare: "fp8 >= w8a8-sq"}
    """
)


def test_good_suite_expands_to_stable_ids():
    suite, lines = load_suite_text(GOOD, "s.quant.yaml")
    names = [c.name for c in expand_checks(suite, lines)]
    assert names == [
        "drop<=1%[w8a16-rtn-arc_easy]", "drop<=1%[w8a16-rtn-my_ppl]", "drop<=1%[fp8-arc_easy]",
        "drop<=1%[fp8-my_ppl]", "drop<=2pp[w4a16-gptq-arc_easy]", "fp8>=w8a8-sq[arc_easy]", "fp8>=w8a8-sq[my_ppl]",
    ]
    assert [c.line for c in expand_checks(suite, lines)][-1] == 14


def test_presets_fill_schemes():
    suite, _ = load_suite_text(GOOD, "s.quant.yaml")
    gptq = suite.schemes["w4a16-gptq"]
    assert gptq.weights.bits == 4 and gptq.weights.group_size == 64 and gptq.calibration.samples == 32
    sq = suite.schemes["w8a8-sq"]
    assert sq.activations.type == "int" and sq.weights.bits == 8 and sq.calibration is not None
    fp8 = suite.schemes["fp8"]
    assert fp8.weights.type == "float" and fp8.activations.dynamic and fp8.calibration is None
    static = SchemeConfig(name="s", method="fp8", activations={"type": "float", "dynamic": False})
    assert static.calibration is not None  # static scales need calibration data
    assert suite.schemes["w8a16-rtn"].backend == "reference"


def assert_error(text: str, where: str, words: str) -> None:
    """Loading ``text`` as s.quant.yaml fails with a message that starts at ``where`` and says ``words``."""
    with pytest.raises(QuantConfigError) as exc:
        load_suite_text(text, "s.quant.yaml")
    assert str(exc.value).startswith(where), str(exc.value)
    assert words in str(exc.value)


@pytest.mark.parametrize(
    "edit,where,words",
    [
        (("bits: 4,", "bitz: 4,"), "s.quant.yaml:4: schemes.w4a16-gptq.weights.bitz", "unknown key 'bitz'"),
        (("max_drop: 2pp", "max_drop: 2"), "s.quant.yaml:13: budgets[1].max_drop", "ambiguous"),
        (("fp8 >= w8a8-sq", "fp9 >= w8a8-sq"), "s.quant.yaml:14: budgets[2].compare", "unknown scheme 'fp9'"),
        (("method: rtn", "method: rtx"), "s.quant.yaml:3: schemes.w8a16-rtn.method", "'rtx'"),
        (("limit: 500", "limit: -3"), "s.quant.yaml:9: tasks.arc_easy.limit", "-3"),
        (("{method: fp8}", "{method: fp8}\n  fp8: {method: rtn}"), "s.quant.yaml:7: schemes.fp8", "duplicate key"),
        (("tasks: [arc_easy]", "tasks: [arc]"), "s.quant.yaml:13: budgets[1].tasks", "unknown task 'arc'"),
        (("{method: fp8}", "{method: gptq, activations: {type: int}}"), "s.quant.yaml:6: schemes.fp8", "weight-only"),
        (("{checkpoint: ./out/my-w4a16}", "{checkpoint: ./x, method: rtn}"), "s.quant.yaml:7: schemes.release", "exactly one"),
        (("{method: fp8}", "{method: rtn, backend: vllm}"), "s.quant.yaml:6: schemes.fp8", "no backend 'vllm'"),
        (("model: tiny-llama-test\n", ""), "s.quant.yaml:1: model", "Field required"),
        (("acc_norm, limit", "acc_norm, perplexity: x, limit"), "s.quant.yaml:9: tasks.arc_easy", "perplexity"),
        (("{method: fp8}", "{method: gptq, weight_rounding: rtn}"), "s.quant.yaml:6: schemes.fp8", "applies to 'smoothquant'"),
        (("smoothing_strength: 0.8}", "smoothing_strength: 0.8, weight_rounding: rtn, dampening_frac: 0.1}"),
         "s.quant.yaml:5: schemes.w8a8-sq", "GPTQ setting"),
        (("smoothing_strength: 0.8}", "smoothing_strength: 0.8, weight_rounding: awq}"),
         "s.quant.yaml:5: schemes.w8a8-sq.weight_rounding", "'awq'"),
    ],
)
def test_errors_name_file_line_field_and_value(edit, where, words):
    text = GOOD.replace(*edit)
    assert text != GOOD
    assert_error(text, where, words)


def test_absolute_budget_on_perplexity_is_rejected():
    with pytest.raises(QuantConfigError, match=r"budgets\[3\].max_drop: task 'my_ppl' reports 'perplexity', lower is better with no 0..1 scale"):
        load_suite_text(GOOD + "  - {schemes: [fp8], max_drop: 2pp}\n", "s.quant.yaml")


@pytest.mark.parametrize("text", ["model: [", "[1, 2]", "", "model: x\nschemes: {}\ntasks: {a: {}}\nbudgets: [{max_drop: 1%}]"])
def test_structural_errors(text):
    with pytest.raises(QuantConfigError, match="s.quant.yaml"):
        load_suite_text(text, "s.quant.yaml")


CROSS_MODEL = textwrap.dedent(
    """\
    model: {name: meta-llama/Llama-3.1-70B-Instruct, dtype: bfloat16}
    evaluation: {backend: vllm, backend_args: {tensor_parallel_size: 4, gpu_memory_utilization: 0.9}}
    references:
      llama-8b: {name: meta-llama/Llama-3.1-8B-Instruct, dtype: bfloat16, backend_args: {tensor_parallel_size: 1}}
      smol: ./models/smol
    schemes:
      w4a16-gptq: {method: gptq, weights: {bits: 4}}
    tasks:
      arc_challenge: {metric: acc_norm}
    budgets:
      - {compare: "w4a16-gptq >= llama-8b"}
      - {compare: "llama-8b <= baseline - 1pp"}
    """
)


def test_reference_models_expand_to_cross_model_comparisons(tmp_path):
    from pytest_quant.suite import resolve_paths

    suite, lines = load_suite_text(CROSS_MODEL, "s.quant.yaml")
    assert [c.name for c in expand_checks(suite, lines)] == [
        "w4a16-gptq>=llama-8b[arc_challenge]", "baseline>=llama-8b-1pp[arc_challenge]",
    ]
    model, evaluation = suite.reference_run("llama-8b")
    assert (model.name, model.dtype) == ("meta-llama/Llama-3.1-8B-Instruct", "bfloat16")
    # the reference's backend_args are merged over the suite's: its own parallelism, the rest shared
    assert evaluation.backend_args == {"tensor_parallel_size": 1, "gpu_memory_utilization": 0.9}
    assert evaluation.backend == "vllm" and suite.evaluation.backend_args["tensor_parallel_size"] == 4
    resolved = resolve_paths(suite, tmp_path)
    assert resolved.references["smol"].path == str(tmp_path / "models" / "smol")


@pytest.mark.parametrize(
    "edit,where,words",
    [
        (("w4a16-gptq >= llama-8b", "w4a16-gptq >= llama-7b"), "s.quant.yaml:11: budgets[0].compare",
         "unknown scheme 'llama-7b'; known: w4a16-gptq; reference models: llama-8b, smol"),
        (('- {compare: "llama-8b <= baseline - 1pp"}', "- {schemes: [llama-8b], max_drop: 1%}"),
         "s.quant.yaml:12: budgets[1].schemes", "'llama-8b' is a reference model, not a scheme"),
        (("  smol: ./models/smol", "  w4a16-gptq: ./models/smol"), "s.quant.yaml:5: references.w4a16-gptq",
         "also a scheme"),
        (("  smol: ./models/smol", "  baseline: ./models/smol"), "s.quant.yaml:5: references.baseline", "not a usable reference model name"),
        (("dtype: bfloat16, backend_args", "dtype: bf16, backend_args"), "s.quant.yaml:4: references.llama-8b.dtype", "'bf16'"),
    ],
)
def test_reference_model_errors_name_the_field(edit, where, words):
    text = CROSS_MODEL.replace(*edit)
    assert text != CROSS_MODEL
    assert_error(text, where, words)
