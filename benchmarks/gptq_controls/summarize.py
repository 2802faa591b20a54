"""Table of every result in /tmp/gptq/results/*.json, with paired-bootstrap 95% intervals.

  . benchmarks/gptq_controls/env.sh; $PY benchmarks/gptq_controls/summarize.py [REF_NAME]

For each run: quantize seconds, LAMBADA perplexity (last word, 100 items), accuracy, and the ratio
of its perplexity to REF's (default rtn_g64_sym) with a 95% paired bootstrap interval over the
100 items (10,000 resamples, seed 0): ppl ratio = exp(mean(nll_run - nll_ref)).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    ref_name = sys.argv[1] if len(sys.argv) > 1 else "rtn_g64_sym"
    runs = {}
    for p in sorted((Path(os.environ.get("GPTQ_CONTROLS", "/tmp/gptq")) / "results").glob("*.json")):
        if p.name.startswith("stats_"):
            continue
        r = json.loads(p.read_text())
        if "ppl" in r:
            runs[r["name"]] = r
    ref = np.array(runs[ref_name]["per_item_nll"])
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(ref), size=(10000, len(ref)))
    print(f"{'run':34s} {'quant s':>8s} {'ppl':>9s} {'acc':>5s} {'x ' + ref_name:>14s} {'95% CI':>16s}")
    for name, r in runs.items():
        nll = np.array(r["per_item_nll"])
        d = nll - ref
        boot = np.exp(d[idx].mean(1))
        lo, hi = np.percentile(boot, [2.5, 97.5])
        q = f"{r['quantize_s']:.1f}" if r.get("quantize_s") else "-"
        print(f"{name:34s} {q:>8s} {r['ppl']:9.2f} {r['acc']:5.2f} {np.exp(d.mean()):14.3f} [{lo:6.3f}, {hi:6.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def pairs(pairs_list):
    """Paired comparisons (run, reference): perplexity ratio and 95% bootstrap interval."""
    runs = {}
    for p in sorted((Path(os.environ.get("GPTQ_CONTROLS", "/tmp/gptq")) / "results").glob("*.json")):
        r = json.loads(p.read_text())
        if "ppl" in r:
            runs[r["name"]] = r
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 100, size=(10000, 100))
    for run, ref in pairs_list:
        if run not in runs or ref not in runs:
            continue
        d = np.array(runs[run]["per_item_nll"]) - np.array(runs[ref]["per_item_nll"])
        lo, hi = np.percentile(np.exp(d[idx].mean(1)), [2.5, 97.5])
        print(f"{run:34s} / {ref:22s} = {np.exp(d.mean()):6.3f} [{lo:.3f}, {hi:.3f}]")
