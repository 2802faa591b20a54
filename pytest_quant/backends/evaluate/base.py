"""The evaluator protocol: a model folder and a task in, a TaskResult out."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pytest_quant.config import EvaluationConfig, TaskConfig
from pytest_quant.results import TaskResult


class Evaluator(Protocol):
    """Optional: ``environment_versions(evaluation) -> dict[str, str]``, for an evaluator that runs in
    an environment of its own (``vllm``): that environment's library versions, which the session
    adds to the result-cache key (its own ``library_versions`` sees only this process)."""

    name: str

    def evaluate(self, model_dir: Path, task: TaskConfig, evaluation: EvaluationConfig, *, seed: int = 0) -> TaskResult: ...
