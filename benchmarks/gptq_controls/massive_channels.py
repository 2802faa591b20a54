"""Where the position-0 mass sits: for the down_proj inputs of layers 11, 28, 29 on the first 8
calibration windows, the share of ||x_0||^2 carried by the top-1/top-4 channels, those channels,
and each channel's share of diag(H) over all 32 windows.
  . benchmarks/gptq_controls/env.sh; $PY benchmarks/gptq_controls/massive_channels.py
"""
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pytest_quant.backends.calibration import calibration_windows
from pytest_quant.backends.gguf import embedded_default
from pytest_quant.config import CalibrationConfig

torch.set_num_threads(1)
base = embedded_default(Path(os.environ.get("GPTQ_CONTROLS", "/tmp/gptq")) / "cache")
tok = AutoTokenizer.from_pretrained(base)
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
wins = calibration_windows(tok, CalibrationConfig(samples=32, seq_len=256, seed=0))
names = [f"model.layers.{i}.mlp.down_proj" for i in (2, 9, 11, 27, 28, 29)]
mods = dict(model.named_modules())
diag = {n: 0 for n in names}
x0 = {n: [] for n in names}
hooks = []
for n in names:
    def f(m, a, o, n=n):
        x = a[0][0].float()
        diag[n] = diag[n] + (x * x).sum(0)
        x0[n].append(x[0])
    hooks.append(mods[n].register_forward_hook(f))
with torch.no_grad():
    for w in wins:
        model(torch.tensor([w]))
for n in names:
    X = torch.stack(x0[n])  # [32, in]
    sq = (X * X)
    share = sq / sq.sum(-1, keepdim=True)
    top = share.mean(0).topk(4)
    d = diag[n]
    damp = 0.01 * d.mean()
    med = d.median()
    print(f"{n}: pos-0 mass in top-1 channel {share.max(-1).values.mean():.3f}, top-4 {share.topk(4, -1).values.sum(-1).mean():.3f}; "
          f"channels {top.indices.tolist()}; top channel's share of trace(H) {float(d.max() / d.sum()):.3f}; "
          f"dampening 0.01*mean(diag H) = {float(damp / med):.2f} x median diag(H)")
