"""How much of upstream's accuracy gates pytest-quant collects: vLLM's and llm-compressor's config folders.

    python benchmarks/bench_import_upstream.py --vllm VLLM_CHECKOUT --llmcompressor LLMC_CHECKOUT

Each checkout is a folder holding upstream's files at their paths (``.buildkite/lm-eval-harness/configs``
for vLLM; ``tests/lmeval/{configs,distributed_configs,vl_configs}`` and ``tests/e2e/recipes`` for
llm-compressor); fetch them, never commit them. For each config the script reports whether it maps to
a suite (and its items) or the reason it is refused, then runs ``pytest --collect-only`` over copies of
both folders with ``quant_import_globs`` set, to show that the session is not interrupted and that
every refused file is one ``::import`` item. Nothing is evaluated.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

VLLM_GLOB = ".buildkite/lm-eval-harness/configs/*.yaml"
LLMC_GLOBS = (
    "tests/lmeval/configs/*.yaml",
    "tests/lmeval/distributed_configs/*.yaml",
    "tests/lmeval/vl_configs/*.yaml",
)


def survey(root: Path, globs: tuple[str, ...]) -> tuple[int, int, int, list[str], Counter[str]]:
    """(configs, mapped, items, refusals, methods) of the configs under ``root`` matching ``globs``."""
    from pytest_quant.errors import QuantConfigError
    from pytest_quant.importers import load_imported
    from pytest_quant.suite import expand_checks

    files = sorted({p for g in globs for p in root.glob(g)})
    mapped, items, refused, methods = 0, 0, [], Counter()
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                suite, lines = load_imported(path)
            except QuantConfigError as exc:
                refused.append(str(exc).replace(str(root) + "/", ""))
                continue
        mapped += 1
        items += len(expand_checks(suite, lines))
        for scheme in suite.schemes.values():
            methods[str(scheme.method)] += 1
        if not suite.schemes:
            methods["checkpoint as is"] += 1
    return len(files), mapped, items, refused, methods


def collect(vllm: Path | None, llmc: Path | None) -> str:
    """``pytest --collect-only -q`` over copies of both folders: its last line and the ``::import`` items."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        globs = []
        if vllm is not None:
            shutil.copytree(
                vllm / ".buildkite" / "lm-eval-harness" / "configs", root / ".buildkite/lm-eval-harness/configs"
            )
            globs.append(VLLM_GLOB)
        if llmc is not None:  # the configs and the recipes they name, not upstream's own test modules
            for path in [p for g in LLMC_GLOBS for p in llmc.glob(g)] + list(llmc.glob("tests/e2e/recipes/**/*.yaml")):
                dest = root / path.relative_to(llmc)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)
            globs.extend(LLMC_GLOBS)
        (root / "pytest.ini").write_text("[pytest]\nquant_import_globs =\n" + "".join(f"    {g}\n" for g in globs))
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-W", "ignore"],
            cwd=root, capture_output=True, text=True, check=False,
        )  # fmt: skip
        lines = out.stdout.strip().splitlines()
        failures = [ln for ln in lines if ln.endswith("::import")]
        return (
            f"exit code {out.returncode}; {lines[-1] if lines else out.stderr[-300:]}; ::import items {len(failures)}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vllm", type=Path, help="a folder holding vLLM's .buildkite/lm-eval-harness")
    ap.add_argument("--llmcompressor", type=Path, help="a folder holding llm-compressor's tests/lmeval (and e2e)")
    args = ap.parse_args()
    for label, root, globs in (("vLLM", args.vllm, (VLLM_GLOB,)), ("llm-compressor", args.llmcompressor, LLMC_GLOBS)):
        if root is None:
            continue
        total, mapped, items, refused, methods = survey(root, globs)
        print(
            f"{label}: {mapped}/{total} configs map to suites ({mapped / max(total, 1):.1%}), {items} items; "
            f"refused {len(refused)}"
        )
        print("  schemes: " + ", ".join(f"{k} {v}" for k, v in methods.most_common()))
        for reason in refused:
            print(f"  refused: {reason}")
    print("pytest --collect-only: " + collect(args.vllm, args.llmcompressor))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
