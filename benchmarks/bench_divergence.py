"""The divergence tier's stored reference against the full-vocabulary KL, and its cost, per scheme.

    python benchmarks/bench_divergence.py --cache-dir CACHE [--windows 32 --seq-len 128] [--k 32 64 --m 32 64]

CACHE is a pytest-quant cache that holds the demo suite's base model and quantized folders (run the
demo with ``--quant-cache-dir=CACHE`` first; the scheme of each folder is read from its record). For
each (top_k, tail_samples) the base model's reference is recorded through the plugin's own evaluator,
each scheme is measured against it, and the estimate is compared with the exact KL computed from both
models' full next-token distributions on the same windows. Prints seconds per step, the mean KL and its
relative error, the top-1 agreement, and the size of the reference file.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache-dir", type=Path, required=True)
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--k", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--m", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from pytest_quant.backends.evaluate.divergence import DivergenceEvaluator, _log_probs, load_reference
    from pytest_quant.backends.models import clear_model_cache, load_causal_lm
    from pytest_quant.config import EvaluationConfig, TaskConfig

    (base,) = [p for p in (args.cache_dir / "models").iterdir() if p.is_dir()]
    schemes = {}
    for folder in sorted((args.cache_dir / "artifacts").iterdir()):
        record = folder / "pytest_quant_scheme.json"
        if record.is_file():
            schemes[json.loads(record.read_text())["describe"]] = folder
    evaluation = EvaluationConfig(batch_size=8)
    evaluator = DivergenceEvaluator()
    print(f"base {base.name}; {args.windows} windows x {args.seq_len} tokens of LAMBADA; torch threads {args.threads}; "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip

    def full_logp(folder: Path, ids: torch.Tensor, first: int) -> torch.Tensor:
        clear_model_cache()
        model, _ = load_causal_lm(folder)
        return torch.cat([flat for flat, _ in _log_probs(model, ids, first, 8)])

    with tempfile.TemporaryDirectory() as tmp:
        for k in args.k:
            for m in args.m:
                task = TaskConfig(name="kl", divergence="lambada", limit=args.windows, seq_len=args.seq_len,
                                  top_k=k, tail_samples=m)  # fmt: skip
                ref = Path(tmp) / f"ref-{k}-{m}.npz"
                start = time.perf_counter()
                evaluator.record_reference(base, task, evaluation, ref, seed=0)
                rec_s = time.perf_counter() - start
                arrays = load_reference(ref)
                ids = torch.from_numpy(arrays["input_ids"].astype("int64"))
                first = int(arrays["first_predicted"])
                p = full_logp(base, ids, first)
                print(f"k={k} m={m}: reference {ref.stat().st_size / 2**20:.2f} MiB, recorded in {rec_s:.1f} s")
                for name, folder in schemes.items():
                    start = time.perf_counter()
                    run = evaluator.compare(folder, task, evaluation, ref)
                    cmp_s = time.perf_counter() - start
                    est = sum(run["windows"]["kld"]) / len(run["windows"]["kld"])
                    q = full_logp(folder, ids, first)
                    exact = float((p.exp() * (p - q)).sum(-1).double().mean())
                    top1 = sum(run["windows"]["top1_agreement"]) / len(run["windows"]["top1_agreement"])
                    print(f"  {name:40s} KL {est:.5f} exact {exact:.5f} ({(est / exact - 1) * 100:+.2f}%)  "
                          f"top-1 {top1:.4f}  ppl ratio {run['meta']['ppl_ratio']:.4f}  {cmp_s:.1f} s", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
