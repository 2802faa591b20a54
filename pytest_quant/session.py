"""The one object a pytest session keeps in ``config.stash``: its records.

The session holds what the run knows and has produced — the options, the artifact and
result cache, the baseline store, the models resolved so far, the result rows the summary
and reports print, the baselines written — and does no computing of its own (syrupy's
``session.py``). The work is done by the modules named for it, each taking the session:
:mod:`~pytest_quant.artifacts` (models and quantized artifacts), :mod:`~pytest_quant.evaluation`
(evaluations, baselines, speed) and :mod:`~pytest_quant.checks` (judging one item).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pytest_quant.baseline import BaselineStore
from pytest_quant.budget import Mode

if TYPE_CHECKING:
    from pytest_quant.backends.cache import ArtifactCache
    from pytest_quant.backends.protocol import Evaluator

T = TypeVar("T")


@dataclass
class Options:
    """Everything the session needs from the command line and ini (picklable for xdist)."""

    baseline_dir: Path
    cache_dir: Path
    update_baselines: bool = False
    use_cache: bool = True
    mode: Mode | None = None  # given on the command line: overrides suites and budgets
    default_mode: Mode = "alarm"
    confidence: float | None = None  # given on the command line
    default_confidence: float = 0.95
    report_json: Path | None = None
    report_md: Path | None = None
    report_png: Path | None = None
    flip_rate: float = 0.10
    datasets: str | None = None  # --quant-datasets / ini quant_datasets: overrides suites
    export_datasets: Path | None = None  # --quant-export-datasets: the session only writes a mirror here
    backend: str | None = None  # --quant-backend: overrides suites
    strict: bool = False  # --quant-strict: a quant item that is skipped, errored or not collected fails the session
    import_errors: str = "fail"  # ini quant_import_errors: an unmappable imported config's item fails or skips
    import_tp_size: int = 1  # ini quant_import_tp_size: an imported vLLM config's TP size where no list gives one
    family: str = "suite"  # --quant-family / ini quant_family: a suite's alarms judged together (Holm) or alone
    doctor: tuple[str, ...] = ()  # --quant-doctor: checkpoint folders to check instead of collecting tests


@dataclass
class QuantSession:
    options: Options
    progress: Callable[[str], None] = lambda msg: None
    rows: list[dict[str, Any]] = field(default_factory=list)
    baselines_written: list[str] = field(default_factory=list)
    models: dict[str, Any] = field(default_factory=dict)  # ModelConfig JSON -> ResolvedModel
    # suite file -> the names of its alarm checks selected in this run (the family Holm corrects over)
    families: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # suite file -> the names of its checks selected in this run (what a staged task's stops consider)
    selected: dict[str, frozenset[str]] = field(default_factory=dict)
    # what is decided once per run and read by several items: sequential stops, Holm's rejections
    decisions: dict[Any, Any] = field(default_factory=dict)
    _cache: ArtifactCache | None = None
    _evaluators: dict[str, Evaluator] = field(default_factory=dict)

    @property
    def cache(self) -> ArtifactCache:
        """The artifact and result cache (a fresh folder of this session's own under --quant-no-cache)."""
        if self._cache is None:
            from pytest_quant.backends.cache import ArtifactCache

            root = self.options.cache_dir
            if not self.options.use_cache:
                import tempfile

                root = Path(tempfile.mkdtemp(prefix="pytest-quant-nocache-"))
            self._cache = ArtifactCache(root, enabled=self.options.use_cache)
        return self._cache

    @property
    def store(self) -> BaselineStore:
        hint = f"pytest --quant-update-baselines  (writes into {self.options.baseline_dir})"
        return BaselineStore(self.options.baseline_dir, update_hint=hint)

    def evaluator(self, name: str) -> Evaluator:
        """The evaluation backend ``name``, keeping its runs under this session's cache root."""
        if name not in self._evaluators:
            from pytest_quant.backends import get_evaluator

            self._evaluators[name] = get_evaluator(name, cache_dir=self.options.cache_dir)
        return self._evaluators[name]

    def timed(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, with a progress line before and one with the seconds it took after."""
        self.progress(f"{what} ...")
        start = time.perf_counter()
        out = fn()
        self.progress(f"{what} done in {time.perf_counter() - start:.1f}s")
        return out

    def resolve_mode(self, *candidates: Mode | None) -> Mode:
        """The command line's mode, else the first one given (budget, suite), else the ini default."""
        if self.options.mode is not None:
            return self.options.mode
        return next((c for c in candidates if c is not None), self.options.default_mode)

    def resolve_confidence(self, *candidates: float | None) -> float:
        if self.options.confidence is not None:
            return self.options.confidence
        return next((c for c in candidates if c is not None), self.options.default_confidence)
