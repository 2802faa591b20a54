"""What the session asks of a backend: the quantizer and evaluator protocols.

Every method the layers above call is declared here (pytest-xdist's ``scheduler/protocol.py``
style); one implementation per module, found by name through :mod:`pytest_quant.backends`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from pytest_quant.config import EfficiencyConfig, EvaluationConfig, SchemeConfig, TaskConfig
from pytest_quant.results import RuntimeMeasurement, TaskResult

# The record a quantizer writes beside the weights it produced: scheme, backend, layers.
SCHEME_FILE = "pytest_quant_scheme.json"


def write_scheme_record(out_dir: Path, record: dict[str, Any]) -> None:
    """Write what a quantizer did (:data:`SCHEME_FILE`) into the folder it produced."""
    (Path(out_dir) / SCHEME_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_scheme_record(model_dir: Path) -> dict[str, Any]:
    """The quantizer's record of a folder it produced; ``{}`` for any other folder."""
    path = Path(model_dir) / SCHEME_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


class Quantizer(Protocol):
    """Produces the model folder a scheme evaluates.

    ``existing`` answers first: a folder to use as is (a ``checkpoint:`` scheme), or None when
    ``quantize`` must build one. ``quantize`` writes an HF-loadable folder into ``out_dir`` (a
    fresh, empty temporary folder the cache renames into place on success) from the unquantized
    ``model_dir``; it must be deterministic for a given scheme (seeded calibration, no shuffling).
    """

    name: str

    def existing(self, scheme: SchemeConfig, *, source: str) -> Path | None: ...

    def quantize(self, model_dir: Path, scheme: SchemeConfig, out_dir: Path) -> None: ...


class Evaluator(Protocol):
    """Scores a model folder on a task, and measures its speed.

    ``run`` evaluates one task and returns a JSON record of everything its metrics need (one
    lm-eval run serves suite tasks that read different metrics of it: LAMBADA's accuracy and
    perplexity); the session caches the record, and ``result_from_run`` turns it into the
    TaskResult of one metric. ``evaluate`` is the two in one call.

    ``environment_versions``: library versions of an environment of the evaluator's own (the
    vLLM venv), which the session's ``library_versions`` cannot see; ``{}`` for one that runs
    in this process. They enter the result-cache key.

    ``measure_runtime``: prefill/decode speed (and peak memory where the backend measures it)
    of batch-1 greedy generation, as ``settings`` say; ``measures_peak_memory`` says whether its
    measurements carry a peak memory (vLLM reserves its share of the device up front: no).
    """

    name: str
    measures_peak_memory: bool

    def run(
        self, model_dir: Path, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0
    ) -> dict[str, Any]: ...

    def result_from_run(self, run: dict[str, Any], task: TaskConfig) -> TaskResult: ...

    def evaluate(
        self, model_dir: Path, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0
    ) -> TaskResult: ...

    def environment_versions(self, evaluation: EvaluationConfig) -> dict[str, str]: ...

    def measure_runtime(
        self, model_dir: Path, evaluation: EvaluationConfig, settings: EfficiencyConfig
    ) -> RuntimeMeasurement: ...
