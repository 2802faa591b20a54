"""Running out of memory, explained; and giving memory back between models.

Engine layer, imports nothing heavy: torch is looked up in ``sys.modules`` (without it loaded
there is no tensor to free).
"""

from __future__ import annotations

import gc
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from pytest_quant.errors import EvaluationError, QuantOutOfMemoryError

__all__ = ["is_out_of_memory", "out_of_memory_explained", "release_memory"]

T = TypeVar("T")
_OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """``torch.OutOfMemoryError`` (CUDA and other accelerators), Python's ``MemoryError``, or torch's
    CPU allocator refusing an allocation (a plain ``RuntimeError``: "DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(exc, MemoryError) or any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _OUT_OF_MEMORY)


def release_memory() -> None:
    """Give back what dropped models held: collect reference cycles (a transformers model has
    them), then return CUDA's cached blocks to the driver when CUDA is in use."""
    gc.collect()
    torch: Any = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def out_of_memory_explained(fn: Callable[[], T], what: str, hint: str) -> T:
    """``fn()``, with running out of memory turned into :class:`QuantOutOfMemoryError` saying ``what``
    ran out and ``hint`` (the settings to lower), so only the item that needed it fails.

    The original exception is not chained: its traceback would keep the failed attempt's tensors alive.
    """
    try:
        return fn()
    except BaseException as exc:
        # EvaluationError (a worker's failure) explains itself, log tail included, even when that says "out of memory"
        if isinstance(exc, (QuantOutOfMemoryError, EvaluationError)) or not is_out_of_memory(exc):
            raise
        detail = re.sub(r"^\[enforce fail at [^\]]*\]\s*(err == 0\.\s*)?", "", str(exc).strip().split("\n")[0])
        detail = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        exc.__traceback__ = None
    torch: Any = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    raise QuantOutOfMemoryError(f"out of memory while {what}: {detail}\n  {hint}")
