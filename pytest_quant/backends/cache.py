"""The artifact and result cache shared by tests, sessions and pytest-xdist workers.

A quantized model is produced once per key (model fingerprint, resolved scheme,
calibration, library versions) and an evaluation once per key (artifact, task
config, backend). Concurrency and crashes:

- each key has a file lock, so two workers asking for the same artifact build it once;
- a build writes into a temporary folder beside the final one and is renamed into
  place only when complete, so ``kill -9`` mid-build leaves no entry that looks valid
  (stale temporary folders are swept on the next build of that key).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from pytest_quant.atomic import atomic_write_text
from pytest_quant.results import TaskResult

COMPLETE = ".complete"


class ArtifactCache:
    def __init__(self, root: Path, *, enabled: bool = True):
        self.root = Path(root)
        self.enabled = enabled
        self.root.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _lock(self, kind: str, key: str) -> Iterator[None]:
        from filelock import FileLock

        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with FileLock(str(locks / f"{kind}-{key}.lock"), timeout=6 * 3600):
            yield

    def _log(self, event: str, kind: str, key: str, seconds: float | None = None, label: str = "") -> None:
        """Append one line per build to ``builds.log`` (how tests see that a key was built once;
        benchmarks/bench_demo.py reads the seconds and labels)."""
        entry = {"event": event, "kind": kind, "key": key, "pid": os.getpid(), "seconds": seconds}
        if label:
            entry["label"] = label
        line = json.dumps(entry)
        with open(self.root / "builds.log", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def artifact_dir(self, key: str) -> Path:
        return self.root / "artifacts" / key

    def lookup(self, key: str) -> Path | None:
        """The complete artifact folder for ``key``, or None (always None with the cache disabled)."""
        final = self.artifact_dir(key)
        return final if self.enabled and (final / COMPLETE).exists() else None

    def artifact(self, key: str, build: Callable[[Path], None], *, label: str = "") -> Path:
        """The folder for ``key``, built by ``build(tmp_dir)`` if absent."""
        final = self.artifact_dir(key)
        if self.enabled and (final / COMPLETE).exists():
            return final
        with self._lock("artifact", key):
            if self.enabled and (final / COMPLETE).exists():
                return final
            parent = final.parent
            parent.mkdir(parents=True, exist_ok=True)
            for stale in parent.glob(f".tmp-{key}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            if final.exists():  # incomplete leftovers or --quant-no-cache rebuild
                shutil.rmtree(final, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=parent))
            start = time.perf_counter()
            try:
                build(tmp)
                (tmp / COMPLETE).write_text(json.dumps({"label": label, "created": time.time()}))
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self._log("built", "artifact", key, round(time.perf_counter() - start, 3), label)
        return final

    def _computed_once(
        self,
        kind: str,
        key: str,
        path: Path,
        compute: Callable[[], Any],
        read: Callable[[Path], Any],
        dump: Callable[[Any], Any],
        *,
        reuse: bool,
        label: str,
    ) -> Any:
        """``read(path)`` when present and readable (and ``reuse``), else ``compute()`` under the key's
        lock, written atomically as ``json.dumps(dump(value))`` and logged to builds.log as ``kind``."""
        if reuse and path.exists():
            cached = read(path)
            if cached is not None:
                return cached
        with self._lock(kind, key):
            if reuse and path.exists():
                cached = read(path)
                if cached is not None:
                    return cached
            start = time.perf_counter()
            value = compute()
            atomic_write_text(path, json.dumps(dump(value)))
            self._log("built", kind, key, round(time.perf_counter() - start, 3), label)
        return value

    def result(self, key: str, compute: Callable[[], TaskResult], *, label: str = "") -> TaskResult:
        """The evaluation result for ``key``, computed by ``compute()`` if absent."""
        path = self.root / "results" / f"{key}.json"
        return self._computed_once("result", key, path, compute, _read_result, TaskResult.to_json, reuse=self.enabled, label=label)

    def record(self, key: str, compute: Callable[[], dict[str, Any]], *, label: str = "") -> dict[str, Any]:
        """A JSON record for ``key`` (one lm-eval run shared by the tasks reading its metrics), computed once.

        Read even when the cache is disabled: a session without cache gets a fresh folder, so this
        only shares a run between the tasks of that session."""
        path = self.root / "runs" / f"{key}.json"
        return self._computed_once("run", key, path, compute, _read_json, lambda record: record, reuse=True, label=label)

    def measurement(self, key: str, compute: Callable[[], Any], load: Callable[[dict[str, Any]], Any], *, label: str = "") -> Any:
        """An efficiency measurement for ``key`` (any object with ``to_json()``, read back with
        ``load``), computed once like an evaluation result; logged as kind ``"efficiency"``."""
        path = self.root / "results" / f"{key}.json"
        return self._computed_once(
            "efficiency", key, path, compute, lambda p: _read_result(p, load), lambda m: m.to_json(), reuse=self.enabled, label=label
        )

    def builds(self) -> list[dict[str, Any]]:
        path = self.root / "builds.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _read_result(path: Path, load: Callable[[dict[str, Any]], Any] = TaskResult.from_json) -> Any:
    try:
        return load(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable cache entries are recomputed, never trusted


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
