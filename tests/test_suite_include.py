"""`include:` in a suite: task sets from other YAML files, merged field by field under the suite's own
settings; every error names the file, the line and the field where it was written."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pytest_quant.errors import QuantConfigError
from pytest_quant.suite import expand_checks, load_suite, resolve_paths

TASKS = textwrap.dedent(
    """\
    # a shared task set
    tasks:
      arc:  {task: arc_challenge, num_fewshot: 25, metric: acc_norm, apply_chat_template: true}
      hs:   {task: hellaswag, num_fewshot: 10}
      ppl:  {perplexity: corpus.txt}
    """
)
SUITE = textwrap.dedent(
    """\
    model: tiny-llama-test
    include: [sets/lb.yaml]
    schemes:
      w8: {method: rtn, weights: {bits: 8}}
    tasks:
      arc: {num_fewshot: 0, limit: 8}
      own: {task: piqa, limit: 4}
    budgets:
      - {schemes: [w8], tasks: [arc, hs, own], max_drop: 5pp}
    """
)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "s.quant.yaml"


def error(path: Path) -> str:
    with pytest.raises(QuantConfigError) as info:
        load_suite(path)
    return str(info.value)


def test_included_tasks_merge_under_the_suites_own_fields(tmp_path: Path):
    path = write(tmp_path, {"sets/lb.yaml": TASKS, "s.quant.yaml": SUITE})
    suite, lines = load_suite(path)
    assert list(suite.tasks) == ["arc", "hs", "ppl", "own"]  # the include's first, in its order
    arc = suite.tasks["arc"]
    # the suite's fields win; the rest is the task set's
    assert (arc.lm_eval_task, arc.num_fewshot, arc.limit, arc.metric) == ("arc_challenge", 0, 8, "acc_norm")
    assert arc.apply_chat_template and suite.tasks["hs"].num_fewshot == 10 and suite.tasks["own"].limit == 4
    # a file an included task names is relative to the included file, not to the suite
    assert suite.tasks["ppl"].perplexity == str((tmp_path / "sets" / "corpus.txt").resolve())
    assert resolve_paths(suite, tmp_path).tasks["ppl"].perplexity == suite.tasks["ppl"].perplexity
    names = [c.name for c in expand_checks(suite, lines)]
    assert names == ["drop<=5pp[w8-arc]", "drop<=5pp[w8-hs]", "drop<=5pp[w8-own]"]
    assert expand_checks(suite, lines)[0].line == 9  # lines are the suite's own
    # one path instead of a list, and an absolute path, work the same
    alone = write(tmp_path, {"s.quant.yaml": SUITE.replace("[sets/lb.yaml]", str(tmp_path / "sets" / "lb.yaml"))})
    assert load_suite(alone)[0] == suite


@pytest.mark.parametrize(
    ("files", "where", "words"),
    [
        # in the included file: its own name, line and field
        (
            {"sets/lb.yaml": TASKS.replace("num_fewshot: 10", "num_fewshot: 10, limt: 5")},
            "sets/lb.yaml:4: tasks.hs.limt",
            "unknown key 'limt'",
        ),
        (
            {"sets/lb.yaml": TASKS.replace("num_fewshot: 10", "num_fewshot: -1")},
            "sets/lb.yaml:4: tasks.hs.num_fewshot",
            "greater than or equal to 0",
        ),
        (
            {"sets/lb.yaml": TASKS + "budgets: []\n"},
            "sets/lb.yaml:6: budgets",
            "holds tasks only; unknown key 'budgets'",
        ),
        ({"sets/lb.yaml": TASKS + "include: [more.yaml]\n"}, "sets/lb.yaml:6: include", "one level"),
        ({"sets/lb.yaml": "tasks: [arc]\n"}, "sets/lb.yaml:1", "a mapping with 'tasks:'"),
        ({"sets/lb.yaml": "tasks: {arc: {limit: 1}\n"}, "sets/lb.yaml:2", "not valid YAML"),
        ({"sets/lb.yaml": TASKS.replace("hs: ", "arc: ")}, "sets/lb.yaml:4: tasks.arc", "duplicate key 'arc'"),
        # in the suite: its own name, line and field, also for a field it overrides (which no longer
        # reads the included value: arc's num_fewshot -1 there is replaced by the suite's 0)
        (
            {
                "sets/lb.yaml": TASKS.replace("num_fewshot: 25", "num_fewshot: -1"),
                "s.quant.yaml": SUITE.replace("limit: 8", "limit: 0"),
            },
            "s.quant.yaml:6: tasks.arc.limit",
            "greater than or equal to 1",
        ),
        (
            {"s.quant.yaml": SUITE.replace("[sets/lb.yaml]", "[sets/nope.yaml]")},
            "s.quant.yaml:2: include[0]",
            "cannot read included file",
        ),
        (
            {"s.quant.yaml": SUITE.replace("[sets/lb.yaml]", "[]")},
            "s.quant.yaml:2: include",
            "a path or a list of paths",
        ),
        (
            {"s.quant.yaml": SUITE.replace("arc: {num_fewshot: 0, limit: 8}", "arc: arc_easy")},
            "s.quant.yaml:6: tasks.arc",
            "overrides its fields with a mapping",
        ),
        (
            {"s.quant.yaml": SUITE.replace("tasks: [arc, hs, own]", "tasks: [arc, hx]")},
            "s.quant.yaml:9: budgets[0].tasks",
            "unknown task 'hx'",
        ),
    ],
)
def test_errors_name_the_file_line_and_field_that_wrote_them(
    tmp_path: Path, files: dict[str, str], where: str, words: str
):
    path = write(tmp_path, {"sets/lb.yaml": TASKS, "s.quant.yaml": SUITE, **files})
    message = error(path)
    where = where.replace("sets/lb.yaml", str(tmp_path / "sets" / "lb.yaml")).replace("s.quant.yaml", str(path), 1)
    assert message.startswith(where), message
    assert words in message, message


def test_a_task_two_included_files_define_is_an_error(tmp_path: Path):
    path = write(
        tmp_path,
        {
            "sets/lb.yaml": TASKS,
            "sets/more.yaml": "tasks:\n  piqa: {}\n  hs: {limit: 3}\n",
            "s.quant.yaml": SUITE.replace("[sets/lb.yaml]", "[sets/lb.yaml, sets/more.yaml]"),
        },
    )
    message = error(path)
    assert message.startswith(f"{tmp_path / 'sets' / 'more.yaml'}:3: tasks.hs"), message
    assert f"also defined in {tmp_path / 'sets' / 'lb.yaml'}:4" in message
