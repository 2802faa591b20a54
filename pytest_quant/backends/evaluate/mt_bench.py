"""MT-Bench-style evaluation with a pluggable judge: evaluator ``mt_bench``.

Engine layer. Two steps, each a JSON record the session caches (``session.cache.run``):

1. :meth:`MTBenchEvaluator.answer`: the model answers every question turn by turn through
   transformers, greedy ``generate`` of at most ``task.max_new_tokens`` tokens on the model's chat
   template applied to the conversation so far (turn 2 sees turn 1's question and the model's own
   answer). The record keeps the answers.
2. :meth:`MTBenchEvaluator.judge`: the judge grades each answer alone, 1..10 (single-answer grading,
   FastChat's ``llm_judge`` style; prompts in :mod:`pytest_quant.mt_bench`). A remote judge is an
   OpenAI-compatible chat-completions endpoint (urllib, the key read from ``judge.api_key_env`` at run
   time and never written anywhere); a local one is a model run here like the model under test,
   which generates (``rating: generate``) or whose rating is the one of "1".."10" with the highest
   log-likelihood after the prompt and ``Rating: [[`` (``rating: likelihood``: the log-likelihood of
   ``N]]``, so "1" and "10" are compared as whole ratings). The record keeps every judge output.

A rating that does not parse, or lies outside 1..10, is an :class:`EvaluationError` naming the question,
the turn and the judge's output, never a silent 0. Per question and metric (``turn1``, ``turn2``, or
``score``, the mean of the question's turns) the result's items are the question ids, so a scheme and
its baseline pair per question.
"""

from __future__ import annotations

import copy
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pytest_quant.backends.evaluate.perplexity import HFRuntime
from pytest_quant.config import EvaluationConfig, ModelConfig, TaskConfig, canonical_hash
from pytest_quant.errors import EvaluationError, QuantConfigError
from pytest_quant.mt_bench import JudgeConfig, Question, judge_messages, parse_rating, questions_sha256, read_questions
from pytest_quant.results import TaskResult

__all__ = ["MTBenchEvaluator", "chat_completions_url", "unsupported_backend"]

ANSWERS_FORMAT = "pytest-quant/mt-bench-answers-1"
JUDGMENTS_FORMAT = "pytest-quant/mt-bench-judgments-1"
RUN_FORMAT = "pytest-quant/mt-bench-run-1"
SHOWN_OUTPUT = 300  # characters of a judge's output an error message shows
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def _questions(task: TaskConfig) -> list[Question]:
    if task.mt_bench is None:
        raise QuantConfigError(f"task {task.name!r} has no 'mt_bench' question file", field=f"tasks.{task.name}")
    return read_questions(Path(task.mt_bench).expanduser(), field=f"tasks.{task.name}.mt_bench", limit=task.limit)


def _judge(task: TaskConfig) -> JudgeConfig:
    if task.judge is None:  # pragma: no cover - validation requires one
        raise QuantConfigError(f"task {task.name!r} has no judge", field=f"tasks.{task.name}.judge")
    return task.judge


def _shown(text: str) -> str:
    return text if len(text) <= SHOWN_OUTPUT else text[:SHOWN_OUTPUT] + f"... [{len(text) - SHOWN_OUTPUT} more chars]"


def _chat_inputs(tokenizer: Any, messages: list[dict[str, str]], what: str, suffix: str = "") -> Any:
    """Token ids of ``messages`` through the tokenizer's chat template, ready for the assistant's turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise QuantConfigError(f"{what} has no chat template; MT-Bench answers and local judges chat")
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # jinja's TemplateError: a template that refuses a system message, say
        raise QuantConfigError(
            f"{what}: its chat template rejects the conversation ({type(exc).__name__}: {exc}); for a judge "
            "whose template takes no system message, set judge.system: ''"
        ) from exc
    return tokenizer(text + suffix, add_special_tokens=False, return_tensors="pt")


def _generate(model: Any, tokenizer: Any, messages: list[dict[str, str]], *, max_new_tokens: int,
              temperature: float, seed: int, what: str) -> tuple[str, int]:  # fmt: skip
    """One chat reply (greedy at temperature 0, seeded sampling above) and how many tokens it took."""
    import torch
    from transformers import GenerationConfig

    enc = _chat_inputs(tokenizer, messages, what).to(next(model.parameters()).device)
    eos = model.generation_config.eos_token_id
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None,
        top_p=None,
        top_k=None,
        eos_token_id=eos if eos is not None else tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if temperature > 0:
        torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(**enc, generation_config=config)
    new = out[0, enc["input_ids"].shape[1] :]
    return tokenizer.decode(new, skip_special_tokens=True).strip(), int(new.shape[0])


def _rating_likelihoods(model: Any, tokenizer: Any, messages: list[dict[str, str]], what: str) -> list[float]:
    """Log-likelihood of ``N]]`` after the judge's prompt and ``Rating: [[``, for N = 1..10 (the context is
    run once; each rating continues a copy of its cache)."""
    import torch

    enc = _chat_inputs(tokenizer, messages, what, suffix="Rating: [[").to(next(model.parameters()).device)
    out: list[float] = []
    with torch.inference_mode():
        ctx = model(**enc, use_cache=True, logits_to_keep=1)  # only the last position's logits
        first = torch.log_softmax(ctx.logits[0, -1].float(), -1)
        mask = enc["attention_mask"]
        for n in range(1, 11):
            ids = tokenizer(f"{n}]]", add_special_tokens=False, return_tensors="pt")["input_ids"].to(mask.device)
            total = float(first[ids[0, 0]])
            if ids.shape[1] > 1:
                rest = model(
                    input_ids=ids[:, :-1],
                    attention_mask=torch.cat([mask, torch.ones_like(ids[:, :-1])], dim=1),
                    past_key_values=copy.deepcopy(ctx.past_key_values),
                    use_cache=True,
                )
                logp = torch.log_softmax(rest.logits[0].float(), -1)
                total += float(logp.gather(-1, ids[0, 1:, None]).sum())
            out.append(total)
    return out


def chat_completions_url(endpoint: str) -> str:
    """The chat-completions URL of an OpenAI-compatible ``endpoint`` (a base URL such as
    ``https://api.openai.com/v1``, or the full ``.../chat/completions`` URL)."""
    url = endpoint.rstrip("/")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


class _RemoteJudge:
    """An OpenAI-compatible chat-completions endpoint; the key from the environment, read now."""

    def __init__(self, judge: JudgeConfig, task: TaskConfig, *, attempts: int = 3, timeout_s: float = 120.0):
        assert judge.endpoint is not None
        self.judge, self.url, self.attempts, self.timeout_s = (
            judge,
            chat_completions_url(judge.endpoint),
            attempts,
            timeout_s,
        )
        self.headers = {"Content-Type": "application/json"}
        if judge.api_key_env is not None:
            key = os.environ.get(judge.api_key_env)
            if not key:
                raise QuantConfigError(
                    f"task {task.name!r}: the judge's key is read from the environment variable "
                    f"{judge.api_key_env}, which is not set",
                    field=f"tasks.{task.name}.judge.api_key_env",
                )
            self.headers["Authorization"] = f"Bearer {key}"

    def output(self, messages: list[dict[str, str]]) -> str:
        body = {
            "model": self.judge.model,
            "messages": messages,
            "temperature": self.judge.temperature,
            "max_tokens": self.judge.max_tokens,
        }
        data = self._post(json.dumps(body).encode("utf-8"))
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise EvaluationError(
                f"judge endpoint {self.url} answered without choices[0].message.content: {_shown(json.dumps(data))}"
            )
        return content

    def _post(self, payload: bytes) -> Any:
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(2.0**attempt)
            request = urllib.request.Request(self.url, data=payload, headers=self.headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    text = response.read().decode("utf-8", errors="replace")
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code}: {_shown(exc.read().decode('utf-8', errors='replace'))}"
                if exc.code in _RETRY_STATUS:
                    continue
                break
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                problem = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
                continue
            try:
                return json.loads(text)
            except ValueError:
                raise EvaluationError(
                    f"judge endpoint {self.url} answered with something not JSON: {_shown(text)}"
                ) from None
        raise EvaluationError(f"judge endpoint {self.url} failed after {attempt + 1} attempt(s): {problem}")


class _LocalJudge:
    """A judge model run here through transformers (the one model kept loaded switches to it)."""

    def __init__(self, judge: JudgeConfig, evaluation: EvaluationConfig, cache_dir: Path | None, seed: int):
        from pytest_quant.backends.cache import default_cache_dir
        from pytest_quant.backends.models import load_causal_lm, resolve_model

        resolved = resolve_model(ModelConfig(name=judge.model), cache_dir or default_cache_dir())
        self.judge, self.seed, self.what = judge, seed, f"judge model {judge.model!r}"
        self.fingerprint = resolved.fingerprint
        self.model, self.tokenizer = load_causal_lm(resolved.path, dtype=evaluation.dtype, device=evaluation.device)

    def output(self, messages: list[dict[str, str]]) -> str:
        text, _ = _generate(
            self.model,
            self.tokenizer,
            messages,
            max_new_tokens=self.judge.max_tokens,
            temperature=self.judge.temperature,
            seed=self.seed,
            what=self.what,
        )
        return text

    def likelihoods(self, messages: list[dict[str, str]]) -> list[float]:
        return _rating_likelihoods(self.model, self.tokenizer, messages, self.what)


class MTBenchEvaluator(HFRuntime):
    """Evaluator ``mt_bench``: answers through transformers, ratings 1..10 from a judge.

    ``run`` is :meth:`answer` and :meth:`judge` in one record; the session caches the two steps
    apart (a new judge re-grades the cached answers), and :meth:`combine` joins them for
    :meth:`result_from_run`. Speed is the ``hf`` evaluator's: the model is loaded the same way.
    """

    name = "mt_bench"
    measures_peak_memory = True

    def __init__(self, *, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir

    def answer(
        self, model_dir: Path, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0
    ) -> dict[str, Any]:
        """The model's answers to every question, turn by turn (see the module docstring)."""
        import torch
        import transformers

        from pytest_quant.backends.models import load_causal_lm

        unsupported_backend(task, evaluation)
        questions = _questions(task)
        assert task.max_new_tokens is not None  # set for every mt_bench task by validation
        model, tokenizer = load_causal_lm(model_dir, dtype=evaluation.dtype, device=evaluation.device)
        answers: dict[str, list[str]] = {}
        at_limit = 0
        for q in questions:
            messages: list[dict[str, str]] = []
            replies: list[str] = []
            for turn in q.turns:
                messages.append({"role": "user", "content": turn})
                reply, used = _generate(
                    model, tokenizer, messages, max_new_tokens=task.max_new_tokens, temperature=0.0, seed=seed,
                    what=f"model {str(model_dir)!r}",
                )  # fmt: skip
                at_limit += used >= task.max_new_tokens
                replies.append(reply)
                messages.append({"role": "assistant", "content": reply})
            answers[q.question_id] = replies
        return {
            "format": ANSWERS_FORMAT,
            "question_ids": [q.question_id for q in questions],
            "answers": answers,
            "meta": {
                "questions": str(task.mt_bench),
                "questions_sha256": questions_sha256(str(task.mt_bench))[:16],
                "max_new_tokens": task.max_new_tokens,
                "answers_at_max_new_tokens": at_limit,
                "torch_version": torch.__version__,
                "transformers_version": transformers.__version__,
            },
        }

    def judge(
        self, answers: dict[str, Any], task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0
    ) -> dict[str, Any]:
        """The judge's rating of every answer in an :meth:`answer` record, and its raw outputs."""
        if answers.get("format") != ANSWERS_FORMAT:
            raise EvaluationError(f"task {task.name!r}: not an MT-Bench answers record ({answers.get('format')!r})")
        judge = _judge(task)
        questions = _questions(task)
        grader: _RemoteJudge | _LocalJudge = (
            _RemoteJudge(judge, task) if judge.remote else _LocalJudge(judge, evaluation, self.cache_dir, seed)
        )
        ratings: dict[str, list[float]] = {}
        outputs: dict[str, list[str]] = {}
        for q in questions:
            replies = answers["answers"].get(q.question_id)
            if replies is None or len(replies) != len(q.turns):
                raise EvaluationError(
                    f"task {task.name!r}: the answers record has no answers to question {q.question_id}"
                )
            for turn in range(1, len(q.turns) + 1):
                messages = judge_messages(judge, q, tuple(replies), turn)
                if judge.rating == "likelihood":
                    assert isinstance(grader, _LocalJudge)
                    lls = grader.likelihoods(messages)
                    rating: float | None = float(1 + max(range(10), key=lambda i: lls[i]))
                    output = "log-likelihood of 'Rating: [[N]]': " + ", ".join(
                        f"{n + 1}: {v:.4f}" for n, v in enumerate(lls)
                    )
                else:
                    output = grader.output(messages)
                    rating = parse_rating(output)
                if rating is None:
                    raise EvaluationError(
                        f"task {task.name!r}: the judge ({judge.describe()}) gave no rating 1..10 as 'Rating: [[N]]' "
                        f"for question {q.question_id} (line {q.line} of {task.mt_bench}), turn {turn}; "
                        f"its output: {_shown(output)!r}"
                    )
                ratings.setdefault(q.question_id, []).append(rating)
                outputs.setdefault(q.question_id, []).append(output)
        meta: dict[str, Any] = {"judge": judge.describe(), "rating": judge.rating}
        if isinstance(grader, _LocalJudge):
            meta["judge_fingerprint"] = grader.fingerprint
        return {"format": JUDGMENTS_FORMAT, "ratings": ratings, "outputs": outputs, "meta": meta}

    @staticmethod
    def combine(answers: dict[str, Any], judgments: dict[str, Any]) -> dict[str, Any]:
        """One run record from the two steps' records."""
        return {"format": RUN_FORMAT, "answers": answers, "judgments": judgments}

    def run(self, model_dir: Path, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0) -> dict[str, Any]:
        answers = self.answer(model_dir, task, evaluation, seed=seed)
        return self.combine(answers, self.judge(answers, task, evaluation, seed=seed))

    @staticmethod
    def result_from_run(run: dict[str, Any], task: TaskConfig) -> TaskResult:
        if run.get("format") != RUN_FORMAT:
            raise QuantConfigError(f"task {task.name!r}: not an MT-Bench run record ({run.get('format')!r})")
        metric = task.metric or "score"
        answers, judgments = run["answers"], run["judgments"]
        ids: list[str] = []
        scores: list[float] = []
        for qid in answers["question_ids"]:
            ratings = [float(r) for r in judgments["ratings"][qid]]
            if metric == "turn2" and len(ratings) < 2:
                continue  # a one-turn question has no second answer
            ids.append(qid)
            scores.append({"turn1": ratings[0], "turn2": ratings[-1]}.get(metric, sum(ratings) / len(ratings)))
        if not scores:
            raise QuantConfigError(
                f"task {task.name!r} reads 'turn2', and none of its questions has a second turn",
                field=f"tasks.{task.name}.metric",
            )
        judge = _judge(task)
        fingerprint = canonical_hash(
            {
                "questions": answers["meta"]["questions_sha256"],
                "question_ids": answers["question_ids"],
                "max_new_tokens": answers["meta"]["max_new_tokens"],
                "judge": judge.fingerprint_payload(),
                "judge_model": judgments["meta"].get("judge_fingerprint"),
            }
        )
        return TaskResult(
            task=task.name,
            metric=metric,
            value=sum(scores) / len(scores),
            higher_is_better=True,
            aggregation="mean",
            item_ids=tuple(ids),
            scores=tuple(scores),
            stderr=None,
            fingerprint=fingerprint,
            meta={
                "questions": answers["meta"]["questions"],
                "questions_sha256": answers["meta"]["questions_sha256"],
                "max_new_tokens": answers["meta"]["max_new_tokens"],
                "answers_at_max_new_tokens": answers["meta"]["answers_at_max_new_tokens"],
                "judge": judgments["meta"]["judge"],
                "rating": judgments["meta"]["rating"],
            },
        )

    def evaluate(self, model_dir: Path, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0) -> TaskResult:
        return self.result_from_run(self.run(model_dir, task, evaluation, seed=seed), task)


def unsupported_backend(task: TaskConfig, evaluation: EvaluationConfig) -> None:
    if evaluation.backend == "vllm":
        raise QuantConfigError(
            f"task {task.name!r}: backend 'vllm' is not supported yet for mt_bench tasks; their answers are "
            "generated with transformers (evaluation.backend: hf)",
            field=f"tasks.{task.name}",
        )
