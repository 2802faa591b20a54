"""No regression passes unseen: units, names, recovery, the baseline's identity, evidence in every report.

Unit level, no model: each test here failed before the change it pins (issue "Verdicts a release can
trust"), and each asserts the error or the number a user sees.
"""

from __future__ import annotations

import json
import math

import pytest

from pytest_quant.backends.cache import ArtifactCache
from pytest_quant.baseline import BaselineStore, Expectation
from pytest_quant.budget import Threshold, parse_threshold
from pytest_quant.config import EvaluationConfig, TaskConfig
from pytest_quant.errors import BaselineError, QuantConfigError, ResultError
from pytest_quant.evaluation import OPERATIONAL_BACKEND_ARGS, task_identity
from pytest_quant.report import markdown, table_lines, to_json
from pytest_quant.reporter import JUNIT_FIELDS, report_row
from pytest_quant.results import TaskResult
from pytest_quant.suite import load_suite_text
from pytest_quant.verdict import judge, judge_pooled

SUITE = """\
model: tiny-llama-test
schemes:
  w8: {method: rtn, weights: {bits: 8}}
  w4: {method: rtn, weights: {bits: 4, group_size: 64}}
tasks:
  arc: {task: arc_easy, limit: 50}
  ppl: {task: lambada_openai, metric: perplexity, limit: 50}
  corpus: {perplexity: ./corpus.txt}
budgets:
"""


def _result(scores, *, metric="acc", aggregation="mean", higher=True, weights=None, task="t") -> TaskResult:
    scores = tuple(float(s) for s in scores)
    value = sum(scores) / len(scores) if aggregation == "mean" else math.exp(sum(scores) / sum(weights or [1] * len(scores)))
    return TaskResult(task, metric, value, higher, aggregation, tuple(str(i) for i in range(len(scores))), scores,
                      None if weights is None else tuple(weights))


# -- units are never guessed ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "budget,field",
    [
        ("- {schemes: [w8], tasks: [ppl], max_drop: 2pp}", "budgets[0].max_drop"),
        ("- {schemes: [w8], tasks: [corpus], min_recovery: 2pp}", None),  # a recovery is a % already: refused earlier
        ('- {compare: "w8 >= w4 - 1pp", tasks: [ppl]}', "budgets[0].compare"),
        ('- {compare: "w8 >= w4 - 1pp", tasks: [corpus]}', "budgets[0].compare"),
        ("- {schemes: [w8], tasks: [arc, ppl], max_drop: 1%, pool: true}", "budgets[0].pool"),
    ],
)
def test_points_on_a_perplexity_metric_are_a_collection_error_naming_the_field(budget: str, field: str | None):
    with pytest.raises(QuantConfigError) as info:
        load_suite_text(SUITE + "  " + budget + "\n", "s.quant.yaml")
    if field is not None:
        assert f"s.quant.yaml:10: {field}:" in str(info.value)
        assert "perplexity" in str(info.value)


def test_points_on_a_metric_that_is_not_a_proportion_are_refused_when_judged():
    ref = _result([2.0, 3.0, 4.0] * 20, metric="bleu")
    cand = _result([1.9, 3.0, 4.0] * 20, metric="bleu")
    with pytest.raises(ResultError, match="'pp' means percentage points of a 0..1 metric.*not a 0..1 proportion"):
        judge(ref, cand, threshold=parse_threshold("2pp"), mode="gate", confidence=0.95)
    nll = [1.0, 2.0, 3.0] * 20
    ppl_r = _result(nll, metric="perplexity", aggregation="perplexity", higher=False)
    ppl_c = _result([v * 1.01 for v in nll], metric="perplexity", aggregation="perplexity", higher=False)
    with pytest.raises(ResultError, match="perplexity-type metric"):
        judge(ppl_r, ppl_c, threshold=Threshold(0.02, "absolute"), mode="alarm", confidence=0.95)


def test_a_relative_budget_against_a_zero_baseline_is_an_explained_result_error():
    zero, some = _result([0.0] * 40), _result([0.0] * 39 + [1.0])
    with pytest.raises(ResultError, match="relative to baseline's value, which is 0 on these 40 items"):
        judge(zero, some, threshold=parse_threshold("1%"), mode="gate", confidence=0.95)


def test_weights_that_are_not_positive_are_refused_where_results_are_checked():
    nll = [1.0, 2.0] * 20
    good = _result(nll, metric="perplexity", aggregation="perplexity", higher=False, weights=[1.0] * 40)
    bad = TaskResult("t", "perplexity", good.value, False, "perplexity", good.item_ids, good.scores, (0.0,) + (1.0,) * 39)
    with pytest.raises(ResultError, match="weight .* not a positive number"):
        judge(good, bad, threshold=parse_threshold("1%"), mode="point", confidence=0.95)


# -- recovery points the right way ------------------------------------------------------------------
def test_recovery_of_a_worse_perplexity_is_below_100_percent_in_every_format():
    nll = [1.0, 2.0, 3.0, 0.5] * 15
    ref = _result(nll, metric="perplexity", aggregation="perplexity", higher=False)
    cand = _result([v + 0.05 for v in nll], metric="perplexity", aggregation="perplexity", higher=False)
    out = judge(ref, cand, threshold=parse_threshold("10%"), mode="point", confidence=0.95)
    assert out.row["drop"] > 0 and out.row["recovery"] == pytest.approx(ref.value / cand.value) and out.row["recovery"] < 1
    assert "recovery: 95.12%" in out.explanation and "noise in the candidate's favour" not in out.explanation
    out.row.update({"model": "m", "scheme": "w4", "item": "x"})
    assert "| 95.12% |" in markdown([out.row])
    assert json.loads(to_json([out.row]))["items"][0]["recovery"] < 1


# -- names never leave the cache ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["../../x", "a/b", ".hidden", "x..y", "-x", "with space"])
def test_scheme_and_task_names_that_would_be_paths_are_refused(bad: str):
    for section, body in (("schemes", "{method: rtn}"), ("tasks", "{task: arc_easy}")):
        text = f"model: m\nschemes: {{ok: {{method: rtn}}}}\ntasks: {{ok: {{task: arc_easy}}}}\nbudgets: [{{max_drop: 1%}}]\n"
        text = text.replace(f"{section}: {{ok:", f"{section}: {{{json.dumps(bad)}: {body}, ok:")
        with pytest.raises(QuantConfigError, match="is not a usable"):
            load_suite_text(text, "s.quant.yaml")
    with pytest.raises(QuantConfigError, match="not a usable lm-eval task name"):
        load_suite_text(f"model: m\nschemes: {{w: {{method: rtn}}}}\ntasks: {{t: {{task: {json.dumps(bad)}}}}}\n"
                        "budgets: [{max_drop: 1%}]\n", "s.quant.yaml")


def test_the_cache_refuses_a_key_that_leads_out_of_its_folder(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    with pytest.raises(QuantConfigError, match="would leave the cache folder"):
        cache.result("../../escape", lambda: _result([1.0]))
    assert not (tmp_path / "escape.json").exists()


# -- a changed evaluation is a stale baseline ---------------------------------------------------------
NUMERICS = {"max_model_len": 2048, "add_bos_token": True, "kv_cache_dtype": "fp8", "dtype": "bfloat16",
            "tensor_parallel_size": 2, "enforce_eager": True, "quantization": "fp8", "max_gen_toks": 256}
OPERATIONAL = {"gpu_memory_utilization": 0.5, "kv_cache_memory_bytes": 1 << 30, "timeout_s": 60, "python": "/x",
               "env": {"A": "1"}, "swap_space": 4, "max_num_seqs": 8, "distributed_executor_backend": "ray",
               "disable_log_stats": True, "cpu_offload_gb": 1}


def test_which_settings_enter_the_baseline_identity_is_pinned():
    """Every setting that changes what is measured changes the identity; purely operational ones do not."""
    task = TaskConfig(name="arc", task="arc_easy", apply_chat_template=True, limit=50)
    base = task_identity(task, EvaluationConfig(), seed=0, chat_template="{{ x }}")
    changes = {
        "device": task_identity(task, EvaluationConfig(device="cuda"), seed=0, chat_template="{{ x }}"),
        "dtype": task_identity(task, EvaluationConfig(dtype="bfloat16"), seed=0, chat_template="{{ x }}"),
        "few-shot seed": task_identity(task, EvaluationConfig(), seed=1234, chat_template="{{ x }}"),
        "chat template text": task_identity(task, EvaluationConfig(), seed=0, chat_template="{{ y }}"),
        "backend": task_identity(task, EvaluationConfig(backend="vllm"), seed=0, chat_template="{{ x }}"),
        "limit": task_identity(task.model_copy(update={"limit": 60}), EvaluationConfig(), seed=0, chat_template="{{ x }}"),
    }
    changes.update({
        f"backend_args.{k}": task_identity(task, EvaluationConfig(backend_args={k: v}), seed=0, chat_template="{{ x }}")
        for k, v in NUMERICS.items()
    })
    for what, ident in changes.items():
        assert ident != base, f"{what} does not enter the baseline's identity"
    same = {
        "batch size": task_identity(task, EvaluationConfig(batch_size=64), seed=0, chat_template="{{ x }}"),
        "task batch size": task_identity(task.model_copy(update={"batch_size": 1}), EvaluationConfig(), seed=0,
                                         chat_template="{{ x }}"),
    }
    same.update({
        f"backend_args.{k}": task_identity(task, EvaluationConfig(backend_args={k: v}), seed=0, chat_template="{{ x }}")
        for k, v in OPERATIONAL.items()
    })
    for what, ident in same.items():
        assert ident == base, f"{what} is operational but enters the baseline's identity"
    assert set(OPERATIONAL) == set(OPERATIONAL_BACKEND_ARGS)
    no_chat = TaskConfig(name="arc", task="arc_easy", limit=50)
    assert task_identity(no_chat, EvaluationConfig(), chat_template="{{ x }}") == task_identity(
        no_chat, EvaluationConfig(), chat_template="{{ y }}")  # a template not applied does not matter


@pytest.mark.parametrize("field,old,new", [("seed", 0, 1234), ("dtype", None, "bfloat16"), ("chat_template", "sha:a", "sha:b")])
def test_a_baseline_recorded_under_other_settings_is_stale_with_a_diff(tmp_path, field, old, new):
    store = BaselineStore(tmp_path)
    recorded = {"task": "arc_easy", "seed": 0, "dtype": None, "chat_template": "sha:a"}
    store.write("m", "fp", "arc", _result([1.0, 0.0] * 10), {**recorded, field: old}, {})
    with pytest.raises(BaselineError, match=rf"stale baseline for task 'arc':\n  task.{field}: {old!r} \(baseline\) != {new!r}"):
        store.load("m", "arc", Expectation({**recorded, field: new}, "fp", {}))


# -- evidence in every report ------------------------------------------------------------------------
def test_every_report_format_carries_the_evidence():
    ref = _result([1.0] * 60 + [0.0] * 40)
    cand = _result([1.0] * 56 + [0.0] * 4 + [0.0] * 38 + [1.0] * 2)  # 4 worse, 2 better of 100
    out = judge(ref, cand, threshold=parse_threshold("5pp"), mode="alarm", confidence=0.95)
    assert out.passed and out.row["evidence"] == "inconclusive" and out.row["items_needed"] > 100
    assert "evidence: inconclusive: no violation shown, within budget not shown" in out.explanation
    row = {**out.row, "model": "m", "scheme": "w4", "item": "x"}
    assert f"inconclusive (~{row['items_needed']})" in table_lines([row])[2]
    assert "| evidence | verdict |" in markdown([row]) and f"inconclusive (~{row['items_needed']}) | ✅ pass" in markdown([row])
    item = json.loads(to_json([row]))["items"][0]
    assert item["evidence"] == "inconclusive" and item["items_needed"] == row["items_needed"]
    props: list = []
    report_row(props, row)
    assert ("quant_evidence", "inconclusive") in props and "evidence" in JUNIT_FIELDS


def test_pooled_budgets_are_judged_once_on_the_macro_average():
    big = (_result([1.0] * 700 + [0.0] * 300, task="a"), _result([1.0] * 690 + [0.0] * 310, task="a"))
    small = (_result([1.0] * 60 + [0.0] * 40, task="b"), _result([1.0] * 58 + [0.0] * 42, task="b"))
    out = judge_pooled([big, small], threshold=parse_threshold("5pp"), mode="gate", confidence=0.95)
    assert out.row["task"] == "pool(a+b)" and out.row["n"] == 1100
    assert out.row["drop"] == pytest.approx((0.01 + 0.02) / 2)  # each task weighs 1/2, whatever its size
    assert "pooled over 2 tasks, each weighing 1/2 (a macro average)" in out.explanation
    assert set(out.row["pooled"]) == {"a", "b"}
    with pytest.raises(ResultError, match="does not score items 0/1"):
        judge_pooled([(_result([0.5] * 40), _result([0.4] * 40))] * 2, threshold=None, mode="gate", confidence=0.95)
