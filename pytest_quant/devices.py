"""Devices: CPU threads and GPU groups per pytest-xdist worker, and whether an item's GPUs are there.

Plugin layer. torch and ray are imported only when an item marked ``gpu`` is about to run.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from pytest_quant.config import SuiteConfig
from pytest_quant.errors import QuantConfigError


def pin_threads() -> None:
    """Split the cores between pytest-xdist workers so torch does not oversubscribe them."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers or "OMP_NUM_THREADS" in os.environ:
        return
    threads = max(1, (os.cpu_count() or 1) // max(1, int(workers)))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))
    if "torch" in sys.modules:  # imported by someone before us: set it directly
        sys.modules["torch"].set_num_threads(threads)


def gpu_group(config: pytest.Config) -> None:
    """Worker gwN sees GPUs [N*g, (N+1)*g) of those visible to the controller (set before torch starts CUDA)."""
    # config.workerinput exists on xdist workers only (the environment may be inherited from an outer run).
    worker = str(getattr(config, "workerinput", {}).get("workerid", ""))
    try:
        size = int(config.getini("quant_gpus_per_worker") or 0)
    except ValueError:
        raise pytest.UsageError(
            f"ini quant_gpus_per_worker: expected a whole number, got {config.getini('quant_gpus_per_worker')!r}"
        ) from None
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


def devices_needed(suite: SuiteConfig) -> int:
    """GPUs one evaluation of the suite occupies: tensor x pipeline parallel size (the largest
    of the suite model's and its reference models')."""
    runs = [("evaluation.backend_args", suite.evaluation.backend_args)]
    runs += [
        (f"references.{name}.backend_args", suite.reference_run(name)[1].backend_args) for name in suite.references
    ]
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


def cuda_devices() -> int:
    """CUDA devices visible to this process (0 without torch or CUDA)."""
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


def skip_without_devices(item: pytest.Item) -> None:
    """Skip an item marked ``gpu(devices=N)`` with a reason when fewer than N GPUs are there
    (those of the Ray cluster at RAY_ADDRESS for a suite evaluating over Ray)."""
    marks = list(item.iter_markers("gpu"))
    if not marks:
        return
    need = max(int(m.kwargs.get("devices", m.args[0] if m.args else 1)) for m in marks)
    suite: Any = getattr(item, "suite", None)
    ray = suite is not None and suite.evaluation.backend_args.get("distributed_executor_backend") == "ray"
    have = _ray_gpus() if ray else None
    where = "in the Ray cluster at RAY_ADDRESS"
    if have is None:
        have = cuda_devices()
        where = "visible on this machine" + (" (set RAY_ADDRESS for a multi-node Ray cluster)" if ray else "")
    if have < need:
        pytest.skip(f"needs {need} CUDA device(s); {have} {where}")
    wanted = next((str(m.kwargs["hardware"]).split(",") for m in marks if m.kwargs.get("hardware")), None)
    if wanted:
        found = hardware_kind()
        if found not in wanted:
            pytest.skip(
                f"its recorded values belong to {' or '.join(HARDWARE_TEXT.get(w, w) for w in wanted)} GPUs; "
                f"this machine has {HARDWARE_TEXT.get(found, found) if found else 'none of those'}"
            )


HARDWARE_TEXT = {
    "rocm": "AMD (ROCm)",
    "xpu": "Intel XPU",
    "hopper": "NVIDIA Hopper (sm90)",
    "blackwell": "NVIDIA Blackwell (sm100)",
    "cuda": "other NVIDIA",
}


def hardware_kind() -> str | None:
    """``rocm``, ``xpu``, ``hopper``, ``blackwell``, ``cuda`` (another NVIDIA GPU), or None without a GPU."""
    try:
        import torch
    except ImportError:
        return None
    if getattr(torch.version, "hip", None) and torch.cuda.is_available():
        return "rocm"
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return "xpu"
    if not torch.cuda.is_available():
        return None
    major, _ = torch.cuda.get_device_capability(0)
    return {9: "hopper", 10: "blackwell"}.get(major, "cuda")
