"""Control 5 (off-grid base) and the Q4_1-grid check.

  . benchmarks/gptq_controls/env.sh; $PY benchmarks/gptq_controls/perturb_base.py --amp 0.5 --out /tmp/gptq/cache/models/offgrid-0.5

1. Checks that every decoder Linear weight of the converted model sits on Q4_1's grid: in each
   run of 32 consecutive in-features of a row, at most 16 distinct values, equal to
   min + k*d with d = (max-min)/15, k integer (reports the worst residual).
2. Writes a copy of the model in which each such weight gets uniform noise of +-amp*d (d = that
   group's Q4_1 step; seed 0), so the weights no longer sit on any 4-bit grid. The embedding /
   tied lm_head and the norms are left as they are (they are not quantized by any scheme here).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--amp", type=float, default=0.5, help="noise half-width in units of the group's Q4_1 step")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_quant.backends.gguf import embedded_default

    base = embedded_default(Path(os.environ.get("GPTQ_CONTROLS", "/tmp/gptq")) / "cache")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    g = torch.Generator().manual_seed(a.seed)
    report = {}
    worst_resid, max_distinct = 0.0, 0
    with torch.no_grad():
        for n, m in model.named_modules():
            if not isinstance(m, torch.nn.Linear) or n == "lm_head":
                continue
            W = m.weight.data
            G = W.reshape(W.shape[0], -1, 32)
            lo, hi = G.amin(-1, keepdim=True), G.amax(-1, keepdim=True)
            d = (hi - lo) / 15
            k = (G - lo) / d.clamp_min(1e-30)
            worst_resid = max(worst_resid, float(((k - k.round()).abs()).amax()))
            distinct = max(len(torch.unique(row)) for row in G[:8].reshape(-1, 32))
            max_distinct = max(max_distinct, distinct)
            noise = (torch.rand(G.shape, generator=g) * 2 - 1) * a.amp * d
            m.weight.data = (G + noise).reshape(W.shape)
            report[n] = {"mean_step": float(d.mean()), "max_k_residual": float(((k - k.round()).abs()).amax())}
    print(f"Q4_1 grid check: worst |k - round(k)| = {worst_resid:.2e} (in steps), max distinct values per group of 32 "
          f"(first 8 rows of each layer) = {max_distinct}")
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    (out / "perturbation.json").write_text(json.dumps({"amp": a.amp, "seed": a.seed, "source": str(base),
                                                      "worst_k_residual": worst_resid, "max_distinct": max_distinct,
                                                      "layers": report}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
