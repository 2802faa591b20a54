"""export_datasets: a task's splits written in the mirror layout, then read back by offline_datasets.

The source is a local dataset made here (JSON files lm-eval loads with ``load_dataset(<folder>)``),
so the test needs no hub: the export reads it as lm-eval normally would, the re-read goes through
the mirror, and rows and fingerprints must agree.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("datasets")

from pytest_quant.backends.datasets import (  # noqa: E402
    EXPORT_MANIFEST,
    export_datasets,
    offline_datasets,
    split_fingerprint,
)
from pytest_quant.errors import QuantConfigError  # noqa: E402

TEST_ROWS = [{"question": f"What is {i} + {i}?", "choices": [str(2 * i), str(2 * i + 1)], "label": 0} for i in range(7)]
TRAIN_ROWS = [{"question": f"What is {i} + 1?", "choices": [str(i + 1), str(i)], "label": 0} for i in range(3)]

TASK_YAML = """\
task: pq_local_sums
dataset_path: {source}
output_type: multiple_choice
training_split: train
test_split: test
fewshot_split: train
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
metadata:
  version: 1.0
"""


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def local_task(tmp_path):
    """A folder of JSON splits and an lm-eval task YAML whose dataset_path is that folder."""
    source = tmp_path / "source"
    source.mkdir()
    write_jsonl(source / "test.jsonl", TEST_ROWS)
    write_jsonl(source / "train.jsonl", TRAIN_ROWS)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "pq_local_sums.yaml").write_text(TASK_YAML.format(source=source), encoding="utf-8")
    return source, tasks


def test_export_then_read_back(local_task, tmp_path):
    import datasets
    from lm_eval.tasks import TaskManager

    source, tasks = local_task
    dest = tmp_path / "mirror"
    manifest = export_datasets(["pq_local_sums"], dest, include_path=tasks)

    # The mirror layout: <dataset_path with its anchor dropped>/none/<split>/, saved with save_to_disk.
    folder = dest.joinpath(*source.parts[1:], "none")
    assert sorted(p.name for p in folder.iterdir()) == ["test", "train"]
    assert not [p for p in folder.parent.rglob(".*")]  # no temporary folders left
    test_split = datasets.load_from_disk(str(folder / "test"))
    assert test_split.to_list() == TEST_ROWS

    on_disk = json.loads((dest / EXPORT_MANIFEST).read_text())
    assert on_disk == manifest
    assert (on_disk["format"], on_disk["version"]) == ("pytest-quant-datasets", 1)
    entry = on_disk["tasks"]["pq_local_sums"]
    assert (entry["dataset_path"], entry["dataset_name"]) == (str(source), None)
    assert (entry["split"], entry["fewshot_split"]) == ("test", "train")
    assert {s: v["rows"] for s, v in entry["splits"].items()} == {"test": 7, "train": 3}
    assert entry["splits"]["test"]["folder"] == (folder / "test").relative_to(dest).as_posix()

    # Read back through the mirror: lm-eval builds the task from DEST, the source out of reach.
    for p in source.iterdir():
        p.unlink()
    source.rmdir()
    manager = TaskManager(include_path=str(tasks), include_defaults=False)
    with offline_datasets(dest) as record:
        task = manager.load(["pq_local_sums"])["tasks"]["pq_local_sums"]
    info = record.tasks["pq_local_sums"]
    assert (info.split, info.num_docs, info.fewshot_split, info.matched_as) == ("test", 7, "train", "exact")
    assert info.fingerprint == entry["splits"]["test"]["fingerprint"]
    assert info.fingerprint == split_fingerprint(datasets.Dataset.from_list(TEST_ROWS))
    assert [dict(d) for d in task.eval_docs] == TEST_ROWS
    assert task.doc_to_text(task.eval_docs[1]) == "Question: What is 1 + 1?\nAnswer:"
    assert info.available


def test_export_again_replaces_and_merges(local_task, tmp_path):
    source, tasks = local_task
    dest = tmp_path / "mirror"
    first = export_datasets(["pq_local_sums"], dest, include_path=tasks)
    write_jsonl(source / "test.jsonl", TEST_ROWS[:4])
    (dest / EXPORT_MANIFEST).write_text(
        json.dumps({**first, "tasks": {**first["tasks"], "other": {"kept": True}}}), encoding="utf-8"
    )
    second = export_datasets(["pq_local_sums"], dest, include_path=tasks)
    assert second["tasks"]["pq_local_sums"]["splits"]["test"]["rows"] == 4
    assert second["tasks"]["other"] == {"kept": True}
    folder = dest.joinpath(*source.parts[1:], "none")
    assert sorted(p.name for p in folder.iterdir()) == ["test", "train"]


def test_export_errors(local_task, tmp_path):
    _, tasks = local_task
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(QuantConfigError, match="is not a folder"):
        export_datasets(["pq_local_sums"], not_a_folder, include_path=tasks)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / EXPORT_MANIFEST).write_text(json.dumps({"format": "something-else", "version": 9}))
    with pytest.raises(QuantConfigError, match="expected version 1"):
        export_datasets(["pq_local_sums"], bad, include_path=tasks)


def test_tasks_with_their_own_loader_are_skipped(tmp_path):
    """The project's pq_arith brings its own loader (custom_dataset): a mirror cannot serve it."""
    from pathlib import Path

    tasks = Path(__file__).parent / "data" / "tasks"
    manifest = export_datasets(["pq_arith"], tmp_path / "m", include_path=tasks)
    assert "pq_arith" not in manifest["tasks"]
    assert "its own loader" in manifest["skipped"]["pq_arith"]
