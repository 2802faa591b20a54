"""Lead (1): how close does 4-bit RTN land to each base's weights? Per scheme, the RTN weight error
relative to the uniform-rounding expectation step^2/12, and the share of weights RTN leaves unchanged.

  . benchmarks/gptq_controls/env.sh; $PY benchmarks/gptq_controls/grid_alignment.py
"""
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from pytest_quant.backends.gguf import embedded_default
from pytest_quant.primitives import compute_qparams, rtn_fake_quantize_weight

torch.set_num_threads(1)
bases = {"q4_1 base": embedded_default(Path(os.environ.get("GPTQ_CONTROLS", "/tmp/gptq")) / "cache"), "off-grid 0.5": Path(os.environ.get("GPTQ_CONTROLS", "/tmp/gptq")) / "cache/models/offgrid-0.5"}
for label, path in bases.items():
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    for bits, group, sym in [(4, 64, True), (4, 32, False), (4, 64, False)]:
        num = den = same = n = 0.0
        for name, mod in m.named_modules():
            if not isinstance(mod, torch.nn.Linear) or name == "lm_head":
                continue
            W = mod.weight.data
            q = rtn_fake_quantize_weight(W, bits, sym, group_size=group)
            scale, _ = compute_qparams(W, bits, sym, group)
            s = scale.repeat_interleave(group, dim=1)
            num += float(((q - W) ** 2).sum())
            den += float((s ** 2 / 12).sum())
            same += float((q == W).sum())
            n += W.numel()
        print(f"{label:14s} RTN w{bits} g{group} {'sym' if sym else 'asym'}: error MSE / (step^2/12) = {num/den:.3f}, "
              f"weights unchanged {same/n:.2%}", flush=True)

# Structure of the RTN error: share of its energy in the per-group mean (1/g for independent errors,
# 1 for an error constant over each group), measured over groups of 32 (Q4_1's) and of the scheme's size.
print("error structure: share of RTN error energy in the mean over each Q4_1 group of 32 (independent errors: 1/32 = 0.031)")
for label, path in bases.items():
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    for bits, group, sym in [(4, 64, True), (4, 32, False), (4, 64, False)]:
        num = den = 0.0
        for name, mod in m.named_modules():
            if not isinstance(mod, torch.nn.Linear) or name == "lm_head":
                continue
            W = mod.weight.data
            e = (rtn_fake_quantize_weight(W, bits, sym, group_size=group) - W).reshape(W.shape[0], -1, 32)
            num += float((e.mean(-1) ** 2).sum() * 32)
            den += float((e ** 2).sum())
        print(f"{label:14s} RTN w{bits} g{group} {'sym' if sym else 'asym'}: {num/den:.3f}", flush=True)
