"""MT-Bench-style evaluation, the data side: the judge's settings, the question file, the judge's
prompts and the parsing of its rating.

Data layer (no heavy library; the engine is :mod:`pytest_quant.backends.evaluate.mt_bench`).

Questions come in FastChat's ``question.jsonl`` format, one JSON object a line::

    {"question_id": 81, "category": "writing", "turns": ["...", "..."], "reference": ["...", "..."]}

(``reference`` optional). A judge grades each answer alone ("single-answer grading", as FastChat's
``llm_judge``) on a scale of 1 to 10 and must end with ``Rating: [[N]]``; turn 2 is graded with the
whole two-turn conversation shown. The default prompts below are written in the style of FastChat's
``single-v1`` / ``single-v1-multi-turn`` (and their ``-math`` variants when a question has a reference).
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pytest_quant.errors import QuantConfigError

__all__ = [
    "JudgeConfig",
    "JudgePrompts",
    "MT_BENCH_METRICS",
    "Question",
    "judge_messages",
    "parse_rating",
    "questions_sha256",
    "read_questions",
]

# metric -> what it is; every one a mean over questions of ratings 1..10 (higher is better)
MT_BENCH_METRICS: dict[str, str] = {
    "turn1": "the judge's rating of the first answer",
    "turn2": "the judge's rating of the second answer, graded with the whole conversation shown",
    "score": "the mean of a question's turn ratings",
}
DEFAULT_MAX_NEW_TOKENS = 1024  # FastChat's gen_model_answer.py default

_RATING_RULE = (
    "Start with a short explanation of your assessment, and be as objective as possible. After the "
    "explanation, rate the response on a scale of 1 to 10 by ending with exactly this format: "
    '"Rating: [[N]]", for example "Rating: [[6]]".'
)
DEFAULT_SYSTEM = "You are a careful, impartial evaluator of AI assistants."
DEFAULT_TURN1 = (
    "[Instruction]\nYou are an impartial judge. Assess the quality of the AI assistant's response to "
    "the user question below. Consider helpfulness, relevance, accuracy, depth, creativity and level "
    f"of detail. {_RATING_RULE}\n\n"
    "[Question]\n{question}\n\n"
    "[The Start of the Assistant's Answer]\n{answer}\n[The End of the Assistant's Answer]"
)
DEFAULT_TURN2 = (
    "[Instruction]\nYou are an impartial judge. Below is a two-turn conversation between a user and an "
    "AI assistant. Assess the quality of the assistant's answer to the user's second question only, "
    "in the light of the whole conversation. Consider helpfulness, relevance, accuracy, depth, "
    f"creativity and level of detail. {_RATING_RULE}\n\n"
    "<|The Start of the Conversation|>\n\n"
    "### User:\n{question_1}\n\n### Assistant:\n{answer_1}\n\n"
    "### User:\n{question_2}\n\n### Assistant:\n{answer_2}\n\n"
    "<|The End of the Conversation|>"
)
DEFAULT_TURN1_REFERENCE = (
    "[Instruction]\nYou are an impartial judge. Assess the correctness and helpfulness of the AI "
    "assistant's response to the user question below. A reference answer is given: compare the "
    "assistant's answer with it, and name and correct any mistake. "
    f"{_RATING_RULE}\n\n"
    "[Question]\n{question}\n\n"
    "[The Start of the Reference Answer]\n{reference}\n[The End of the Reference Answer]\n\n"
    "[The Start of the Assistant's Answer]\n{answer}\n[The End of the Assistant's Answer]"
)
DEFAULT_TURN2_REFERENCE = (
    "[Instruction]\nYou are an impartial judge. Below is a two-turn conversation between a user and an "
    "AI assistant, and reference answers to both questions. Assess the correctness and helpfulness of "
    "the assistant's answer to the user's second question only: compare it with the second reference "
    f"answer, and name and correct any mistake. {_RATING_RULE}\n\n"
    "<|The Start of the Reference Answers|>\n\n"
    "### Reference answer to question 1:\n{reference_1}\n\n"
    "### Reference answer to question 2:\n{reference_2}\n\n"
    "<|The End of the Reference Answers|>\n\n"
    "<|The Start of the Conversation|>\n\n"
    "### User:\n{question_1}\n\n### Assistant:\n{answer_1}\n\n"
    "### User:\n{question_2}\n\n### Assistant:\n{answer_2}\n\n"
    "<|The End of the Conversation|>"
)
# template -> (the placeholders it may use, those it must use)
_PLACEHOLDERS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "turn1": (frozenset({"question", "answer"}), frozenset({"answer"})),
    "turn2": (frozenset({"question_1", "answer_1", "question_2", "answer_2"}), frozenset({"answer_2"})),
    "turn1_reference": (frozenset({"question", "answer", "reference"}), frozenset({"answer"})),
    "turn2_reference": (
        frozenset({"question_1", "answer_1", "question_2", "answer_2", "reference_1", "reference_2"}),
        frozenset({"answer_2"}),
    ),
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# "[[7]]" or "[[7.5]]"; the last one in the judge's output counts (the rating ends it)
_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")


class JudgePrompts(BaseModel):
    """The judge's prompt templates (Python ``str.format`` fields, see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    turn1: str = DEFAULT_TURN1
    turn2: str = DEFAULT_TURN2
    turn1_reference: str = DEFAULT_TURN1_REFERENCE  # used for questions that carry a reference answer
    turn2_reference: str = DEFAULT_TURN2_REFERENCE

    @model_validator(mode="after")
    def _fields_known(self) -> JudgePrompts:
        for name, (allowed, required) in _PLACEHOLDERS.items():
            text = getattr(self, name)
            try:
                used = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
            except ValueError as exc:
                raise ValueError(
                    f"prompts.{name} is not a valid template ({exc}); write a literal brace as {{{{ }}}}"
                ) from None
            unknown = sorted(used - allowed)
            if unknown:
                may = ", ".join("{" + a + "}" for a in sorted(allowed))
                raise ValueError(f"prompts.{name} uses {{{unknown[0]}}}; it may use {may}")
            missing = sorted(required - used)
            if missing:
                raise ValueError(f"prompts.{name} never shows the answer it grades ({{{missing[0]}}})")
        return self


class JudgeConfig(BaseModel):
    """Who grades the answers.

    ``endpoint`` (an OpenAI-compatible chat-completions URL, such as ``https://api.openai.com/v1``)
    and ``model`` (the name it serves): a remote judge; its key is read at run time from the
    environment variable ``api_key_env`` (none sent without one), never stored. Without an endpoint,
    ``model`` is a local model (a name or folder, as the suite's ``model`` field accepts) run through
    the transformers backend; ``rating: likelihood`` then takes the rating 1..10 with the highest
    log-likelihood after the prompt and ``Rating: [[`` instead of generating (it always parses).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    endpoint: str | None = None
    api_key_env: str | None = None
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(1024, ge=1, le=32_768)
    rating: Literal["generate", "likelihood"] = "generate"
    system: str = DEFAULT_SYSTEM  # the judge's system message ("" for none)
    prompts: JudgePrompts = Field(default_factory=JudgePrompts)

    @model_validator(mode="after")
    def _coherent(self) -> JudgeConfig:
        if self.endpoint is not None:
            if not re.match(r"https?://[^\s/]+", self.endpoint):
                raise ValueError(
                    f"judge.endpoint is an http(s) URL such as 'https://api.openai.com/v1', got {self.endpoint!r}"
                )
            if self.rating == "likelihood":
                raise ValueError(
                    "rating 'likelihood' reads a local judge's log-likelihoods; a remote endpoint generates"
                )
        elif self.api_key_env is not None:
            raise ValueError("api_key_env names the key of a remote judge; a local judge (no endpoint) needs none")
        if self.api_key_env is not None and not _ENV_NAME.fullmatch(self.api_key_env):
            raise ValueError(f"api_key_env is the name of an environment variable, got {self.api_key_env!r}")
        if self.rating == "likelihood" and self.temperature != 0:
            raise ValueError("rating 'likelihood' samples nothing; remove temperature")
        return self

    @property
    def remote(self) -> bool:
        return self.endpoint is not None

    def fingerprint_payload(self) -> dict[str, Any]:
        """What changes a rating: the judge, its settings and prompts (not where its key is read from)."""
        payload = self.model_dump(mode="json", exclude={"api_key_env"})
        if self.rating == "likelihood":  # nothing is generated: no length or temperature
            payload.pop("max_tokens")
            payload.pop("temperature")
        return payload

    def identity(self) -> dict[str, Any]:
        """:meth:`fingerprint_payload` as flat ``judge.*`` keys, the prompt templates as their sha256: what a
        baseline records, so that a stale one names the setting that changed in one short line."""
        payload = self.fingerprint_payload()
        prompts = payload.pop("prompts")
        out = {f"judge.{key}": value for key, value in payload.items()}
        for key, text in prompts.items():
            out[f"judge.prompts.{key}"] = "sha:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        return out

    def describe(self) -> str:
        if self.endpoint is not None:
            return f"{self.model} at {self.endpoint}"
        return f"local {self.model}" + (" (likelihood rating)" if self.rating == "likelihood" else "")


@dataclass(frozen=True)
class Question:
    """One MT-Bench question: its id (as text), category, turns (one or two) and reference answers."""

    question_id: str
    category: str | None
    turns: tuple[str, ...]
    reference: tuple[str, ...] | None
    line: int


def questions_sha256(path: str | Path, *, field: str = "mt_bench") -> str:
    """sha256 of a question file's bytes (what a baseline's identity records)."""
    return hashlib.sha256(_read_bytes(Path(path), field)).hexdigest()


def _read_bytes(path: Path, field: str = "mt_bench") -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise QuantConfigError(
            f"cannot read MT-Bench questions {str(path)!r} ({exc.strerror or exc}); FastChat's question.jsonl is "
            "fastchat/llm_judge/data/mt_bench/question.jsonl in the FastChat GitHub repository",
            field=field,
        ) from None


def read_questions(path: str | Path, *, field: str = "mt_bench", limit: int | None = None) -> list[Question]:
    """The questions of a FastChat-format ``question.jsonl`` (the first ``limit``), checked:
    :class:`QuantConfigError` naming the file, the line and the field otherwise."""
    path = Path(path)
    try:
        text = _read_bytes(path, field).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise QuantConfigError(f"MT-Bench questions are not UTF-8 ({exc})", source=str(path), field=field) from None
    out: list[Question] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue

        def bad(message: str, key: str | None = None, *, number: int = number) -> QuantConfigError:
            return QuantConfigError(message, source=str(path), line=number, field=key or "question")

        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise bad(f"not a JSON object ({exc})") from None
        if not isinstance(data, dict):
            raise bad(f"not a JSON object (got {type(data).__name__})")
        qid = data.get("question_id")
        if isinstance(qid, bool) or not isinstance(qid, (int, str)) or str(qid).strip() == "":
            raise bad(f"each question needs a 'question_id', a number or text (got {qid!r})", "question_id")
        key = str(qid)
        if key in seen:
            raise bad(f"question_id {qid!r} is also on line {seen[key]}; ids pair the results", "question_id")
        seen[key] = number
        turns = data.get("turns")
        if (
            not isinstance(turns, list)
            or not 1 <= len(turns) <= 2
            or not all(isinstance(t, str) and t.strip() for t in turns)
        ):
            raise bad(f"'turns' is a list of one or two non-empty texts (question {qid!r})", "turns")
        reference = data.get("reference")
        if reference is not None and (
            not isinstance(reference, list)
            or len(reference) < len(turns)
            or not all(isinstance(r, str) for r in reference[: len(turns)])
        ):
            raise bad(f"'reference' is a list of texts, one per turn (question {qid!r})", "reference")
        category = data.get("category")
        out.append(
            Question(
                question_id=key,
                category=None if category is None else str(category),
                turns=tuple(turns),
                reference=None if reference is None else tuple(reference[: len(turns)]),
                line=number,
            )
        )
    if not out:
        raise QuantConfigError("the MT-Bench question file has no questions", source=str(path), field=field)
    return out[:limit] if limit is not None else out


def judge_messages(judge: JudgeConfig, question: Question, answers: tuple[str, ...], turn: int) -> list[dict[str, str]]:
    """The chat messages that ask the judge to grade answer ``turn`` (1 or 2) of ``question``."""
    p = judge.prompts
    ref = question.reference
    if turn == 1:
        values = {"question": question.turns[0], "answer": answers[0]}
        if ref is not None:
            prompt = p.turn1_reference.format(**values, reference=ref[0])
        else:
            prompt = p.turn1.format(**values)
    else:
        values = {
            "question_1": question.turns[0],
            "answer_1": answers[0],
            "question_2": question.turns[1],
            "answer_2": answers[1],
        }
        if ref is not None:
            prompt = p.turn2_reference.format(**values, reference_1=ref[0], reference_2=ref[1])
        else:
            prompt = p.turn2.format(**values)
    messages = [{"role": "system", "content": judge.system}] if judge.system else []
    return [*messages, {"role": "user", "content": prompt}]


def parse_rating(output: str) -> float | None:
    """The rating in the judge's output: the last ``[[N]]`` (``[[N.5]]`` too) when it is within 1..10, else None."""
    found = _RATING.findall(output)
    if not found:
        return None
    value = float(found[-1])
    return value if 1.0 <= value <= 10.0 else None
