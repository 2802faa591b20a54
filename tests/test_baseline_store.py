"""The baseline store: strict reads, fresh-or-fail, atomic locked writes."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from pytest_quant.baseline import BaselineStore, Expectation, model_slug
from pytest_quant.errors import BaselineError, PytestQuantWarning
from pytest_quant.results import TaskResult

CFG = {"limit": 50, "num_fewshot": 0, "task": None, "backend": "hf"}


def result(value=0.5, n=4, fingerprint="items-v1"):
    scores = [1.0] * int(value * n) + [0.0] * (n - int(value * n))
    return TaskResult("arc_easy", "acc", sum(scores) / n, True, "mean", tuple(str(i) for i in range(n)),
                      tuple(scores), fingerprint=fingerprint)


def expect(**kw):
    cfg = {**CFG, **kw.pop("task_config", {})}
    return Expectation(task_config=cfg, model_fingerprint=kw.pop("fp", "model-a"), versions=kw.pop("versions", {"torch": "2.13.0"}))


@pytest.fixture
def store(tmp_path):
    s = BaselineStore(tmp_path / "baselines", update_hint="pytest --quant-update-baselines")
    return s


def record(store, **kw):
    return store.write("org/Model-1", kw.get("fp", "model-a"), "arc_easy", kw.get("res", result()), {**CFG, **kw.get("cfg", {})},
                        {"versions": kw.get("versions", {"torch": "2.13.0"})})


def test_slug():
    assert model_slug("meta-llama/Llama-3.1-8B") == "meta-llama--Llama-3.1-8B"
    assert model_slug("../x y") == "--x_y"


def test_missing_file_and_task_give_the_command(store):
    with pytest.raises(BaselineError, match="does not exist(.|\n)*--quant-update-baselines"):
        store.load("org/Model-1", "arc_easy")
    record(store)
    with pytest.raises(BaselineError, match="no baseline for task 'piqa'(.|\n)*--quant-update-baselines"):
        store.load("org/Model-1", "piqa")


def test_round_trip_and_other_tasks_kept(store):
    path = record(store)
    store.write("org/Model-1", "model-a", "piqa", result(0.75), CFG, {})
    got = store.load("org/Model-1", "arc_easy", expect())
    assert got.result == result()
    assert set(json.loads(path.read_text())["tasks"]) == {"arc_easy", "piqa"}
    assert not list(path.parent.glob(".*.tmp"))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "edit_score", "nan", "wrong_format"])
def test_corrupt_or_hand_edited_fails_loudly(store, damage):
    path = record(store)
    text = path.read_text()
    if damage == "truncate":
        text = text[: len(text) // 2]
    elif damage == "garbage":
        text = "\x00\x01 not json"
    elif damage == "edit_score":
        doc = json.loads(text)
        doc["tasks"]["arc_easy"]["result"]["value"] = 0.99
        text = json.dumps(doc)
    elif damage == "nan":
        text = text.replace('"value": 0.5', '"value": NaN')
    elif damage == "wrong_format":
        text = json.dumps({"format": "something-else"})
    path.write_text(text)
    with pytest.raises(BaselineError) as exc:
        store.load("org/Model-1", "arc_easy", expect())
    assert str(path) in str(exc.value)


def test_stale_baseline_shows_a_diff(store):
    record(store)
    with pytest.raises(BaselineError) as exc:
        store.load("org/Model-1", "arc_easy", expect(task_config={"limit": 200}, fp="model-b"))
    msg = str(exc.value)
    assert "stale" in msg and "task.limit: 50 (baseline) != 200 (suite)" in msg and "model fingerprint" in msg


def test_library_drift_only_warns(store):
    record(store)
    with pytest.warns(PytestQuantWarning, match="torch 2.13.0 -> 2.14.0"):
        store.load("org/Model-1", "arc_easy", expect(versions={"torch": "2.14.0"}))


def test_record_refuses_empty_or_nan(store):
    empty = TaskResult("arc_easy", "acc", 0.0, True, "mean", (), ())
    with pytest.raises(BaselineError, match="no items"):
        record(store, res=empty)
    nan = TaskResult("arc_easy", "acc", float("nan"), True, "mean", ("0",), (float("nan"),))
    with pytest.raises(BaselineError, match="non-finite"):
        record(store, res=nan)
    assert not store.path_for("org/Model-1").exists()


def test_update_replaces_a_corrupt_file(store):
    path = record(store)
    path.write_text("{broken")
    record(store)
    assert store.load("org/Model-1", "arc_easy", expect()).result == result()


def _writer(root, task, k):
    s = BaselineStore(root)
    for i in range(k):
        s.write("m", "fp", f"{task}", result(0.5, n=8), CFG, {"i": i})


def test_concurrent_writers_never_corrupt(tmp_path):
    root = tmp_path / "b"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(root, f"t{j}", 10)) for j in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    s = BaselineStore(root)
    assert sorted(json.loads(s.path_for("m").read_text())["tasks"]) == ["t0", "t1", "t2", "t3"]
    for j in range(4):
        s.load("m", f"t{j}")


def test_kill_during_write_leaves_old_file(tmp_path):
    """SIGKILL a writer mid-loop: the file on disk is always a complete, verifiable baseline."""
    root = tmp_path / "b"
    BaselineStore(root).write("m", "fp", "t", result(0.5, n=2000), CFG, {})
    script = textwrap.dedent(f"""
        from pytest_quant.baseline import BaselineStore
        from pytest_quant.results import TaskResult
        r = TaskResult("t", "acc", 0.5, True, "mean", tuple(str(i) for i in range(200000)), (1.0, 0.0) * 100000)
        s = BaselineStore({str(root)!r})
        print("ready", flush=True)
        while True:
            s.write("m", "fp", "t", r, {{}}, {{}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    import time
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    entry = BaselineStore(root).load("m", "t")
    assert entry.result.n in (2000, 200000)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_get_the_permissions_open_would_give(tmp_path, umask):
    from pytest_quant.atomic import atomic_write_text

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "b.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o666 & ~umask
