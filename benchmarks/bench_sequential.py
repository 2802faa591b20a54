"""Sequential against fixed-size evaluation on the demo suite's staged tasks: items, wall time, decisions.

    .venv/bin/python benchmarks/bench_sequential.py --cache-from /path/to/a/warm/demo-cache

Takes the demo suite (suites/smollm2_cpu.quant.yaml), keeps its sequential tasks and the budgets that
read them, and runs it twice under pytest (``-n 2 --dist loadgroup``):

- **sequential**: as written (stages ``first, first*growth, ..., max``; each scheme stops once the
  budgets that read it are decided);
- **fixed**: the same tasks with ``limit: max`` instead of ``sequential`` (every scheme on every item).

Each variant first records its own baseline (untimed; a sequential baseline holds every stage), then
runs timed in a fresh cache seeded (hard links) with the quantized models of ``--cache-from``, so both
times are evaluation only. Prints, per variant, wall time and items evaluated (per scheme and lm-eval
task: tasks that read the same lm-eval run share it), then every budget's decision in both variants
and the items each decided budget needed. ``--spending``, ``--first``, ``--growth``, ``--max``
override the suite's sequential settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "smollm2_cpu.quant.yaml"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_TELEMETRY": "1"}  # fmt: skip


def staged_suite(path: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The suite's sequential tasks and the budgets on them (their other tasks and efficiency budgets dropped)."""
    suite = yaml.safe_load(path.read_text())
    staged = {name: t for name, t in suite["tasks"].items() if isinstance(t, dict) and t.get("sequential")}
    if not staged:
        raise SystemExit(f"{path}: no task has 'sequential'")
    for t in staged.values():
        t["sequential"].update(overrides)
    budgets = []
    for b in suite["budgets"]:
        tasks = [t for t in (b.get("tasks") or list(suite["tasks"])) if t in staged]
        if tasks and not any(k in b for k in ("max_memory", "min_decode_speedup", "min_prefill_speedup")):
            budgets.append({**b, "tasks": tasks})
    return {**suite, "tasks": staged, "budgets": budgets}


def fixed_suite(suite: dict[str, Any]) -> dict[str, Any]:
    tasks = {}
    for name, t in suite["tasks"].items():
        seq = t["sequential"]
        t = {k: v for k, v in t.items() if k != "sequential"}
        if seq.get("max", "full") != "full":
            t["limit"] = seq["max"]
        tasks[name] = t
    return {**suite, "tasks": tasks}


def seeded_cache(src: Path | None, dest: Path, *, fresh: bool = True) -> Path:
    """A cache holding ``src``'s quantized models and nothing else (``fresh``), or kept as it is."""
    if dest.exists() and not fresh:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    if src is not None:
        for part in ("models", "artifacts"):
            if (src / part).is_dir():
                subprocess.run(["cp", "-al", str(src / part), str(dest / part)], check=True)
        if (src / "fingerprints.json").is_file():
            shutil.copy2(src / "fingerprints.json", dest / "fingerprints.json")
    return dest


def pytest_run(suite_file: Path, cache: Path, baselines: Path, workers: int, *extra: str) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(suite_file),
           f"--quant-cache-dir={cache}", f"--quant-baseline-dir={baselines}", *extra]  # fmt: skip
    if workers > 1:
        cmd += ["-n", str(workers), "--dist", "loadgroup"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, **OFFLINE}, capture_output=True, text=True)
    took = time.perf_counter() - start
    tail = [ln for ln in proc.stdout.splitlines() if ln.startswith(("release", "  sequential", "=", "FAILED", "ERROR"))]
    print("\n".join("    " + ln for ln in tail[-8:]))
    return took, proc.returncode


def items_evaluated(rows: list[dict[str, Any]], suite: dict[str, Any]) -> dict[str, int]:
    """``{"scheme @ lm-eval task": items}``: tasks reading the same lm-eval run share it."""
    run_of = {name: t.get("task", name) for name, t in suite["tasks"].items()}
    out: dict[str, int] = {}
    for r in rows:
        seq, run = r.get("sequential"), run_of.get(str(r.get("task")))
        if run is None:
            continue
        if seq:
            for scheme, n in seq["evaluated"].items():
                out[f"{scheme} @ {run}"] = max(out.get(f"{scheme} @ {run}", 0), n)
        else:
            for scheme in str(r["scheme"]).split(" vs "):
                if scheme in suite["schemes"]:
                    out[f"{scheme} @ {run}"] = max(out.get(f"{scheme} @ {run}", 0), int(r["n"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", type=Path, default=SUITE)
    ap.add_argument("--cache-from", type=Path, help="a cache holding the suite's quantized models (hard-linked)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder, removed)")
    ap.add_argument("--spending", choices=["bonferroni", "obrien-fleming"])
    ap.add_argument("--first", type=int)
    ap.add_argument("--growth", type=float)
    ap.add_argument("--max", type=int)
    ap.add_argument("--futility", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--variants", nargs="+", default=["sequential", "fixed"],
                    help="the variants to run; the others' figures are read from --out")  # fmt: skip
    args = ap.parse_args()
    overrides = {k: getattr(args, k) for k in ("spending", "first", "growth", "max", "futility") if getattr(args, k) is not None}
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-sequential-"))
    out.mkdir(parents=True, exist_ok=True)
    one, five, _ = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {one:.2f} {five:.2f}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; workers {args.workers}")  # fmt: skip
    staged = staged_suite(args.suite, overrides)
    variants = {"sequential": staged, "fixed": fixed_suite(staged)}
    results: dict[str, dict[str, Any]] = {}
    for name, suite in variants.items():
        folder = out / name
        if name not in args.variants:  # an earlier run's figures
            results[name] = json.loads((folder / "summary.json").read_text())
            print(f"{name}: read from {folder / 'summary.json'}")
            continue
        folder.mkdir(exist_ok=True)
        suite_file = folder / f"{name}.quant.yaml"
        suite_file.write_text(yaml.safe_dump(suite, sort_keys=False))
        print(f"{name}: tasks {json.dumps(suite['tasks'])}")
        print("  recording its baseline (untimed) ...")
        pytest_run(suite_file, seeded_cache(args.cache_from, folder / "cache-record", fresh=False), folder / "baselines",
                   args.workers, "--quant-update-baselines")  # fmt: skip
        report = folder / "report.json"
        print("  timed run (fresh cache, quantized models seeded) ...")
        took, rc = pytest_run(suite_file, seeded_cache(args.cache_from, folder / "cache"), folder / "baselines",
                              args.workers, f"--quant-report={report}")  # fmt: skip
        rows = json.loads(report.read_text())["items"]
        items = items_evaluated(rows, suite)
        results[name] = {"seconds": took, "rc": rc, "rows": {r["item"].split("::")[-1]: r for r in rows},
                         "items": items}  # fmt: skip
        (folder / "summary.json").write_text(json.dumps(results[name]))
        print(f"  {name}: {took:.1f} s wall, {sum(items.values())} items evaluated (pytest exit {rc})")
        for key, n in sorted(items.items()):
            print(f"    {key}: {n}")
    seq, fix = results["sequential"], results["fixed"]
    print("\nbudget decisions (evidence, verdict, items it was judged on):")
    same = decided = items_seq = items_fix = 0
    for item, r in fix["rows"].items():
        s = seq["rows"].get(item, {})
        agree = (s.get("evidence"), s.get("verdict")) == (r.get("evidence"), r.get("verdict"))
        same += agree
        if r.get("evidence") in ("within", "violated") and agree:
            decided += 1
            items_seq += int(s["n"])
            items_fix += int(r["n"])
        print(f"  {item}: fixed {r.get('evidence')}/{r.get('verdict')} n={r.get('n')}; sequential "
              f"{s.get('evidence')}/{s.get('verdict')} n={s.get('n')}{'' if agree else '   <- differs'}")  # fmt: skip
    print(f"\nsame decision: {same} of {len(fix['rows'])} budgets")
    if decided:
        print(f"budgets decided alike: {decided}; items they were judged on: sequential {items_seq}, fixed "
              f"{items_fix} ({items_fix / items_seq:.2f}x fewer)")  # fmt: skip
    total_s, total_f = sum(seq["items"].values()), sum(fix["items"].values())
    print(f"items evaluated in all: sequential {total_s}, fixed {total_f} ({total_f / max(total_s, 1):.2f}x fewer); "
          f"wall: sequential {seq['seconds']:.1f} s, fixed {fix['seconds']:.1f} s")  # fmt: skip
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
