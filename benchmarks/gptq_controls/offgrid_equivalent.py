"""Control 5b: a FUNCTION-PRESERVING off-grid base (same outputs as the Q4_1-derived model, weights
no longer on any 4-bit grid), so RTN vs GPTQ can be compared without degrading the base.

  . benchmarks/gptq_controls/env.sh; $PY benchmarks/gptq_controls/offgrid_equivalent.py --out /tmp/gptq/cache/models/offgrid-equiv

Per decoder layer (exact algebraic identities of the Llama block):
  - input_layernorm weight g1 folded into the columns of q/k/v_proj (W <- W diag(g1)), norm weight := 1
  - post_attention_layernorm weight g2 folded into the columns of gate/up_proj, norm weight := 1
  - random a > 0 per intermediate channel (log-uniform in [1/1.5, 1.5]): up_proj rows * a,
    down_proj columns / a  (silu(gate) * up is linear in up)
  - random b > 0 per value channel (3 kv heads x 64): v_proj rows * b, o_proj columns / b for every
    query head that reads that kv head (GQA: query head h reads kv head h // 3)
Column scalings by non-constant factors move every Linear off its Q4_1 grid (row scalings alone
would not). The final norm and the tied embedding are left as they are.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

import torch


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--spread", type=float, default=1.5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_quant.backends.gguf import embedded_default

    base = embedded_default(Path(os.environ.get("GPTQ_CONTROLS", "/tmp/gptq")) / "cache")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = model.config
    hd = cfg.head_dim
    groups = cfg.num_attention_heads // cfg.num_key_value_heads
    g = torch.Generator().manual_seed(a.seed)
    ls = math.log(a.spread)

    def rand(n):
        return torch.exp((torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * ls)

    with torch.no_grad():
        for layer in model.model.layers:
            at, mlp = layer.self_attn, layer.mlp
            g1 = layer.input_layernorm.weight.double()
            for lin in (at.q_proj, at.k_proj, at.v_proj):
                lin.weight.data = (lin.weight.double() * g1[None, :]).float()
            layer.input_layernorm.weight.data.fill_(1.0)
            g2 = layer.post_attention_layernorm.weight.double()
            for lin in (mlp.gate_proj, mlp.up_proj):
                lin.weight.data = (lin.weight.double() * g2[None, :]).float()
            layer.post_attention_layernorm.weight.data.fill_(1.0)
            al = rand(mlp.up_proj.weight.shape[0])
            mlp.up_proj.weight.data = (mlp.up_proj.weight.double() * al[:, None]).float()
            mlp.down_proj.weight.data = (mlp.down_proj.weight.double() / al[None, :]).float()
            be = rand(at.v_proj.weight.shape[0])  # [kv_heads * hd]
            at.v_proj.weight.data = (at.v_proj.weight.double() * be[:, None]).float()
            col = torch.cat([be[(h // groups) * hd:(h // groups + 1) * hd] for h in range(cfg.num_attention_heads)])
            at.o_proj.weight.data = (at.o_proj.weight.double() / col[None, :]).float()
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    (out / "transform.json").write_text(json.dumps(vars(a) | {"source": str(base)}, indent=1))

    # equivalence check on a short text, and how many weights still sit on their Q4_1 grid
    ref = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    ids = torch.tensor([AutoTokenizer.from_pretrained(base)("The quick brown fox jumps over the lazy dog. " * 8)["input_ids"]])
    with torch.no_grad():
        d = (model.eval()(ids).logits - ref(ids).logits).abs().max().item()
    on = tot = 0
    for n, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and n != "lm_head":
            G = m.weight.data.reshape(m.weight.shape[0], -1, 32)
            lo, hi = G.amin(-1, keepdim=True), G.amax(-1, keepdim=True)
            k = (G - lo) / ((hi - lo) / 15)
            on += int(((k - k.round()).abs() < 1e-3).all(-1).sum())
            tot += G.shape[0] * G.shape[1]
    print(f"max |logit difference| vs the Q4_1-derived model: {d:.3e}; groups of 32 still on a 16-level grid: {on}/{tot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
