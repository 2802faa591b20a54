"""Efficiency of a model folder: weight memory, checkpoint size, peak memory, prefill and decode speed.

Engine layer. Two kinds of number, measured differently:

- :func:`weight_footprint` reads the folder's files only (safetensors headers: 8 bytes of
  length, then JSON), so it imports nothing heavy and gives the same number on every machine.
  A compressed-tensors checkpoint stores its weights packed (``weight_packed`` int32 words,
  ``weight_scale``, ``weight_zero_point``), so the sum of its tensors' sizes *is* what the
  weights take deployed. The reference RTN backend writes dense, already dequantized weights
  and records the scheme in ``pytest_quant_scheme.json``; for each layer it quantized, the
  dense weight is counted at the scheme's bit width (packed) plus one scale per group (at the
  stored dtype, as compressed-tensors keeps them) and, when asymmetric, one zero point per
  group at the bit width.
- :func:`measure_runtime` loads the folder the way the HF evaluator does
  (:func:`~pytest_quant.backends.models.load_causal_lm`) in a fresh Python process
  (``python -m pytest_quant.backends.efficiency REQUEST.json``), so its memory high-water
  mark belongs to this model alone and the session's loaded models do not disturb it. It runs
  one warm-up and ``repeats`` greedy ``generate`` calls of ``new_tokens`` tokens after a fixed
  ``prompt_tokens``-token prompt (batch 1) and keeps the fastest of each phase; a streamer
  timestamps every token (prefill = time to the first new token, decode = the rest).

Caveat, stated in every speed verdict: the HF backend *dequantizes* weight-only checkpoints at
load (``CompressedTensorsConfig(dequantize=True)``; RTN artifacts are dense already), so on CPU a
W4A16/W8A16 model runs, and takes memory, about like the unquantized one. Speed budgets measure
something only where quantized kernels run (vLLM on a GPU); weight memory is the deployment number.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_quant.backends.protocol import read_scheme_record
from pytest_quant.config import EfficiencyConfig
from pytest_quant.errors import QuantConfigError
from pytest_quant.results import RuntimeMeasurement, WeightFootprint

__all__ = ["measure_runtime", "read_safetensors_header", "weight_footprint", "DEQUANTIZED_NOTE"]

_OTHER_WEIGHTS = (".bin", ".pt", ".pth")
DEQUANTIZED_NOTE = (
    "the HF backend runs weight-only checkpoints dequantized (compressed-tensors dequantize=True; "
    "RTN artifacts are dense), so on CPU their speed and peak memory are about the unquantized model's; "
    "a speed budget measures something where quantized kernels run (vLLM on a GPU)"
)


# --------------------------------------------------------------------------- weight memory (no torch)
def read_safetensors_header(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{tensor name: {"dtype", "shape", "data_offsets"}}`` of a ``.safetensors`` file (metadata dropped)."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (length,) = struct.unpack("<Q", raw)
        if length > 100 * 2**20:
            raise ValueError(f"{path}: not a safetensors file (header of {length} bytes)")
        header = json.loads(fh.read(length))
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not a mapping")
    return {k: v for k, v in header.items() if k != "__metadata__"}


def _tensor_bytes(info: dict[str, Any]) -> int:
    start, end = info["data_offsets"]
    return int(end) - int(start)


def _folder_bytes(model_dir: Path) -> int:
    total = 0
    for p in model_dir.rglob("*"):
        rel = p.relative_to(model_dir).parts
        if any(part.startswith(".") for part in rel) or not p.is_file():
            continue
        total += p.stat().st_size  # follows the hub cache's symlinks to their blobs
    return total


def _quantized_bytes(shape: list[int], stored_bytes: int, bits: int, group_size: int | None, symmetric: bool) -> int:
    """Bytes of one ``[out, in]`` weight at ``bits`` (packed), with its scales and zero points."""
    out_features, in_features = int(shape[0]), int(math.prod(shape[1:]))
    numel = out_features * in_features
    itemsize = stored_bytes // max(1, numel)  # the scales' dtype: the weight's stored dtype
    groups = out_features * (math.ceil(in_features / group_size) if group_size else 1)
    packed = math.ceil(numel * bits / 8)
    zero_points = 0 if symmetric else math.ceil(groups * bits / 8)
    return packed + groups * itemsize + zero_points


def weight_footprint(model_dir: str | Path) -> WeightFootprint:
    """Weight memory (deployed) and checkpoint size (on disk) of a HF model folder; see the module docstring."""
    model_dir = Path(model_dir)
    shards = sorted(p for p in model_dir.glob("*.safetensors") if not p.name.startswith("."))
    checkpoint = _folder_bytes(model_dir)
    if not shards:
        others = [p for p in model_dir.iterdir() if p.is_file() and p.suffix in _OTHER_WEIGHTS]
        if not others:
            raise QuantConfigError(f"{model_dir}: no weights (*.safetensors, *.bin) to measure")
        return WeightFootprint(
            sum(p.stat().st_size for p in others), checkpoint, 0, "weight file sizes (no safetensors)"
        )
    tensors: dict[str, dict[str, Any]] = {}
    for shard in shards:
        tensors.update(read_safetensors_header(shard))
    sizes = {name: _tensor_bytes(info) for name, info in tensors.items()}
    quantized = sum(
        1 for name in tensors if name.endswith(".weight_scale")
    )  # compressed-tensors: one per quantized layer
    how = "safetensors tensor sizes"
    if quantized:
        how += " (quantized layers as stored: packed weights + scales/zero points)"
    record = {} if quantized else read_scheme_record(model_dir)
    if record.get("awq_checkpoint"):  # AutoAWQ: evaluated dense, deployed as its packed GEMM checkpoint
        packed = record["awq_checkpoint"]
        return WeightFootprint(
            packed["tensor_bytes"], checkpoint, len(packed["layers"]), "AutoAWQ GEMM checkpoint tensor sizes"
        )
    if record.get("quantized_layers"):  # dense fake-quantized weights (reference RTN), not a compressed checkpoint
        weights = (record.get("scheme") or {}).get("weights") or {}
        bits, group, sym = int(weights.get("bits", 8)), weights.get("group_size"), bool(weights.get("symmetric", True))
        layers = record["quantized_layers"]
        for layer in layers:
            name = f"{layer}.weight"
            if name in tensors:
                sizes[name] = _quantized_bytes(tensors[name]["shape"], sizes[name], bits, group, sym)
        quantized = len(layers)
        how = (
            f"dense RTN weights counted as deployed: {len(layers)} layers at {bits} bits packed"
            f" + {'per-group (g' + str(group) + ')' if group else 'per-channel'} scales"
            + ("" if sym else " and zero points")
        )
    return WeightFootprint(sum(sizes.values()), checkpoint, quantized, how)


# --------------------------------------------------------------------------- speed and peak memory (subprocess)
def measure_runtime(
    model_dir: str | Path,
    *,
    settings: EfficiencyConfig,
    device: str = "cpu",
    dtype: str | None = None,
    runs_dir: Path | None = None,
    timeout: float = 3600.0,
) -> RuntimeMeasurement:
    """Speed and peak memory of ``model_dir``, measured in a fresh Python process (see the module docstring),
    through the worker contract of :mod:`pytest_quant.backends.worker` (run folders under ``runs_dir``)."""
    from pytest_quant.backends.cache import default_cache_dir
    from pytest_quant.backends.worker import run_worker

    request = {
        "model_dir": str(Path(model_dir).resolve()),
        "device": device,
        "dtype": dtype,
        "prompt_tokens": settings.prompt_tokens,
        "new_tokens": settings.new_tokens,
        "repeats": settings.repeats,
    }
    answer = run_worker(
        sys.executable,
        "pytest_quant.backends.efficiency",
        request,
        what=f"measuring the speed and peak memory of {model_dir}",
        runs_dir=runs_dir or default_cache_dir() / "workers",
        timeout=timeout,
    )
    return RuntimeMeasurement.from_json(answer.payload)


def _rss_bytes() -> int:
    """The process's resident set now (psutil when installed, else /proc; 0 when neither is there)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux 4.0+); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


_PROMPT_TEXT = (
    "The committee met on a cold morning to review the quarterly results. Revenue had grown in every "
    "region except the north, where a late harvest delayed shipments by three weeks. "
)


def prompt_ids(tokenizer: Any, n: int, shift: int = 0) -> list[int]:
    """A fixed prompt of exactly ``n`` tokens (BOS first when the tokenizer adds one); ``shift``
    starts the text that many tokens later (a different prompt of the same length, for engines
    with a prefix cache)."""
    from pytest_quant.backends.models import adds_bos

    bos = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []
    body: list[int] = []
    while len(body) < n + shift:
        body += tokenizer(_PROMPT_TEXT, add_special_tokens=False)["input_ids"]
    return (bos + body[shift:])[:n]


def best_of_runs(
    run: Callable[[], tuple[float, float]], *, prompt_tokens: int, new_tokens: int, repeats: int, device: str
) -> dict[str, Any]:
    """The speed measurement both backends make: ``run()`` generates ``new_tokens`` after a
    ``prompt_tokens`` prompt, batch 1, and returns (prefill seconds, seconds for the other
    ``new_tokens - 1`` tokens). One warm-up run, then the fastest of ``repeats``. Peak memory is
    left at 0 for the caller to fill in where it measures it."""
    run()  # warm-up: allocator, kernels, caches, an engine's first step
    runs = [run() for _ in range(repeats)]
    prefill, decode = min(r[0] for r in runs), min(r[1] for r in runs)
    return {
        "prefill_tokens_per_s": prompt_tokens / prefill if prefill > 0 else math.inf,
        "decode_tokens_per_s": (new_tokens - 1) / decode if decode > 0 else math.inf,
        "peak_memory_bytes": 0,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "repeats": repeats,
        "device": device,
        "meta": {"prefill_seconds": [r[0] for r in runs], "decode_seconds": [r[1] for r in runs]},
    }


def _import_before_measuring(model_dir: str) -> None:
    """Import what loading and generating import lazily (hundreds of MiB of modules), so the
    peak memory counts the model, not transformers' code."""
    import contextlib

    import transformers.generation.utils  # noqa: F401
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from pytest_quant.backends.models import quantization_method

    with contextlib.suppress(Exception):  # remote code, unusual configs: measured with the imports then
        MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.from_pretrained(model_dir))]
    with contextlib.suppress(Exception):
        AutoTokenizer.from_pretrained(model_dir)
    if quantization_method(model_dir) == "compressed-tensors":
        with contextlib.suppress(ImportError):
            import compressed_tensors  # noqa: F401
            import transformers.quantizers.quantizer_compressed_tensors  # noqa: F401


def _measure(request: dict[str, Any]) -> dict[str, Any]:
    import warnings

    import torch
    from transformers.generation.streamers import BaseStreamer

    from pytest_quant.backends.models import load_causal_lm

    class Clock(BaseStreamer):
        def __init__(self) -> None:
            self.times: list[float] = []

        def put(self, value: Any) -> None:  # the prompt first, then each new token (already on the CPU)
            self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    device, p, n = request["device"], int(request["prompt_tokens"]), int(request["new_tokens"])
    cuda = device.startswith("cuda")
    _import_before_measuring(request["model_dir"])
    before = _rss_bytes()
    reset = _reset_peak_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model, tokenizer = load_causal_lm(request["model_dir"], dtype=request.get("dtype"), device=device)
    ids = torch.tensor([prompt_ids(tokenizer, p)], device=model.device)
    mask = torch.ones_like(ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def run() -> tuple[float, float]:
        clock = Clock()
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sampling settings of the checkpoint's generation_config, unused greedily
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                num_beams=1,
                streamer=clock,
                pad_token_id=pad,
            )
        if out.shape[1] != ids.shape[1] + n or len(clock.times) != n + 1:
            raise RuntimeError(f"generate returned {out.shape[1] - ids.shape[1]} new tokens, not {n}")
        return clock.times[1] - clock.times[0], clock.times[n] - clock.times[1]

    speed = best_of_runs(run, prompt_tokens=p, new_tokens=n, repeats=int(request["repeats"]), device=device)
    if cuda:
        peak, how = int(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated"
    else:
        peak = max(0, _peak_rss_bytes() - before)
        how = "resident-set high-water mark above the size before loading" + (
            "" if reset else " (not reset: includes imports)"
        )
    speed["peak_memory_bytes"] = peak
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    speed["meta"].update(
        {
            "backend": "hf",
            "method": f"hf backend on {device} ({dtype}, {torch.get_num_threads()} threads)",
            "note": DEQUANTIZED_NOTE,
            "peak_memory": how,
            "dtype": dtype,
            "threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
        }
    )
    return speed


if __name__ == "__main__":
    from pytest_quant.backends.worker import serve

    sys.exit(serve(_measure))
