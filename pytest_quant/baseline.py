"""The baseline store: one JSON file per model under ``baselines/``.

Logic layer. A baseline holds, per task, the unquantized model's result with
its per-item scores (what paired statistics need), the task's fingerprint, and
provenance. It is read strictly:

- missing file or task → :class:`BaselineError` with the command that records it;
- unreadable, truncated or hand-edited file (the stored checksum no longer
  matches) → :class:`BaselineError`, never a silent pass;
- stale (the model, the task's items, limit or few-shot differ from the suite)
  → :class:`BaselineError` with a field-by-field diff;
- only library versions differ → a :class:`PytestQuantWarning`.

It is written only when asked (``--quant-update-baselines``), under a file lock,
to a temporary file in the same folder that then replaces the old one, so a
crash never leaves half a baseline.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_quant.atomic import atomic_write_text
from pytest_quant.errors import BaselineError, PytestQuantWarning
from pytest_quant.results import TaskResult

FORMAT = "pytest-quant/baseline"
VERSION = 1
UPDATE_FLAG = "--quant-update-baselines"


def model_slug(name: str) -> str:
    """A file-system-safe name for a model (``org/Model-7B`` → ``org--Model-7B``)."""
    slug = name.strip().replace("/", "--")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", slug).strip("._")
    return slug or "model"


def _checksum(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "checksum"}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class BaselineEntry:
    """What the store knows of one task of one model."""

    result: TaskResult
    task_config: dict[str, Any]
    model_fingerprint: str
    provenance: dict[str, Any]


@dataclass(frozen=True)
class Expectation:
    """What the suite now asks for; a stored entry must match it to be used."""

    task_config: dict[str, Any]
    model_fingerprint: str
    versions: dict[str, str]


class BaselineStore:
    def __init__(self, root: Path, *, update_hint: str = f"pytest {UPDATE_FLAG}"):
        self.root = Path(root)
        self.update_hint = update_hint

    def path_for(self, model_name: str) -> Path:
        return self.root / f"{model_slug(model_name)}.json"

    # -- reading ---------------------------------------------------------
    def _read(self, path: Path) -> dict[str, Any] | None:
        if not path.exists():
            return None
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BaselineError(f"{path}: cannot read baseline: {exc}") from None
        try:
            doc = json.loads(text, parse_constant=_reject_constant)
        except (json.JSONDecodeError, ValueError) as exc:
            raise BaselineError(
                f"{path}: corrupt baseline (not valid JSON: {exc}). Restore it from version control "
                f"or re-record it with `{self.update_hint}`."
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise BaselineError(
                f"{path}: not a pytest-quant baseline "
                f"(field 'format' is {doc.get('format') if isinstance(doc, dict) else doc!r})"
            )
        if doc.get("version") != VERSION:
            raise BaselineError(
                f"{path}: baseline format version {doc.get('version')!r}; this pytest-quant reads {VERSION}"
            )
        if doc.get("checksum") != _checksum(doc):
            raise BaselineError(
                f"{path}: baseline checksum mismatch: the file was edited by hand or truncated. "
                f"Baselines are written by `{self.update_hint}` only; restore it or re-record it."
            )
        if not isinstance(doc.get("tasks"), dict):
            raise BaselineError(f"{path}: field 'tasks' must be a mapping")
        return doc

    def load(self, model_name: str, task: str, expect: Expectation | None = None) -> BaselineEntry:
        """The stored entry for ``task``, checked against ``expect``; raises BaselineError otherwise."""
        path = self.path_for(model_name)
        doc = self._read(path)
        if doc is None:
            raise BaselineError(
                f"no baseline for model {model_name!r}: {path} does not exist.\n"
                f"Record it (evaluates the unquantized model and writes the file) with:\n    {self.update_hint}"
            )
        raw = doc["tasks"].get(task)
        if raw is None:
            known = ", ".join(sorted(doc["tasks"])) or "none"
            raise BaselineError(
                f"{path}: no baseline for task {task!r} (recorded: {known}).\nRecord it with:\n    {self.update_hint}"
            )
        try:
            entry = BaselineEntry(
                result=TaskResult.from_json(raw["result"]),
                task_config=dict(raw["task_config"]),
                model_fingerprint=str(doc["model"]["fingerprint"]),
                provenance=dict(raw.get("provenance") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BaselineError(f"{path}: task {task!r} entry is malformed ({type(exc).__name__}: {exc})") from None
        _validate_result(entry.result, path, task)
        if expect is not None:
            self._validate_fresh(path, task, entry, expect)
        return entry

    def _validate_fresh(self, path: Path, task: str, entry: BaselineEntry, expect: Expectation) -> None:
        diffs = []
        if entry.model_fingerprint != expect.model_fingerprint:
            diffs.append(
                f"  model fingerprint: {entry.model_fingerprint} (baseline) != {expect.model_fingerprint} (now)"
            )
        keys = sorted(set(entry.task_config) | set(expect.task_config))
        for k in keys:
            a, b = entry.task_config.get(k), expect.task_config.get(k)
            if a != b:
                diffs.append(f"  task.{k}: {a!r} (baseline) != {b!r} (suite)")
        if diffs:
            raise BaselineError(
                f"{path}: stale baseline for task {task!r}:\n"
                + "\n".join(diffs)
                + f"\nRe-record it with:\n    {self.update_hint}"
            )
        recorded = entry.provenance.get("versions") or {}
        drift = [
            f"{k} {recorded.get(k)} -> {v}"
            for k, v in sorted(expect.versions.items())
            if recorded.get(k) not in (None, v)
        ]
        if drift:
            warnings.warn(
                PytestQuantWarning(
                    f"{path}: baseline for {task!r} was recorded with other library versions ({'; '.join(drift)})"
                ),
                stacklevel=2,
            )

    # -- writing ---------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        from filelock import FileLock

        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=600):
            yield

    def write(
        self,
        model_name: str,
        model_fingerprint: str,
        task: str,
        result: TaskResult,
        task_config: dict[str, Any],
        provenance: dict[str, Any],
    ) -> Path:
        """Write (or replace) one task's baseline atomically; other tasks in the file are kept."""
        _validate_result(result, self.path_for(model_name), task)
        path = self.path_for(model_name)
        with self._locked(path):
            try:
                doc = self._read(path)
            except BaselineError:
                doc = None  # an explicit update replaces a corrupt file
            if doc is None or doc["model"].get("fingerprint") != model_fingerprint:
                doc = {"format": FORMAT, "version": VERSION, "model": {}, "tasks": {}}
            doc["model"] = {"name": model_name, "fingerprint": model_fingerprint}
            doc["tasks"][task] = {
                "task_config": task_config,
                "result": result.to_json(),
                "provenance": provenance,
            }
            doc["tasks"] = dict(sorted(doc["tasks"].items()))
            doc.pop("checksum", None)
            doc["checksum"] = _checksum(doc)
            atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=False, allow_nan=False) + "\n")
        return path


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} in baseline")


def _validate_result(result: TaskResult, path: Path, task: str) -> None:
    where = f"{path}: task {task!r}"
    if result.n == 0:
        raise BaselineError(f"{where}: baseline has no items")
    if len(result.item_ids) != result.n or len(set(result.item_ids)) != result.n:
        raise BaselineError(f"{where}: item ids do not match the scores one to one")
    if result.weights is not None and len(result.weights) != result.n:
        raise BaselineError(f"{where}: weights do not match the scores one to one")
    values = [result.value, *result.scores, *(result.weights or ())]
    if not all(math.isfinite(v) for v in values):
        raise BaselineError(f"{where}: baseline holds a non-finite value")
