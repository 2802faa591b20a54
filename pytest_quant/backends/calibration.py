"""Deterministic calibration batches for GPTQ / AWQ / SmoothQuant / static FP8.

Engine layer. The text is ``calibration.dataset`` (a UTF-8 file) or, without
one, the built-in corpus (see :func:`builtin_corpus`). It is tokenized once,
cut into non-overlapping windows of ``seq_len`` tokens, and ``samples`` of
those windows are drawn with ``random.Random(seed)``: same text, tokenizer and
``CalibrationConfig`` ⇒ same token batches, in the same order.

The built-in corpus needs no hub and no data files: it is the docstrings of a
fixed list of Python standard-library modules, read from their source files
(module docstring, then the docstrings of its public classes, their public
methods and its public functions, in source order), joined by blank lines.
It is English technical prose of about 350 KB. Docstrings can change between Python versions, so the corpus
is identified by :func:`corpus_fingerprint` (a hash of its text), which belongs
in any cache key of a calibrated scheme.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import random
import sysconfig
from pathlib import Path
from typing import Any

from pytest_quant.config import CalibrationConfig
from pytest_quant.errors import QuantConfigError

__all__ = [
    "BUILTIN_CORPUS_MODULES",
    "builtin_corpus",
    "calibration_dataset",
    "calibration_windows",
    "corpus_fingerprint",
    "corpus_text",
]

# Pure-Python, always-importable modules (no tkinter/curses/platform-only ones).
BUILTIN_CORPUS_MODULES: tuple[str, ...] = (
    "abc", "argparse", "base64", "bisect", "calendar", "collections", "contextlib", "copy", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "email.message", "enum", "fractions", "functools",
    "glob", "gzip", "hashlib", "heapq", "hmac", "html", "http.client", "inspect", "io", "ipaddress",
    "itertools", "json", "locale", "logging", "math", "mimetypes", "numbers", "operator", "os",
    "pathlib", "pickle", "pprint", "queue", "random", "re", "sched", "secrets", "shlex", "shutil",
    "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading",
    "timeit", "tokenize", "typing", "unittest.case", "urllib.parse", "uuid", "warnings", "weakref",
    "zipfile",
)  # fmt: skip


def _docstrings(source: str) -> list[str]:
    """Docstrings of a module's source: the module's, then each public class (and its
    public methods) and public function, in source order."""
    tree = ast.parse(source)
    parts = [ast.get_docstring(tree)]
    defs = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if isinstance(node, defs) and not node.name.startswith("_"):
            parts.append(ast.get_docstring(node))
            if isinstance(node, ast.ClassDef):
                parts.extend(
                    ast.get_docstring(m) for m in node.body if isinstance(m, defs) and not m.name.startswith("_")
                )
    return [p.strip() for p in parts if p and p.strip()]


@functools.lru_cache(maxsize=1)
def builtin_corpus() -> str:
    """The built-in calibration text: standard-library docstrings (see the module docstring).

    Read from the modules' source files with :mod:`ast` (nothing is imported), so
    the text depends only on the Python version, not on what ran before.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    for module_name in BUILTIN_CORPUS_MODULES:
        base = stdlib.joinpath(*module_name.split("."))
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                parts.extend(_docstrings(path.read_text(encoding="utf-8")))
                break
    if not parts:  # pragma: no cover - a Python without its .py sources
        raise QuantConfigError(
            f"the built-in calibration corpus needs the standard library's sources under {stdlib}; "
            "set calibration.dataset to a text file",
            field="calibration.dataset",
        )
    return "\n\n".join(parts)


def corpus_text(calib: CalibrationConfig, *, base_dir: Path | None = None) -> str:
    """The calibration text: the ``dataset`` file (relative to ``base_dir``) or the built-in corpus."""
    if calib.dataset is None:
        return builtin_corpus()
    path = Path(calib.dataset).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.is_file():
        raise QuantConfigError(f"calibration file {str(path)!r} does not exist", field="calibration.dataset")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise QuantConfigError(
            f"calibration file {str(path)!r} is not UTF-8 text: {exc}", field="calibration.dataset"
        ) from exc


def corpus_fingerprint(calib: CalibrationConfig, *, base_dir: Path | None = None) -> str:
    """sha256 (16 hex digits) of the calibration text (not of the tokenizer or the sampling)."""
    return hashlib.sha256(corpus_text(calib, base_dir=base_dir).encode("utf-8")).hexdigest()[:16]


def _tokenize(tokenizer: Any, text: str, chunk_chars: int = 1 << 16) -> list[int]:
    """Token ids of ``text`` without special tokens, tokenized in paragraph-aligned chunks."""
    ids: list[int] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + chunk_chars)
        if end < len(text):
            cut = text.rfind("\n\n", start, end)
            end = cut + 2 if cut > start else end
        ids.extend(tokenizer(text[start:end], add_special_tokens=False, verbose=False)["input_ids"])
        start = end
    return ids


def calibration_windows(tokenizer: Any, calib: CalibrationConfig, *, base_dir: Path | None = None) -> list[list[int]]:
    """``calib.samples`` token windows of exactly ``calib.seq_len`` ids each.

    A window starts with BOS when the tokenizer adds one, followed by
    ``seq_len - 1`` corpus tokens. The corpus is cut into non-overlapping windows
    and ``samples`` distinct ones are drawn with ``random.Random(calib.seed)``.
    """
    from pytest_quant.backends.models import adds_bos

    text = corpus_text(calib, base_dir=base_dir)
    ids = _tokenize(tokenizer, text)
    prefix = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []
    body = calib.seq_len - len(prefix)
    available = len(ids) // body
    if available < calib.samples:
        where = f"calibration file {calib.dataset!r}" if calib.dataset else "the built-in calibration corpus"
        raise QuantConfigError(
            f"{where} has {len(ids)} tokens: {available} windows of seq_len {calib.seq_len}, "
            f"but samples {calib.samples} were asked for ({calib.samples * body} tokens); "
            "lower calibration.samples or calibration.seq_len, or give a longer calibration.dataset",
            field="calibration.samples",
        )
    picks = random.Random(calib.seed).sample(range(available), calib.samples)
    return [prefix + ids[i * body : (i + 1) * body] for i in picks]


def calibration_dataset(tokenizer: Any, calib: CalibrationConfig, *, base_dir: Path | None = None) -> Any:
    """An HF ``datasets.Dataset`` with ``input_ids`` / ``attention_mask`` (all ones) that
    llm-compressor's ``oneshot(dataset=...)`` uses as is (already tokenized)."""
    from datasets import Dataset

    windows = calibration_windows(tokenizer, calib, base_dir=base_dir)
    return Dataset.from_dict({"input_ids": windows, "attention_mask": [[1] * len(w) for w in windows]})
