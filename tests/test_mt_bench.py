"""MT-Bench-style tasks: answers generated turn by turn, graded 1..10 by a judge, paired per question.

Real models throughout: the embedded SmolLM2-135M-Instruct answers (turn 2 sees turn 1) and judges in
likelihood mode; the tiny random Llama answers where the content does not matter, and, as a judge
that generates, produces garbage that must be an error, never a silent rating. The OpenAI-compatible
path runs against a local ``http.server`` test double (fixed ratings, requests recorded).

Threads: torch runs one thread in these tests (``OMP_NUM_THREADS=1`` for the subprocess suite runs):
on the shared 2-core test machine two threads contend with other processes and run ~10x slower.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from quant_runs import builds, run

from pytest_quant.config import EvaluationConfig, ModelConfig, SuiteConfig, TaskConfig, as_task
from pytest_quant.errors import EvaluationError, QuantConfigError
from pytest_quant.mt_bench import JudgeConfig, parse_rating, read_questions
from pytest_quant.suite import load_suite_text

QUESTIONS = Path(__file__).parent / "data" / "mt_bench" / "questions.jsonl"
SECRET = "sk-test-double-0123456789"


# -- validation, no model -----------------------------------------------------------------------------
SUITE = f"""\
model: tiny-llama-test
schemes:
  w8: {{method: rtn, weights: {{bits: 8}}}}
tasks:
  mt2: {{mt_bench: {QUESTIONS}, metric: turn2, max_new_tokens: 8,
        judge: {{model: tiny-llama-test, rating: likelihood}}}}
budgets:
  - {{schemes: [w8], tasks: [mt2], max_drop: 10%}}
"""


def _suite_error(text: str) -> str:
    with pytest.raises(QuantConfigError) as info:
        load_suite_text(text, "mt.quant.yaml")
    return str(info.value)


def test_mt_bench_tasks_judges_and_budgets_are_validated():
    suite, _ = load_suite_text(SUITE, "mt.quant.yaml")
    task = suite.tasks["mt2"]
    assert task.kind == "mt_bench" and task.apply_chat_template and task.max_new_tokens == 8
    assert as_task({"name": "t", "mt_bench": "q.jsonl", "judge": {"model": "m"}}).max_new_tokens == 1024
    payload = task.fingerprint_payload()
    assert payload["judge"]["prompts"]["turn2"].count("{answer_2}") == 1 and "max_tokens" not in payload["judge"]
    # other tasks' identities do not move
    assert not {"mt_bench", "judge", "max_new_tokens"} & set(TaskConfig(name="arc").fingerprint_payload())
    remote = JudgeConfig(endpoint="http://127.0.0.1:9/v1", model="gpt-x", api_key_env="JUDGE_KEY")
    assert "api_key_env" not in remote.fingerprint_payload() and remote.fingerprint_payload()["endpoint"]
    # a baseline records the judge as flat keys, its prompts as hashes: a stale one names what changed
    identity = remote.identity()
    assert identity["judge.endpoint"] == "http://127.0.0.1:9/v1" and identity["judge.model"] == "gpt-x"
    assert identity["judge.prompts.turn2"].startswith("sha:") and "judge.api_key_env" not in identity

    for edit, words in [
        (("metric: turn2", "metric: acc"), "tasks.mt2: mt_bench tasks report 'turn1', 'turn2', 'score', not 'acc'"),
        ((",\n        judge: {model: tiny-llama-test, rating: likelihood}", ""), "an mt_bench task needs a 'judge'"),
        (("rating: likelihood}", "rating: likelihood, endpoint: 'http://x/v1'}"), "a remote endpoint generates"),
        (("rating: likelihood}", "api_key_env: KEY}"), "a local judge (no endpoint) needs none"),
        (("rating: likelihood}", "prompts: {turn1: 'rate {answer} for {user}'}}"), "prompts.turn1 uses {user}"),
        (("rating: likelihood}", "prompts: {turn2: 'rate {answer_1}'}}"), "never shows the answer it grades"),
        (("metric: turn2,", "metric: turn2, num_fewshot: 2,"), "reads its question file only; remove 'num_fewshot'"),
        (("max_new_tokens: 8,", "max_new_tokens: 8, max_tokens: 64,"), "remove 'max_tokens' (answers: max_new_tokens"),
        (("max_drop: 10%", "max_drop: 5pp"), "budgets[0].max_drop: task 'mt2' reports judge ratings on a 1..10"),
        (("max_drop: 10%", "max_flips: 5%"), "budgets[0].max_flips: task 'mt2' reports judge ratings 1..10"),
    ]:
        assert edit[0] in SUITE
        assert words in _suite_error(SUITE.replace(*edit))
    with pytest.raises(ValueError, match="'judge' and 'max_new_tokens' belong to an mt_bench task"):
        SuiteConfig.model_validate(
            {"model": "m", "tasks": {"arc": {"judge": {"model": "m"}}}, "budgets": [{"max_drop": "1%"}]}
        )


def test_question_files_and_ratings_are_checked(tmp_path: Path):
    questions = read_questions(QUESTIONS)
    assert [q.question_id for q in questions] == ["101", "102", "103"]
    assert questions[2].reference == ("12 + 30 = 42", "42 * 2 = 84") and len(read_questions(QUESTIONS, limit=2)) == 2
    bad = tmp_path / "question.jsonl"
    for lines, where in [
        (['{"question_id": 1, "turns": ["a", "b"]}', "{not json"], ":2: question: not a JSON object"),
        (['{"question_id": 1, "turns": ["a", "b"]}', '{"question_id": 2, "turns": []}'], ":2: turns: 'turns' is a"),
        (['{"turns": ["a"]}'], ":1: question_id: each question needs a 'question_id'"),
        (
            ['{"question_id": 1, "turns": ["a"]}', '{"question_id": 1, "turns": ["b"]}'],
            ":2: question_id: question_id 1 is also on line 1",
        ),
        (['{"question_id": 1, "turns": ["a", "b"], "reference": ["x"]}'], ":1: reference: 'reference' is a list"),
    ]:
        bad.write_text("\n".join(lines) + "\n")
        with pytest.raises(QuantConfigError) as info:
            read_questions(bad)
        assert f"{bad}{where}" in str(info.value)
    with pytest.raises(QuantConfigError, match=r"cannot read MT-Bench questions .*missing.jsonl.*FastChat"):
        read_questions(tmp_path / "missing.jsonl", field="tasks.mt.mt_bench")
    assert [parse_rating(t) for t in ("Rating: [[7]]", "[[3]] then Rating: [[8.5]]", "[[ 10 ]]")] == [7.0, 8.5, 10.0]
    assert [parse_rating(t) for t in ("Rating: 7", "[[0]]", "[[11]]", "[[seven]]", "")] == [None] * 5


# -- the OpenAI-compatible judge against a local test double ------------------------------------------
class JudgeTestDouble:
    """A local stand-in for an OpenAI-compatible chat-completions endpoint (not a mock of our code: a real
    HTTP server our client talks to). ``reply(prompt) -> content`` makes the answer; requests are recorded."""

    def __init__(self, reply: Callable[[str], str]):
        self.reply = reply
        self.requests: list[dict[str, Any]] = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                double.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if body["model"] == "refuses":
                    self.send_response(400)
                    payload = b'{"error": "bad request"}'
                else:
                    self.send_response(200)
                    content = double.reply(body["messages"][-1]["content"])
                    payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def judge_double(monkeypatch: pytest.MonkeyPatch) -> Iterator[JudgeTestDouble]:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    double = JudgeTestDouble(lambda prompt: "Fine. Rating: [[6.5]]" if "Conversation" in prompt else "Rating: [[8]]")
    yield double
    double.close()


@pytest.fixture
def one_thread() -> Iterator[None]:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _session(tmp_path: Path):
    from pytest_quant.session import Options, QuantSession

    return QuantSession(Options(baseline_dir=tmp_path / "baselines", cache_dir=tmp_path / "cache"))


def _remote_task(metric: str, url: str, model: str = "judge-double") -> TaskConfig:
    judge = {"endpoint": url, "model": model, "api_key_env": "MT_JUDGE_KEY", "max_tokens": 64}
    return as_task({"name": f"mt_{metric}", "mt_bench": str(QUESTIONS), "metric": metric, "max_new_tokens": 12,
                    "judge": judge})  # fmt: skip


def test_an_openai_compatible_judge_grades_smollm2s_answers(
    tmp_path: Path, smollm2_dir: Path, judge_double: JudgeTestDouble, monkeypatch: pytest.MonkeyPatch, one_thread: None
):
    from pytest_quant.evaluation import evaluate

    monkeypatch.setenv("MT_JUDGE_KEY", SECRET)
    session, model, evaluation = _session(tmp_path), ModelConfig(name=str(smollm2_dir)), EvaluationConfig()
    turn1 = evaluate(session, model, None, _remote_task("turn1", judge_double.url), evaluation)
    assert turn1.item_ids == ("101", "102", "103") and turn1.scores == (8.0, 8.0, 8.0)
    assert (turn1.aggregation, turn1.higher_is_better, turn1.metric) == ("mean", True, "turn1")
    # the other metrics read the same answers and ratings: no new run
    runs = len(builds(tmp_path / "cache", "run"))
    turn2 = evaluate(session, model, None, _remote_task("turn2", judge_double.url), evaluation)
    score = evaluate(session, model, None, _remote_task("score", judge_double.url), evaluation)
    assert turn2.scores == (6.5,) * 3 and score.scores == (7.25,) * 3 and len(builds(tmp_path / "cache", "run")) == runs
    assert turn1.fingerprint == turn2.fingerprint and turn1.meta["judge"] == f"judge-double at {judge_double.url}"

    assert len(judge_double.requests) == 6  # three questions, two turns, each graded once
    for request in judge_double.requests:
        assert request["path"] == "/v1/chat/completions"
        assert request["headers"]["Authorization"] == f"Bearer {SECRET}"  # read from the environment variable
        assert request["body"]["model"] == "judge-double" and request["body"]["temperature"] == 0
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "runs").glob("mt_bench-answers-*.json")]
    answers = record["answers"]
    # turn 2 was answered in the conversation: SmolLM2 recalls the name given in turn 1
    assert "Zorblax" in answers["102"][1]
    prompts = [r["body"]["messages"][-1]["content"] for r in judge_double.requests]
    (second,) = [p for p in prompts if "What is my name?" in p]
    for text in ("My name is Zorblax. Please greet me.", answers["102"][0], "What is my name?", answers["102"][1]):
        assert text in second
    assert second.index(answers["102"][0]) < second.index("What is my name?") < second.rindex(answers["102"][1])
    (reference,) = [p for p in prompts if "Now double that number." in p]
    assert "42 * 2 = 84" in reference and "Reference" in reference  # a question's reference is shown
    (judged,) = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "runs").glob("mt_bench-judgments-*.json")]
    assert judged["outputs"]["101"] == ["Rating: [[8]]", "Fine. Rating: [[6.5]]"]
    # the key is never stored
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]

    # an unparseable rating is an error naming the question, the turn and the judge's output
    judge_double.reply = lambda prompt: "I would rather not rate this answer."
    with pytest.raises(EvaluationError, match=r"question 101 \(line 1 of .*\), turn 1; its output: 'I would rather"):
        evaluate(session, model, None, _remote_task("turn1", judge_double.url, "garbler"), evaluation)
    with pytest.raises(EvaluationError, match=r"judge endpoint http://127.0.0.1:\d+/v1/chat/completions .*HTTP 400"):
        evaluate(session, model, None, _remote_task("turn1", judge_double.url, "refuses"), evaluation)
    monkeypatch.delenv("MT_JUDGE_KEY")
    with pytest.raises(QuantConfigError, match="environment variable MT_JUDGE_KEY, which is not set"):
        evaluate(session, model, None, _remote_task("turn1", judge_double.url, "other"), evaluation)


def test_a_local_judge_without_a_rating_is_an_error_and_vllm_is_refused(tmp_path: Path, one_thread: None):
    from pytest_quant.evaluation import evaluate

    session, model = _session(tmp_path), ModelConfig(name="tiny-llama-test")
    task = as_task({"name": "mt", "mt_bench": str(QUESTIONS), "max_new_tokens": 4,
                    "judge": {"model": "tiny-llama-test", "max_tokens": 6}})  # fmt: skip
    with pytest.raises(EvaluationError) as info:
        evaluate(session, model, None, task, EvaluationConfig())
    message = str(info.value)
    assert re.search(
        r"the judge \(local tiny-llama-test\) gave no rating 1..10 as 'Rating: \[\[N\]\]' for question 101", message
    )
    assert "turn 1; its output: " in message
    with pytest.raises(QuantConfigError, match="backend 'vllm' is not supported yet for mt_bench tasks"):
        evaluate(session, model, None, task, EvaluationConfig(backend="vllm"))


# -- a suite end to end: a local likelihood judge, baselines paired per question ------------------------
E2E = """\
model: tiny-llama-test
schemes:
  w8: {{method: rtn, weights: {{bits: 8}}}}
tasks:
  mt_turn1: {{mt_bench: {questions}, metric: turn1, max_new_tokens: 8, judge: {judge}}}
  mt_turn2: {{mt_bench: {questions}, metric: turn2, max_new_tokens: 8, judge: {judge}}}
budgets:
  - {{name: turn2-drop, schemes: [w8], tasks: [mt_turn2], max_drop: 50%}}
  - {{name: turn1-floor, schemes: [baseline], tasks: [mt_turn1], min_value: 1}}
"""


@pytest.mark.slow
def test_a_suite_judged_by_likelihood_pairs_turns_per_question_with_its_baseline(
    pytester: pytest.Pytester, tmp_path: Path, smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    judge = f"{{model: {smollm2_dir}, rating: likelihood}}"
    pytester.makefile(".quant.yaml", mt=E2E.format(questions=QUESTIONS, judge=judge))
    cache = tmp_path / "cache"
    first = run(pytester, cache, "--quant-update-baselines")
    first.assert_outcomes(passed=2)
    doc = json.loads((pytester.path / "baselines" / "tiny-llama-test.json").read_text())
    for name in ("mt_turn1", "mt_turn2"):
        entry = doc["tasks"][name]
        result = entry["result"]
        assert result["item_ids"] == ["101", "102", "103"] and result["aggregation"] == "mean"
        assert all(s == int(s) and 1 <= s <= 10 for s in result["scores"])  # likelihood ratings: whole numbers
        stored = json.dumps(entry)
        assert "judge_model" in stored and smollm2_dir.name in json.dumps(result["meta"])
    assert doc["tasks"]["mt_turn1"]["result"]["metric"] == "turn1"
    assert doc["tasks"]["mt_turn2"]["result"]["metric"] == "turn2"
    answers = [b for b in builds(cache, "run") if b["label"].endswith("answers")]
    assert len(answers) == 2  # the model as is and w8, each answering once for both tasks

    runs = len(builds(cache, "run"))
    second = run(pytester, cache)
    second.assert_outcomes(passed=2)
    second.stdout.fnmatch_lines(["PASSED mt.quant.yaml::turn2-drop[[]w8-mt_turn2]"])
    assert len(builds(cache, "run")) == runs  # everything read from the cache

    # a baseline judged otherwise is stale
    pytester.makefile(
        ".quant.yaml", mt=E2E.format(questions=QUESTIONS, judge=judge.replace("}", ", system: Be strict.}"))
    )
    third = run(pytester, cache)
    third.assert_outcomes(failed=2)
    third.stdout.fnmatch_lines(
        [
            "*stale baseline for task 'mt_turn*",
            "  task.judge.system: 'You are a careful*' (baseline) != 'Be strict.' (suite)",
        ]
    )


# --------------------------------------------------------------------------- units of a 1..10 rating
def test_a_rating_difference_is_shown_in_rating_points_not_percentage_points() -> None:
    """A comparison with no margin on ratings (1..10) is judged on their difference; it must never be shown
    multiplied by 100 as 'pp', which means points of a 0..1 proportion."""
    from pytest_quant.report import table_lines, to_json
    from pytest_quant.results import TaskResult
    from pytest_quant.verdict import judge

    def ratings(scores: list[float]) -> TaskResult:
        ids = tuple(str(i) for i in range(len(scores)))
        return TaskResult("mt", "turn2", sum(scores) / len(scores), True, "mean", ids, tuple(scores))

    base = ratings([8.0, 7.0, 6.0, 9.0] * 10)
    worse = ratings([7.0, 7.0, 5.0, 9.0] * 10)  # half a rating point lower on average
    outcome = judge(base, worse, threshold=None, mode="point", confidence=0.95)
    loss_line = next(line for line in outcome.explanation.splitlines() if line.startswith("  loss:"))
    assert loss_line.startswith("  loss: +0.5  ") and "pp" not in loss_line
    assert outcome.row["points"] is False and outcome.row["drop"] == pytest.approx(0.5)
    outcome.row.update({"suite": "s", "model": "m", "scheme": "w4", "item": "i"})
    assert not any("+50.00pp" in line for line in table_lines([outcome.row]))
    assert any("+0.5 " in line for line in table_lines([outcome.row]))
    assert json.loads(to_json([outcome.row]))["items"][0]["points"] is False
    # a 0..1 proportion keeps its points
    acc = judge(ratings([1.0, 0.0] * 20), ratings([0.0, 0.0] * 20), threshold=None, mode="point", confidence=0.95)
    assert "points" not in acc.row and "+50.00pp" in acc.explanation
