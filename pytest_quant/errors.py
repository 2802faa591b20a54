"""Every error and warning type of pytest-quant, for every layer.

Users meet these as a failing item's message (the explained ones, without a traceback), a
collection error, a skip reason or a warning; engines raise them, never pytest's own types.
"""

from __future__ import annotations


class QuantConfigError(ValueError):
    """A suite, scheme, task, budget or option is invalid.

    Rendered as ``file:line: field: problem (got value)`` so editors and CI logs
    can jump to the spot; ``detail`` keeps the bare problem for re-wrapping.
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None, line: int | None = None):
        self.detail = message
        self.source = source
        self.field = field
        self.line = line
        where = ""
        if source:
            where = f"{source}:{line}" if line else source
        if field:
            where = f"{where}: {field}" if where else field
        super().__init__(f"{where}: {message}" if where else message)


class BaselineError(RuntimeError):
    """A baseline is missing, corrupt or stale."""


class BudgetExceeded(AssertionError):
    """A budget's claim does not hold (the test item fails with this explanation)."""


class ResultError(AssertionError):
    """A result cannot be judged (different items, NaN metrics, empty); never a pass."""


class EvaluationError(RuntimeError):
    """An evaluation backend failed outside this process (a worker crashed or timed out)."""


class WorkerError(EvaluationError):
    """A worker subprocess (the vLLM evaluation, a speed measurement) failed, was killed or timed out.

    The message explains itself: what ran on which model folder, the worker's own error,
    where its full log is kept and that log's last lines (:mod:`pytest_quant.backends.worker`).
    """


class QuantOutOfMemoryError(RuntimeError):
    """Quantizing or evaluating ran out of memory (torch.OutOfMemoryError, MemoryError, or torch's
    CPU allocator refusing); the message names the scheme or task and the settings to lower."""


class BackendUnavailable(RuntimeError):
    """A backend's optional library is not installed; the message says how to install it.

    The plugin turns it into a skip (with this message as the reason), never a pass or an error.
    """


class KernelUnavailable(BackendUnavailable):
    """The evaluation engine has no kernel for this checkpoint on this device (vLLM-CPU and W8A16,
    say). The message is the reason; the plugin decides whether that may skip (see ``items``)."""


class PytestQuantWarning(UserWarning):
    """Something worth a look that does not invalidate a verdict."""


# Errors that mean "this item cannot pass" and explain themselves without a traceback.
EXPLAINED: tuple[type[BaseException], ...] = (
    BudgetExceeded,
    ResultError,
    BaselineError,
    QuantConfigError,
    QuantOutOfMemoryError,
    EvaluationError,
)
