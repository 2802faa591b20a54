"""Error and warning types shared by every layer."""

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


class EvaluationError(RuntimeError):
    """An evaluation backend failed outside this process (a worker crashed or timed out).

    The message explains itself: which task on which model folder, the backend's own
    error, where its full log is kept and that log's last lines. A suite item shows it
    as its failure, without a traceback (the plugin's explained errors).
    """


class QuantOutOfMemoryError(RuntimeError):
    """Quantizing or evaluating ran out of memory (torch.OutOfMemoryError, MemoryError, or torch's
    CPU allocator refusing); the message names the scheme or task and the settings to lower."""


class BackendUnavailable(RuntimeError):
    """A backend's optional library is not installed; the message says how to install it.

    The plugin turns it into a skip (with this message as the reason), never a pass or an error.
    """


class PytestQuantWarning(UserWarning):
    """Something worth a look that does not invalidate a verdict."""
