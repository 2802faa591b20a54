"""The artifact and result cache shared by tests, sessions and pytest-xdist workers.

A quantized model is produced once per key (model fingerprint, resolved scheme,
calibration, library versions) and an evaluation once per key (artifact, task
config, backend). Concurrency and crashes:

- each key has a file lock, so two workers asking for the same artifact build it once;
- a build writes into a temporary folder beside the final one and is renamed into
  place only when complete, so ``kill -9`` mid-build leaves no entry that looks valid
  (stale temporary folders are swept on the next build of that key).

:func:`build_folder_once` is that policy for any folder (the converted GGUF model, the tiny
test model, a quantized artifact), and :func:`default_cache_dir` the one place the default
cache root is read from the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pytest_quant.atomic import atomic_write_text, dir_mode, file_mode
from pytest_quant.errors import QuantConfigError
from pytest_quant.results import TaskResult

COMPLETE = ".complete"
CACHE_ENV = "PYTEST_QUANT_CACHE"


def default_cache_dir() -> Path:
    """``$PYTEST_QUANT_CACHE``, else ``~/.cache/pytest-quant``: the cache root when none is configured."""
    return Path(os.environ.get(CACHE_ENV, "~/.cache/pytest-quant")).expanduser()


def build_folder_once(
    target: Path, build: Callable[[Path], Any], *, done: Callable[[Path], bool], lock: Path, rebuild: bool = False
) -> bool:
    """Build ``target`` with ``build(tmp)`` once, safely across processes; True when this call built it.

    ``done(folder)`` says whether a folder is complete and current; ``lock`` is the file lock that
    serialises builders of ``target``. The build writes into a temporary folder beside ``target``
    (stale ones from killed builds are swept first) that gets the modes ``mkdir``/``open`` would
    give (mkdtemp's are 0700) and replaces ``target`` only when ``build`` returned and ``done`` holds.
    ``rebuild`` builds even when ``target`` is done (``--quant-no-cache``).
    """
    from filelock import FileLock

    if not rebuild and done(target):
        return False
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock), timeout=6 * 3600):
        if not rebuild and done(target):
            return False
        for stale in parent.glob(f".tmp-{target.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=parent))
        try:
            build(tmp)
            os.chmod(tmp, dir_mode())
            for path in tmp.iterdir():
                if path.is_file():
                    os.chmod(path, file_mode())
            if not done(tmp):
                raise RuntimeError(f"building {target} left an incomplete folder")
            if target.exists():  # incomplete leftovers, an outdated build, or a rebuild
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return True


class ArtifactCache:
    def __init__(self, root: Path, *, enabled: bool = True):
        self.root = Path(root)
        self.enabled = enabled
        self.root.mkdir(parents=True, exist_ok=True)

    def _entry(self, folder: str, name: str) -> Path:
        """``root/folder/name``, refused when ``name`` would lead out of that folder (a key is built from
        suite names: ``../`` in one must never write elsewhere)."""
        base = (self.root / folder).resolve()
        path = (base / name).resolve()
        if path.parent != base:
            raise QuantConfigError(
                f"cache entry {name!r} would leave the cache folder {base}; names must not hold '/' or '..'"
            )
        return path

    def _lock_path(self, kind: str, key: str) -> Path:
        return self._entry("locks", f"{kind}-{key}.lock")

    @contextlib.contextmanager
    def _lock(self, kind: str, key: str) -> Iterator[None]:
        from filelock import FileLock

        path = self._lock_path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path), timeout=6 * 3600):
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
        return self._entry("artifacts", key)

    def lookup(self, key: str) -> Path | None:
        """The complete artifact folder for ``key``, or None (always None with the cache disabled)."""
        final = self.artifact_dir(key)
        return final if self.enabled and (final / COMPLETE).exists() else None

    def artifact(self, key: str, build: Callable[[Path], None], *, label: str = "") -> Path:
        """The folder for ``key``, built by ``build(tmp_dir)`` if absent (:func:`build_folder_once`)."""
        final = self.artifact_dir(key)
        start = time.perf_counter()

        def complete(folder: Path) -> None:
            build(folder)
            (folder / COMPLETE).write_text(json.dumps({"label": label, "created": time.time()}))

        built = build_folder_once(
            final,
            complete,
            done=lambda folder: (folder / COMPLETE).exists(),
            lock=self._lock_path("artifact", key),
            rebuild=not self.enabled,
        )
        if built:
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
        path = self._entry("results", f"{key}.json")
        return self._computed_once(
            "result", key, path, compute, _read_result, TaskResult.to_json, reuse=self.enabled, label=label
        )

    def run(self, key: str, compute: Callable[[], dict[str, Any]], *, label: str = "") -> dict[str, Any]:
        """An evaluation run's JSON record for ``key`` (one lm-eval run shared by the tasks reading its
        metrics), computed once.

        Read even when the cache is disabled: a session without cache gets a fresh folder, so this
        only shares a run between the tasks of that session."""
        path = self._entry("runs", f"{key}.json")
        return self._computed_once(
            "run", key, path, compute, _read_json, lambda record: record, reuse=True, label=label
        )

    def measurement(
        self, key: str, compute: Callable[[], Any], load: Callable[[dict[str, Any]], Any], *, label: str = ""
    ) -> Any:
        """An efficiency measurement for ``key`` (any object with ``to_json()``, read back with
        ``load``), computed once like an evaluation result; logged as kind ``"efficiency"``."""
        path = self._entry("results", f"{key}.json")
        return self._computed_once(
            "efficiency",
            key,
            path,
            compute,
            lambda p: _read_result(p, load),
            lambda m: m.to_json(),
            reuse=self.enabled,
            label=label,
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
