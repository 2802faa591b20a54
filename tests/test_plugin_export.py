"""--quant-export-datasets=DIR: the selected suites' lm-eval data written as a mirror; --quant-datasets=DIR reads it."""

from __future__ import annotations

import json

import pytest

TASK_YAML = """\
task: pq_local_words
dataset_path: {source}
output_type: multiple_choice
test_split: test
doc_to_text: "Word: {{{{word}}}}\\nSame word:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

SUITE = """\
model: tiny-llama-test
schemes:
  w8-rtn: {method: rtn, weights: {bits: 8, group_size: 64}}
tasks:
  words: {task: pq_local_words, include_path: tasks, limit: 4}
  corpus: {perplexity: corpus.txt, limit: 2}
budgets:
  - {schemes: [w8-rtn], tasks: [words], max_drop: 50pp, mode: point}
  - {schemes: [w8-rtn], tasks: [corpus], max_drop: 50%, mode: point}
"""

ROWS = [{"word": w, "choices": [w, w[::-1]], "label": 0} for w in ("cat", "dog", "sun", "map", "pen", "cup")]


@pytest.fixture
def project(pytester: pytest.Pytester):
    source = pytester.path / "source"
    source.mkdir()
    (source / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    tasks = pytester.path / "tasks"
    tasks.mkdir()
    (tasks / "pq_local_words.yaml").write_text(TASK_YAML.format(source=source), encoding="utf-8")
    (pytester.path / "corpus.txt").write_text("One two three four five six seven.\n" * 50, encoding="utf-8")
    pytester.makefile(".quant.yaml", s=SUITE)
    return source


def test_bad_export_folder_is_a_usage_error(pytester: pytest.Pytester):
    (pytester.path / "a_file").write_text("x")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--quant-export-datasets=a_file")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--quant-export-datasets*'a_file' is not a folder*"])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--quant-export-datasets=a_file/sub")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'a_file/sub' is not a folder (*a_file' is a file)*"])


def test_export_is_refused_in_a_strict_release_gate(pytester: pytest.Pytester, tmp_path):
    """An export runs no test and exits 0: under --quant-strict it would turn a release gate green unseen."""
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--quant-export-datasets={tmp_path / 'mirror'}", "--quant-strict"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--quant-export-datasets only writes data and runs no test*--quant-strict*"])
    assert not (tmp_path / "mirror").exists()


@pytest.mark.slow
def test_export_then_evaluate_from_the_mirror(pytester: pytest.Pytester, project, tmp_path):
    pytest.importorskip("lm_eval")
    dest = tmp_path / "mirror"
    args = ("-p", "no:cacheprovider", f"--quant-cache-dir={tmp_path / 'c'}")
    result = pytester.runpytest_subprocess(*args, f"--quant-export-datasets={dest}")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*export: corpus is a perplexity task; it reads no lm-eval data, skipped*",
            f"*export: pq_local_words: test (6 rows) -> {project.relative_to('/')}/none/test*",
            "*2 deselected*",
        ]
    )
    manifest = json.loads((dest / "pytest-quant-datasets.json").read_text())
    written = manifest["tasks"]["pq_local_words"]["splits"]["test"]
    assert written["rows"] == 6 and (dest / written["folder"] / "state.json").is_file()
    assert not (pytester.path / "baselines").exists()  # nothing was evaluated

    # The source is gone; the mirror serves the task, and the baseline records the same rows.
    for p in project.iterdir():
        p.unlink()
    result = pytester.runpytest_subprocess(*args, f"--quant-datasets={dest}", "--quant-update-baselines", "-k", "words")
    result.assert_outcomes(passed=1, deselected=1)
    doc = json.loads((pytester.path / "baselines" / "tiny-llama-test.json").read_text())
    meta = doc["tasks"]["words"]["result"]["meta"]["datasets"]
    assert meta["source"] == str(dest)
    offline = meta["tasks"]["pq_local_words"]
    assert (offline["split"], offline["num_docs"], offline["matched_as"]) == ("test", 6, "exact")
    assert offline["fingerprint"] == written["fingerprint"]
