"""The one way pytest-quant runs work in a subprocess: a JSON request in, a JSON answer out.

Engine layer, imports nothing heavy (the vLLM worker imports it inside vLLM's environment).
Two workers use it: the vLLM evaluation (``backends/vllm_worker.py``, in vLLM's own Python) and
the speed measurement of the HF backend (``backends/efficiency.py``, in a fresh interpreter so
that its memory high-water mark is the model's alone).

The contract (llm-compressor's ``tests/lmeval`` style):

- the parent writes ``request.json`` into a run folder of its own under ``runs_dir`` and starts
  ``PYTHON -m MODULE request.json`` in a new process group, stdout and stderr to ``worker.log``
  beside it; the request carries ``output``, where the worker writes its answer;
- the worker (:func:`serve`) writes either its payload (a JSON object) and exits 0, or
  ``{"error": {"kind", "message", "field"}}`` and exits non-zero. ``kind`` is ``config`` (a
  setting is wrong: QuantConfigError naming ``field``), ``unavailable`` (no kernel for this model
  on this device: KernelUnavailable) or ``error`` (anything else; its traceback is in the log);
- the parent (:func:`run_worker`) kills the whole group on timeout or interruption and reaps
  stragglers after a normal exit; it removes the run folder once the answer is read, and keeps
  it, log included, when the worker failed, naming it in the :class:`WorkerError` it raises with
  the log's last lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_quant.errors import KernelUnavailable, QuantConfigError, WorkerError

__all__ = ["WorkerAnswer", "log_tail", "run_worker", "serve"]

LOG_TAIL_LINES = 30
TAIL_LINE_CHARS = 400
EXIT_ERROR, EXIT_CONFIG, EXIT_UNAVAILABLE = 1, 2, 3


@dataclass(frozen=True)
class WorkerAnswer:
    """What a worker answered (its payload), how long it ran, and its whole log."""

    payload: dict[str, Any]
    wall_s: float
    log: str


# --------------------------------------------------------------------------- the parent
def run_worker(
    python: str | Path,
    module: str,
    request: dict[str, Any],
    *,
    what: str,
    runs_dir: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    timeout_hint: str = "",
) -> WorkerAnswer:
    """Run ``python -m module`` on ``request`` (see the module docstring); its answer, or a clear error.

    ``what`` names the work in errors ("vLLM evaluation of 'arc' on /models/x"); ``timeout_hint``
    says which setting raises the time limit.
    """
    runs_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=runs_dir))
    output = work / "result.json"
    (work / "request.json").write_text(json.dumps({**request, "output": str(output)}, indent=1), encoding="utf-8")
    log = work / "worker.log"
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(python), "-m", module, str(work / "request.json")],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: a timeout ends the worker's children too
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise WorkerError(
                f"{what} did not finish within {timeout:.0f} s{f' ({timeout_hint})' if timeout_hint else ''}; "
                f"log kept at {log}\n--- last lines of the worker's log ---\n{log_tail(log)}"
            ) from None
        except BaseException:  # KeyboardInterrupt, pytest's timeout...: leave no worker behind
            _kill_group(proc)
            raise
        _reap_group(proc)  # stragglers of a worker that exited (an engine process that outlived it)
    wall = time.perf_counter() - start
    text = log.read_text(encoding="utf-8", errors="replace")
    payload = None
    with contextlib.suppress(OSError, ValueError):
        payload = json.loads(output.read_text(encoding="utf-8"))
    if code == 0 and isinstance(payload, dict) and "error" not in payload:
        _remove(work)
        return WorkerAnswer(payload, wall, text)
    error = (payload or {}).get("error") or {} if isinstance(payload, dict) else {}
    kind, message = error.get("kind"), error.get("message")
    if kind == "unavailable":
        _remove(work)
        raise KernelUnavailable(message)
    if kind == "config":
        _remove(work)
        raise QuantConfigError(str(message), field=error.get("field"))
    raise WorkerError(
        f"{what} failed ({_status(code)}): {message or 'no result written'}\n"
        f"python: {python}; log kept at {log}\n--- last lines of the worker's log"
        + (" before the error ---\n" if message else " ---\n")
        + log_tail(log, before_traceback=bool(message))
    ) from None


def _status(code: int) -> str:
    if code >= 0:
        return f"worker exit code {code}"
    try:  # ended by a signal: SIGKILL with no word is most often the kernel's OOM killer
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"worker killed by {name}" + (", out of memory?" if -code == signal.SIGKILL else "")


def _remove(work: Path) -> None:
    import shutil

    shutil.rmtree(work, ignore_errors=True)


def log_tail(log: Path, lines: int = LOG_TAIL_LINES, *, before_traceback: bool = False) -> str:
    """The log's last lines, without progress bars; with ``before_traceback``, those before the last
    traceback (the worker's error is already in the message; what it logged before is the context)."""
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
    """End the worker and everything it started (an engine and its workers share its process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=15)
    _reap_group(proc)


def _reap_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL whatever is left of the worker's process group (none after a clean exit)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


# --------------------------------------------------------------------------- the worker
def _write(path: str, payload: dict[str, Any]) -> None:
    target = Path(path)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, default=str), encoding="utf-8")
    os.replace(tmp, target)


def serve(handle: Callable[[dict[str, Any]], dict[str, Any]], argv: list[str] | None = None) -> int:
    """The worker's side: read the request named in ``argv``, answer with ``handle(request)``.

    Errors become the ``{"error": ...}`` answer (see the module docstring): QuantConfigError →
    ``config``; KernelUnavailable → ``unavailable``; a missing module → ``config`` (this Python is
    not the environment it should be); anything else → ``error``, its traceback printed to the log.
    Returns the exit code.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m MODULE REQUEST.json", file=sys.stderr)
        return 64
    request = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    output = request["output"]
    try:
        payload = handle(request)
    except QuantConfigError as exc:
        _write(output, {"error": {"kind": "config", "message": exc.detail, "field": exc.field}})
        return EXIT_CONFIG
    except KernelUnavailable as exc:
        _write(output, {"error": {"kind": "unavailable", "message": str(exc)}})
        return EXIT_UNAVAILABLE
    except ModuleNotFoundError as exc:
        message = f"{exc}: {sys.executable} lacks {exc.name!r}, which this worker needs"
        _write(output, {"error": {"kind": "config", "message": message, "field": request.get("python_field")}})
        return EXIT_CONFIG
    except Exception as exc:  # noqa: BLE001  (any failure: reported by the parent with the log's tail)
        traceback.print_exc()
        lines = [ln for ln in f"{type(exc).__name__}: {exc}".splitlines() if "errors.pydantic.dev" not in ln]
        _write(output, {"error": {"kind": "error", "message": "\n".join(lines[:20])[:4000]}})
        return EXIT_ERROR
    _write(output, payload)
    return 0
