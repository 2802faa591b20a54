"""Sequential tasks and the suite's family of alarms, end to end on the tiny model (a pytest subprocess per run).

- ``sequential:`` records the baseline on every stage, evaluates each scheme only on the stages its open
  budgets need (lm-eval ``samples``), reports the stage that decided each budget, and pairs chunked
  results with the same documents a fixed ``limit`` run scores;
- Holm's correction across a suite's alarms passes a violation shown alone at 5% that the family does not
  support, fails one it does, and ``--quant-family item`` judges each alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from quant_runs import builds, run
from test_planted_regressions import _build_tiny

from pytest_quant.stats import clopper_pearson

DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.slow

SUITE = """\
model: MODEL
schemes:
  w8: {method: rtn, weights: {bits: 8, group_size: 64}}
  w2: {method: rtn, weights: {bits: 2, group_size: 64}}
tasks:
  arith: {task: pq_arith, include_path: TASKS, sequential: {first: FIRST, growth: 2, max: MAX}}
budgets:
  - {name: loose, schemes: [w8], max_drop: 50pp, mode: gate}
  - {name: tight, schemes: [w2], max_drop: 1pp, mode: alarm}
  - {compare: "w8 >= w2 - 90pp", mode: gate}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_tiny(tmp_path_factory.mktemp("tiny") / "tiny-llama")


def _suite(model: Path, *, first: int = 10, max_: str = "full") -> str:
    text = SUITE.replace("MODEL", str(model)).replace("TASKS", str(DATA / "tasks"))
    return text.replace("FIRST", str(first)).replace("MAX", max_)


def test_stages_stop_per_scheme_once_its_budgets_are_decided(pytester: pytest.Pytester, tmp_path: Path, tiny: Path):
    pytester.makefile(".quant.yaml", seq=_suite(tiny))
    cache, report = tmp_path / "cache", pytester.path / "r.json"
    result = run(pytester, cache, "--quant-update-baselines", f"--quant-report={report}")
    result.assert_outcomes(passed=3)
    (path,) = (pytester.path / "baselines").glob("*.json")
    base = json.loads(path.read_text())["tasks"]["arith"]["result"]
    assert base["n"] == 60 and base["meta"]["sequential"]["sizes"] == [10, 20, 40, 60]
    assert sorted(int(i) for i in base["item_ids"]) == list(range(60))  # every document, in stage order
    rows = {r["scheme"]: r for r in json.loads(report.read_text())["items"]}
    cmp, loose, tight = rows["w8 vs w2"], rows["w8"], rows["w2"]
    # the comparison is clear on the first 10 items; the 1pp alarm is never decided: w2 runs every stage
    assert cmp["sequential"]["decided"] and cmp["sequential"]["stage"] == 1 and cmp["n"] == 10
    assert not tight["sequential"]["decided"] and tight["n"] == 60 and tight["evidence"] == "inconclusive"
    assert tight["confidence"] == pytest.approx(1 - 0.05 / 4) and tight["nominal_confidence"] == 0.95
    w8_items = loose["sequential"]["evaluated"]["w8"]
    assert loose["sequential"]["decided"] and w8_items == loose["n"] < 60
    assert tight["sequential"]["evaluated"] == {"w8": w8_items, "w2": 60}
    # what ran: the base on 4 stages, w2 on 4, w8 only on the stages its budgets needed
    runs = [e["label"] for e in builds(cache, "run")]
    assert sum("/w2/" in r for r in runs) == 4 and sum("/baseline/" in r for r in runs) == 4
    assert sum("/w8/" in r for r in runs) == [10, 20, 40, 60].index(w8_items) + 1
    result.stdout.fnmatch_lines([
        "*sequential arith: 2 of 3 budget(s) decided before the last stage; its budgets read * of 120 items*",
    ])  # fmt: skip
    # -k: a deselected budget never drives a staged task, so its scheme is neither built nor evaluated
    run(pytester, tmp_path / "cache-k", "-k", "tight").assert_outcomes(passed=1)
    built = [e["label"] for kind in ("artifact", "run") for e in builds(tmp_path / "cache-k", kind)]
    assert built and not any(label.endswith("/w8") or "/w8/" in label for label in built), built
    # a warm re-run decides the same from the cache, in gate mode the undecided alarm fails with its stage line
    gate = run(pytester, cache, "--quant-mode=gate")
    gate.assert_outcomes(passed=2, failed=1)
    gate.stdout.fnmatch_lines(
        ["*sequential: not decided at any of 4 stages (60 items); the last stage's bounds at 98.75%*"]
    )
    # futility: the 1pp alarm needs thousands of items at its estimate, so w2 stops after the first stage;
    # the stored baseline still serves (futility changes where evaluation stops, not what is measured)
    pytester.makefile(".quant.yaml", seq=_suite(tiny).replace("max: full}", "max: full, futility: true}"))
    futile = run(pytester, cache, f"--quant-report={report}")
    futile.assert_outcomes(passed=3)
    rows = {r["scheme"]: r for r in json.loads(report.read_text())["items"]}
    assert rows["w2"]["sequential"]["futile"] and rows["w2"]["n"] == 10 and rows["w2"]["evidence"] == "inconclusive"
    assert rows["w2"]["sequential"]["evaluated"]["w2"] == 10
    futile.stdout.fnmatch_lines(["*sequential arith: 2 of 3 budget(s) decided before the last stage, 1 stopped for futility*"])
    # other stages are other prompts (few-shot draws follow the chunks): the stored baseline is stale
    pytester.makefile(".quant.yaml", seq=_suite(tiny, first=15))
    stale = run(pytester, cache)
    stale.assert_outcomes(failed=3)
    stale.stdout.fnmatch_lines(["*stale baseline for task 'arith':", "*task.sequential: {'first': 10,*(baseline) != *"])
    pytester.makefile(".quant.yaml", seq=_suite(tiny, max_="1000"))
    too_many = run(pytester, cache, "--quant-update-baselines")
    too_many.assert_outcomes(failed=3)
    too_many.stdout.fnmatch_lines(["*tasks.arith.sequential.max*sequential max 1000 is more than the 60 documents*"])


PAIRED = """\
model: MODEL
schemes:
  w8: {method: rtn, weights: {bits: 8, group_size: 64}}
tasks:
  staged: {task: pq_last_word, include_path: TASKS, metric: perplexity, sequential: {first: 7, growth: 2}}
  fixed:  {task: pq_last_word, include_path: TASKS, metric: perplexity}
budgets:
  - {name: ppl, schemes: [w8], max_drop: 50%, mode: alarm}
"""


def test_staged_documents_score_as_in_one_run(pytester: pytest.Pytester, tmp_path: Path, tiny: Path):
    """Each document's log-likelihood from its stage's chunk (lm-eval ``samples``) is the one a single run over
    the whole task gives it: the chunks' document ids are the dataset's, not positions in the chunk."""
    pytester.makefile(".quant.yaml", paired=PAIRED.replace("MODEL", str(tiny)).replace("TASKS", str(DATA / "tasks")))
    run(pytester, tmp_path / "cache", "--quant-update-baselines").assert_outcomes(passed=2)
    (path,) = (pytester.path / "baselines").glob("*.json")
    tasks = json.loads(path.read_text())["tasks"]
    staged, fixed = tasks["staged"]["result"], tasks["fixed"]["result"]
    assert staged["n"] == fixed["n"] == 46 and staged["item_ids"] != fixed["item_ids"]  # another order
    by_id = dict(zip(fixed["item_ids"], fixed["scores"], strict=True))
    for item, score in zip(staged["item_ids"], staged["scores"], strict=True):
        assert score == pytest.approx(by_id[item], rel=1e-4, abs=1e-4), item
    assert len(set(fixed["scores"])) > 40  # distinct scores: a shifted id could not match by chance


FAMILY = """\
model: MODEL
schemes:
  w8: {method: rtn, weights: {bits: 8, group_size: 64}}
  w2: {method: rtn, weights: {bits: 2, group_size: 64}}
tasks:
  arith: {task: pq_arith, include_path: TASKS, limit: 60}
budgets:
  - {name: flips, schemes: [w2], max_flips: LIMIT, mode: alarm}
  - {name: loose, schemes: [w8], max_drop: 50pp, mode: alarm}
"""


def test_holm_across_the_suite_judges_alarms_together(pytester: pytest.Pytester, tmp_path: Path, tiny: Path):
    cache, report = tmp_path / "cache", pytester.path / "r.json"

    def suite(limit: str) -> None:
        pytester.makefile(
            ".quant.yaml",
            fam=FAMILY.replace("MODEL", str(tiny)).replace("TASKS", str(DATA / "tasks")).replace("LIMIT", limit),
        )

    suite("90%")
    run(pytester, cache, "--quant-update-baselines", f"--quant-report={report}").assert_outcomes(passed=2)
    row = next(r for r in json.loads(report.read_text())["items"] if r["scheme"] == "w2")
    changed, n = round(row["drop"] * row["n"]), row["n"]  # a flips row: the share that changed
    alone, family = clopper_pearson(changed, n, 0.95)[0], clopper_pearson(changed, n, 1 - 0.05 / 2)[0]
    assert changed >= 3 and family < alone, (changed, n)
    # a limit the flips exceed at 95% alone, but not at the 2.5% Holm's first step asks of a family of two
    suite(f"{(alone + family) / 2 * 100:.3f}%")
    item = run(pytester, cache, "--quant-family=item")
    item.assert_outcomes(passed=1, failed=1)
    item.stdout.fnmatch_lines(["*2 alarm(s), each at 5% alone (--quant-family item)*"])
    together = run(pytester, cache, f"--quant-report={report}")
    together.assert_outcomes(passed=2)
    together.stdout.fnmatch_lines(["*2 alarm(s) judged together (Holm's step-down correction)*at most 5%*"])
    row = next(r for r in json.loads(report.read_text())["items"] if r["scheme"] == "w2")
    assert (row["verdict"], row["evidence"], row["evidence_alone"]) == ("pass", "inconclusive", "violated")
    assert row["family"] == {"size": 2, "correction": "holm"}
    # selected alone, the item is its own family again
    run(pytester, cache, "-k", "flips").assert_outcomes(failed=1)
    # a violation the family supports still fails, and says at which step
    suite(f"{family / 2 * 100:.3f}%")
    clear = run(pytester, cache)
    clear.assert_outcomes(passed=1, failed=1)
    clear.stdout.fnmatch_lines(["*family: Holm's correction across the suite's 2 alarms rejects it at step 1*"])
