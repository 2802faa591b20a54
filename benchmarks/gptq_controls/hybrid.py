"""Layer-swap control: a dense fp32 model whose Linear weights come from a GPTQ checkpoint, except
the modules matching --swap, which get RTN weights (or the other way round with --into rtn).

  . benchmarks/gptq_controls/env.sh
  $PY benchmarks/gptq_controls/hybrid.py --gptq DIR --swap 'layers\\.(11|28|29)\\.mlp\\.down_proj' --out OUTDIR
  $PY benchmarks/gptq_controls/activation_stats.py ...; run_control.py --method none --base OUTDIR  (evaluates it)

--into gptq (default): start from the GPTQ weights, put RTN (--bits/--group/--asym, same grid) on --swap.
--into rtn: start from RTN weights, put the GPTQ weights on --swap.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

import torch


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gptq", required=True)
    ap.add_argument("--swap", required=True, help="regex on module names")
    ap.add_argument("--into", choices=["gptq", "rtn"], default="gptq")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group", type=int, default=64)
    ap.add_argument("--asym", action="store_true")
    ap.add_argument("--base", default=None)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_quant.backends.gguf import embedded_default
    from pytest_quant.backends.models import clear_model_cache, load_causal_lm
    from pytest_quant.primitives import rtn_fake_quantize_weight

    base = Path(a.base) if a.base else embedded_default(Path(os.environ.get("GPTQ_CONTROLS", "/tmp/gptq")) / "cache")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    qm, _ = load_causal_lm(a.gptq)
    qmods = dict(qm.named_modules())
    pat = re.compile(a.swap)
    swapped = []
    with torch.no_grad():
        for n, m in model.named_modules():
            if not isinstance(m, torch.nn.Linear) or n == "lm_head":
                continue
            rtn = rtn_fake_quantize_weight(m.weight.data, a.bits, not a.asym, group_size=a.group)
            gptq = qmods[n].weight.data.float()
            use_gptq = (a.into == "gptq") != bool(pat.search(n))
            if pat.search(n):
                swapped.append(n)
            m.weight.data = (gptq if use_gptq else rtn).clone()
    del qm
    clear_model_cache()
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    (out / "hybrid.json").write_text(json.dumps(vars(a) | {"swapped": swapped}, indent=1))
    print(f"{len(swapped)} modules swapped: {swapped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
