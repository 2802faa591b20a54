"""What the demo suite's small calibration sets cost in quality, and what they save in time.

    .venv/bin/python benchmarks/bench_calibration.py                    # GPTQ and AWQ, W4A16 g64
    .venv/bin/python benchmarks/bench_calibration.py --methods gptq --sizes 16x256 32x256

For each calibrated 4-bit scheme of suites/smollm2_cpu.quant.yaml and each calibration size, it
quantizes SmolLM2-135M-Instruct (a fresh cache per size, so the quantization really runs) and
evaluates the perplexity tier of the suite (LAMBADA, the suite's limit) on the result. Prints
seconds to quantize, the perplexity, and its ratio to the unquantized model's (the committed
baseline) and to RTN 4-bit's (no calibration at all). Timings are for the torch thread count
printed (a pytest-xdist worker of `make demo` gets one of the two cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "smollm2_cpu.quant.yaml"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=["gptq", "awq"])
    ap.add_argument("--sizes", nargs="+", default=None, help="SAMPLESxSEQ_LEN, e.g. 16x256 (default: a ladder per method)")
    ap.add_argument("--task", default="lambada_ppl", help="suite task to evaluate (default: the perplexity tier)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: as one xdist worker of make demo)")
    args = ap.parse_args(argv)
    os.environ.update(OFFLINE)

    import torch

    torch.set_num_threads(args.threads)
    from pytest_quant import artifacts
    from pytest_quant.baseline import BaselineStore
    from pytest_quant.evaluation import evaluate
    from pytest_quant.session import Options, QuantSession
    from pytest_quant.suite import load_suite, resolve_paths

    suite = resolve_paths(load_suite(SUITE)[0], SUITE.parent)
    task = suite.tasks[args.task]
    base = BaselineStore(ROOT / "baselines").load(suite.model.name, task.name).result.value
    work = Path(tempfile.mkdtemp(prefix="bench-calibration-"))
    shared = work / "shared"  # the converted model and RTN, built once
    session = QuantSession(Options(baseline_dir=ROOT / "baselines", cache_dir=shared))
    rtn = evaluate(session, suite.model, suite.schemes["w4a16-rtn"], task, suite.evaluation, seed=suite.seed).value
    print(f"model {suite.model.name}, task {task.name} ({task.lm_eval_task}, limit {task.limit}), torch threads {args.threads}, "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"baseline {base:.3f}   w4a16-rtn {rtn:.3f} ({rtn / base:.3f}x)")
    ladders = {"gptq": ["8x256", "16x256", "32x256", "64x256"], "awq": ["8x128", "16x128", "32x128", "32x256"]}
    print(f"{'scheme':12s} {'calibration':>12s} {'quantize s':>11s} {task.name:>12s} {'x baseline':>11s} {'x rtn':>7s}")
    for method in args.methods:
        name = f"w4a16-{method}"
        for size in args.sizes or ladders[method]:
            samples, seq_len = (int(x) for x in size.lower().split("x"))
            scheme = suite.schemes[name].model_copy(
                update={"calibration": suite.schemes[name].calibration.model_copy(update={"samples": samples, "seq_len": seq_len})}
            )
            cache = work / f"{method}-{size}"
            cache.mkdir()
            (cache / "models").symlink_to(shared / "models")
            if (shared / "fingerprints.json").exists():
                shutil.copy(shared / "fingerprints.json", cache / "fingerprints.json")
            sized = QuantSession(Options(baseline_dir=ROOT / "baselines", cache_dir=cache))
            start = time.perf_counter()
            artifacts.artifact(sized, suite.model, scheme)
            seconds = time.perf_counter() - start
            value = evaluate(sized, suite.model, scheme, task, suite.evaluation, seed=suite.seed).value
            print(f"{name:12s} {size:>12s} {seconds:11.1f} {value:12.3f} {value / base:11.3f} {value / rtn:7.3f}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
