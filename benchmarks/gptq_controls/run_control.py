"""One control: quantize SmolLM2-135M-Instruct one way, evaluate LAMBADA (lambada_openai, limit 100).

Run with:  . benchmarks/gptq_controls/env.sh; $PY benchmarks/gptq_controls/run_control.py --name NAME [options]

Quantization goes through the worktree's pytest_quant code:
  - rtn  -> pytest_quant.backends.quantize.rtn.ReferenceQuantizer (the suite's w4a16-rtn backend)
  - rtn-lc / gptq / awq -> pytest_quant.backends.quantize.llmcompressor.LLMCompressorQuantizer
Settings pytest_quant does not expose (actorder, block_size, dropping Hessian token positions)
are injected by wrapping build_recipe / llm-compressor's accumulate_hessian in this process only
(nothing on disk is edited). --direct calls llm-compressor's oneshot directly (see --help).

Result JSON: /tmp/gptq/results/NAME.json; llm-compressor's loguru log: /tmp/gptq/logs/NAME.loguru.log
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(os.environ.get("GPTQ_CONTROLS", "/tmp/gptq"))
CACHE = ROOT / "cache"
OUT = CACHE / "quant"
RESULTS = ROOT / "results"
LOGS = ROOT / "logs"


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--base", default=None, help="HF folder of the unquantized model (default: the embedded SmolLM2)")
    ap.add_argument("--method", choices=["none", "rtn", "rtn-lc", "gptq", "awq"], required=True)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group", type=int, default=64, help="0 = per channel")
    ap.add_argument("--asym", action="store_true")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default=None, help="calibration text file (default: the built-in docstring corpus)")
    ap.add_argument("--damp", type=float, default=None, help="dampening_frac (pytest_quant default 0.01)")
    ap.add_argument("--actorder", default="default", help="default (llm-compressor's: static) | none | static | group | weight")
    ap.add_argument("--block-size", type=int, default=None)
    ap.add_argument("--drop-positions", default=None,
                    help="comma list of token positions left out of every GPTQ Hessian, e.g. 0 or 0,1")
    ap.add_argument("--drop-massive", type=float, default=None,
                    help="leave out of each Hessian the tokens whose input row norm exceeds this multiple of the "
                         "median row norm of that batch")
    ap.add_argument("--clip-massive", type=float, default=None,
                    help="in each Hessian, scale down the tokens whose input row norm exceeds this multiple of the "
                         "batch's median row norm to exactly that norm (kept, direction unchanged, weight capped)")
    ap.add_argument("--ignore", action="append", default=[],
                    help="extra SchemeConfig.ignore pattern (e.g. 're:.*layers\\.28\\.mlp\\.down_proj$'), kept unquantized")
    ap.add_argument("--direct", action="store_true",
                    help="call llmcompressor.oneshot directly with its documented W4A16 form "
                         "(GPTQModifier(targets='Linear', scheme=..., ignore=['lm_head'])) on the same windows")
    ap.add_argument("--keep", action="store_true", help="keep the quantized folder")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--eval-only", action="store_true",
                    help="evaluate the folder a previous run kept (cache/quant/NAME); quantize_s/errors from --from-json")
    ap.add_argument("--from-json", default=None)
    return ap.parse_args()


def scheme_of(a: argparse.Namespace):
    from pytest_quant.config import SchemeConfig

    d: dict = {"name": a.name, "method": "rtn" if a.method.startswith("rtn") else a.method,
               "weights": {"bits": a.bits, "group_size": a.group or None, "symmetric": not a.asym}}
    if a.method == "rtn-lc":
        d["backend"] = "llmcompressor"
    if a.ignore:
        d["ignore"] = ("lm_head", *a.ignore)
    if a.method in ("gptq", "awq"):
        d["calibration"] = {"samples": a.samples, "seq_len": a.seq_len, "seed": a.seed, "dataset": a.dataset}
        if a.damp is not None:
            d["dampening_frac"] = a.damp
    return SchemeConfig(**d)


def install_patches(a: argparse.Namespace, notes: dict) -> None:
    import torch

    import pytest_quant.backends.quantize.llmcompressor as pq_lc

    if a.actorder != "default" or a.block_size is not None:
        original = pq_lc.build_recipe

        def build_recipe(scheme):
            recipe = original(scheme)
            from llmcompressor.modifiers.gptq import GPTQModifier

            for m in recipe:
                if isinstance(m, GPTQModifier):
                    if a.actorder != "default":
                        m.actorder = None if a.actorder == "none" else a.actorder
                    if a.block_size is not None:
                        m.block_size = a.block_size
            return recipe

        pq_lc.build_recipe = build_recipe
        notes["patched_build_recipe"] = {"actorder": a.actorder, "block_size": a.block_size}

    if a.drop_positions or a.drop_massive or a.clip_massive:
        import llmcompressor.modifiers.gptq.base as gbase

        original_acc = gbase.accumulate_hessian
        drop = [int(p) for p in a.drop_positions.split(",")] if a.drop_positions else []
        stats = notes.setdefault("hessian_tokens_dropped", {"calls": 0, "dropped": 0, "kept": 0})

        def accumulate_hessian(inp, module, hessian, num_samples):
            if inp.dim() == 3:
                keep = torch.ones(inp.shape[1], dtype=torch.bool, device=inp.device)
                for p in drop:
                    if p < inp.shape[1]:
                        keep[p] = False
                if a.drop_massive:
                    norms = inp[0].float().norm(dim=-1)
                    keep &= norms <= a.drop_massive * norms.median()
                if a.clip_massive:
                    norms = inp[0].float().norm(dim=-1)
                    cap = a.clip_massive * norms.median()
                    factor = torch.where(norms > cap, cap / norms, torch.ones_like(norms)).to(inp.dtype)
                    stats["clipped"] = stats.get("clipped", 0) + int((norms > cap).sum())
                    inp = inp * factor[None, :, None]
                stats["calls"] += 1
                stats["dropped"] += int((~keep).sum())
                stats["kept"] += int(keep.sum())
                inp = inp[:, keep, :]
            return original_acc(inp, module, hessian, num_samples)

        gbase.accumulate_hessian = accumulate_hessian
        notes["patched_accumulate_hessian"] = {"drop_positions": drop, "drop_massive": a.drop_massive,
                                               "clip_massive": a.clip_massive}


def direct_oneshot(a: argparse.Namespace, base: Path, out: Path, notes: dict) -> None:
    """llm-compressor's documented form, without pytest_quant's recipe builder or quantizer."""
    import random

    import numpy as np
    import torch
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor import oneshot
    from llmcompressor.core import reset_session
    from llmcompressor.modifiers.gptq import GPTQModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_quant.backends.calibration import calibration_dataset

    tok = AutoTokenizer.from_pretrained(base)
    scheme = scheme_of(a)
    ds = calibration_dataset(tok, scheme.calibration)
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    # The W4A16 preset is group 128, which does not divide 576: same preset with group_size 64.
    w = QuantizationArgs(num_bits=a.bits, type="int", symmetric=not a.asym, strategy="group", group_size=a.group)
    kwargs = {}
    if a.damp is not None:
        kwargs["dampening_frac"] = a.damp
    if a.actorder != "default":
        kwargs["actorder"] = None if a.actorder == "none" else a.actorder
    recipe = GPTQModifier(config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=w)},
                          ignore=["lm_head"], **kwargs)
    notes["direct_recipe"] = repr(recipe)
    random.seed(a.seed), np.random.seed(a.seed), torch.manual_seed(a.seed)
    try:
        oneshot(model=model, dataset=ds, recipe=recipe, max_seq_length=a.seq_len,
                num_calibration_samples=a.samples, shuffle_calibration_samples=False)
        model.save_pretrained(out, save_compressed=True)
        tok.save_pretrained(out)
    finally:
        reset_session()


def main() -> int:
    a = parse()
    import torch

    torch.set_num_threads(1)
    from loguru import logger

    from pytest_quant.backends.gguf import embedded_default

    RESULTS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    base = Path(a.base) if a.base else embedded_default(CACHE)
    out = OUT / a.name
    if not a.eval_only:
        shutil.rmtree(out, ignore_errors=True)
    loglog = LOGS / f"{a.name}.loguru.log"
    loglog.unlink(missing_ok=True)
    sink = logger.add(str(loglog), level=0, format="{time:HH:mm:ss.SSS} | {level} | {function} | {message}")
    notes: dict = {}
    record: dict = {"name": a.name, "args": vars(a), "base": str(base), "torch_threads": torch.get_num_threads(),
                    "cpu": _cpu(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                    "load_before": os.getloadavg()}
    qsec = None
    if a.method == "none":
        model_dir = base
    elif a.eval_only:
        model_dir = out
        record["scheme"] = scheme_of(a).describe()
        if a.from_json:
            prev = json.loads(Path(a.from_json).read_text())
            qsec = prev.get("quantize_s")
            notes = prev.get("notes", {})
    else:
        install_patches(a, notes)
        scheme = scheme_of(a)
        record["scheme"] = scheme.describe()
        t0 = time.perf_counter()
        if a.direct:
            direct_oneshot(a, base, out, notes)
        elif a.method == "rtn":
            from pytest_quant.backends.quantize.rtn import ReferenceQuantizer

            ReferenceQuantizer().quantize(base, scheme, out)
        else:
            from pytest_quant.backends.quantize.llmcompressor import LLMCompressorQuantizer

            LLMCompressorQuantizer().quantize(base, scheme, out)
        qsec = time.perf_counter() - t0
        model_dir = out
    try:
        logger.remove(sink)
    except ValueError:  # llm-compressor already removed every loguru handler
        pass
    record["quantize_s"] = qsec
    record["notes"] = notes
    # llm-compressor re-configures loguru (removes our sink); its records also go to stderr = LOGS/NAME.out
    record["gptq_errors"] = {} if a.eval_only else {**parse_errors(LOGS / f"{a.name}.out"), **parse_errors(loglog)}
    if not a.no_eval:
        from pytest_quant.backends.evaluate.lmeval_hf import LMEvalHF
        from pytest_quant.config import EvaluationConfig, TaskConfig

        t_ppl = TaskConfig(name="lambada_ppl", task="lambada_openai", metric="perplexity", limit=100)
        t_acc = TaskConfig(name="lambada_acc", task="lambada_openai", metric="acc", limit=100)
        t0 = time.perf_counter()
        ev = LMEvalHF()
        run = ev.run(model_dir, t_ppl, EvaluationConfig(batch_size=16), seed=0)
        record["eval_s"] = time.perf_counter() - t0
        record["ppl"] = LMEvalHF.result_from_run(run, t_ppl).value
        record["acc"] = LMEvalHF.result_from_run(run, t_acc).value
        r_ppl = LMEvalHF.result_from_run(run, t_ppl)
        record["per_item_nll"] = list(map(float, r_ppl.scores))
    record["load_after"] = os.getloadavg()
    (RESULTS / f"{a.name}.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"RESULT {a.name}: quantize_s={qsec} ppl={record.get('ppl')} acc={record.get('acc')}", flush=True)
    if not a.keep and not a.eval_only and a.method != "none":
        shutil.rmtree(out, ignore_errors=True)
    return 0


def parse_errors(path: Path) -> dict:
    if not path.exists():
        return {}
    """module name -> GPTQ loss, from 'Quantizing 1 module(s): [name]' followed by 'error X'."""
    errs: dict = {}
    current = None
    for line in path.read_text().splitlines():
        m = re.search(r"Quantizing \d+ module\(s\): \[(.*)\]", line)
        if m:
            current = [s.strip().strip("'") for s in m.group(1).split(",")]
            continue
        m = re.search(r"(?:\||METRIC -) error ([0-9.eE+-]+)\s*$", line)
        if m and current:
            errs[current.pop(0)] = float(m.group(1))
    return errs


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
