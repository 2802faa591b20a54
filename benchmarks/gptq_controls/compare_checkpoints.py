"""Compare two compressed-tensors checkpoints tensor by tensor (packed codes, scales, zero points).

  . benchmarks/gptq_controls/env.sh; $PY benchmarks/gptq_controls/compare_checkpoints.py DIR_A DIR_B

Prints how many tensors are bit-identical, and for those that differ the share of differing
elements; also diffs the quantization_config of both config.json files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def tensors(d: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def main(a: str, b: str) -> int:
    A, B = tensors(Path(a)), tensors(Path(b))
    only_a, only_b = sorted(set(A) - set(B)), sorted(set(B) - set(A))
    same, diff = 0, []
    for k in sorted(set(A) & set(B)):
        x, y = A[k], B[k]
        if x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y):
            same += 1
        else:
            frac = float((x != y).float().mean()) if x.shape == y.shape else float("nan")
            diff.append((k, frac))
    print(f"{a} vs {b}: {same} identical tensors, {len(diff)} differ, only in A: {len(only_a)}, only in B: {len(only_b)}")
    for k, frac in diff[:40]:
        print(f"  differs: {k}  ({frac:.4%} of elements)")
    for k in only_a[:10]:
        print(f"  only A: {k}")
    for k in only_b[:10]:
        print(f"  only B: {k}")
    ca = json.loads((Path(a) / "config.json").read_text()).get("quantization_config")
    cb = json.loads((Path(b) / "config.json").read_text()).get("quantization_config")
    if ca != cb:
        print("quantization_config differs:")
        print(" A:", json.dumps(ca, sort_keys=True)[:1500])
        print(" B:", json.dumps(cb, sort_keys=True)[:1500])
    else:
        print("quantization_config identical")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
