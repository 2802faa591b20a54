"""Where the model under test comes from, and what it is.

Engine layer. A suite names its model as a registered short name
(``tiny-llama-test``, the embedded ``smollm2-135m-instruct``), a local Hugging
Face folder, a ``.gguf`` file, or a Hugging Face hub id; :func:`resolve_model`
turns any of them into a local HF folder plus a content fingerprint.

Also here, because every backend needs them:

- :func:`build_tiny_llama`: a random-initialised tiny Llama built in-process
  (no hub, no training), the model of the integration tests;
- :func:`linear_layer_shapes` / :func:`validate_scheme_fits`: catch a group size
  that does not divide a layer's in-features before llm-compressor does;
- :func:`load_causal_lm`: load a folder once for evaluation (one-model LRU),
  decompressing compressed-tensors checkpoints at load time.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_quant.config import ModelConfig, SchemeConfig
from pytest_quant.errors import QuantConfigError

__all__ = [
    "MODEL_REGISTRY",
    "ResolvedModel",
    "adds_bos",
    "build_tiny_llama",
    "byte_level_tokenizer",
    "validate_model_files",
    "validate_scheme_fits",
    "clear_model_cache",
    "gguf_folder",
    "is_quant_target",
    "linear_layer_shapes",
    "load_causal_lm",
    "model_fingerprint",
    "quantization_method",
    "resolve_model",
    "tiny_llama_test",
]

# ---------------------------------------------------------------------------
# Registry of short model names: name -> "module:function", imported when used.
# The function takes the cache folder and returns a local HF model folder.
# ---------------------------------------------------------------------------
MODEL_REGISTRY: dict[str, str] = {
    # A random-initialised 2-layer Llama (hidden 128), built in-process on demand.
    "tiny-llama-test": "pytest_quant.backends.models:tiny_llama_test",
    # --- Embedded default model (owned by backends/gguf.py) -----------------
    # SmolLM2-135M-Instruct shipped as a GGUF file in a wheel and converted to
    # an HF folder on first use. Add further embedded models here, by name.
    "smollm2-135m-instruct": "pytest_quant.backends.gguf:embedded_default",
    # ------------------------------------------------------------------------
}

# Bump when build_tiny_llama writes something different for the same arguments,
# so a cached tiny model of an older builder is not reused.
TINY_LLAMA_VERSION = 1

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_FINGERPRINT_MEMO = "fingerprints.json"


@dataclass(frozen=True)
class ResolvedModel:
    """A model as a local HF folder: ``path``; ``fingerprint`` of its config and weights;
    ``display``, how reports name it."""

    path: Path
    fingerprint: str
    display: str


# ---------------------------------------------------------------------------
# The tiny test model
# ---------------------------------------------------------------------------
TINY_SPECIAL_TOKENS = ("<|pad|>", "<|bos|>", "<|eos|>")
_TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (what ByteLevel uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def byte_level_tokenizer(model_max_length: int = 2048) -> Any:
    """A deterministic byte-level tokenizer: one token per UTF-8 byte, no merges, no training.

    Ids: 0 ``<|pad|>``, 1 ``<|bos|>``, 2 ``<|eos|>``, then ``3 + byte value``. BOS is
    prepended when ``add_special_tokens=True``. Returns a ``PreTrainedTokenizerFast``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(TINY_SPECIAL_TOKENS)}
    byte_chars = _bytes_to_unicode()
    for b in range(256):
        vocab[byte_chars[b]] = len(TINY_SPECIAL_TOKENS) + b
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    bos = TINY_SPECIAL_TOKENS[1]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
    )
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=TINY_SPECIAL_TOKENS[0],
        bos_token=TINY_SPECIAL_TOKENS[1],
        eos_token=TINY_SPECIAL_TOKENS[2],
        model_max_length=model_max_length,
        padding_side="left",
    )
    out.chat_template = _TINY_CHAT_TEMPLATE
    return out


def build_tiny_llama(
    out_dir: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 128,
    layers: int = 2,
    intermediate_size: int = 256,
    heads: int = 4,
    kv_heads: int = 2,
    max_position_embeddings: int = 2048,
) -> Path:
    """Build a random-initialised tiny Llama with :func:`byte_level_tokenizer` into ``out_dir``.

    Every weight is drawn from its own generator seeded by ``(seed, parameter name)``,
    so the weights depend only on the arguments, not on transformers' init order.
    Linear and embedding weights are N(0, 1/in_features) / N(0, 1) (unit-variance
    activations, so the logits are far from uniform and quantization shows); norms are 1.
    Saved in float32 as safetensors. With the defaults every Linear in-dimension
    (128, 256) is divisible by 64 and 32, so group sizes 32/64/128 fit.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden_size % heads or heads % kv_heads:
        raise ValueError(f"hidden_size {hidden_size} / heads {heads} / kv_heads {kv_heads} do not divide")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = byte_level_tokenizer(model_max_length=max_position_embeddings)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.dtype = torch.float32
    torch.manual_seed(seed)  # whatever the constructor draws is overwritten below
    model = LlamaForCausalLM(config).to(torch.float32)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
            gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            elif param.ndim == 2 and "embed_tokens" in name:
                param.copy_(torch.randn(param.shape, generator=gen))
            elif param.ndim == 2:
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(param.shape[1]))
            else:
                param.zero_()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def tiny_llama_test(cache_dir: Path) -> Path:
    """The registered ``tiny-llama-test``: :func:`build_tiny_llama` defaults, built once per cache."""
    from pytest_quant.backends.cache import build_folder_once

    target = Path(cache_dir) / "models" / f"tiny-llama-test-v{TINY_LLAMA_VERSION}"
    build_folder_once(
        target,
        build_tiny_llama,
        done=lambda folder: (folder / "config.json").is_file(),
        lock=target.with_name(target.name + ".lock"),
    )
    return target


# ---------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------
def _registered(name: str) -> Callable[[Path], Path]:
    target = MODEL_REGISTRY[name]
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise QuantConfigError(f"registered model {name!r} is not available here ({target}: {exc})") from exc


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _looks_like_path(source: str) -> bool:
    """A local path (which does not exist), not a hub id ``org/name``."""
    return source.startswith((".", "/", "~")) or "\\" in source or source.count("/") > 1


def resolve_model(model: ModelConfig, cache_dir: Path) -> ResolvedModel:
    """The local HF folder behind ``model`` and its fingerprint.

    Order: a ``.gguf`` file (or ``gguf_file``) is converted into ``cache_dir`` by
    ``backends.gguf.convert_gguf``; a registered short name is built/unpacked into
    ``cache_dir``; an existing folder is used as is; anything else is a hub id,
    fetched with ``huggingface_hub.snapshot_download`` (which uses the local HF
    cache, and fails offline unless the model is cached there).
    """
    cache_dir = Path(cache_dir)
    source = model.source
    if model.gguf_file is not None or source.lower().endswith(".gguf"):
        path = _resolve_gguf(model, cache_dir)
        display = f"{source}" + (f" ({model.gguf_file})" if model.gguf_file else "")
    elif model.path is None and model.name in MODEL_REGISTRY:
        path = Path(_registered(model.name)(cache_dir))
        display = model.name
    elif Path(source).expanduser().is_dir():
        path = Path(source).expanduser().resolve()
        display = source
    elif _looks_like_path(source):
        raise QuantConfigError(f"model folder {source!r} does not exist", field="model")
    elif not _HUB_ID.match(source):
        raise QuantConfigError(
            f"model {source!r} is neither a registered name ({', '.join(sorted(MODEL_REGISTRY))}), "
            "an existing folder, nor a Hugging Face hub id",
            field="model",
        )
    else:
        path = _snapshot(source, model.revision, model.trust_remote_code)
        display = source + (f"@{model.revision}" if model.revision else "")
    if not (path / "config.json").is_file():
        raise QuantConfigError(
            f"model {source!r}: {path} has no config.json (not a Hugging Face model folder)", field="model"
        )
    validate_model_files(path, what=f"model {source!r}")
    return ResolvedModel(path=path, fingerprint=model_fingerprint(path, cache_dir), display=display)


def validate_model_files(folder: Path, *, what: str, source: str | None = None, field: str = "model") -> None:
    """Raise :class:`QuantConfigError` naming the file when ``folder``'s config.json is not a JSON
    object or one of its safetensors files is truncated or corrupt.

    Only the safetensors headers are read (and checked to cover each file exactly), so this
    costs milliseconds for any model size, and a broken folder fails with the file's name
    instead of a traceback from deep inside transformers or llm-compressor.
    """
    config_file = Path(folder) / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise QuantConfigError(
            f"{what}: {str(config_file)!r} is not valid JSON ({exc})", source=source, field=field
        ) from None
    if not isinstance(config, dict):
        raise QuantConfigError(f"{what}: {str(config_file)!r} is not a JSON object", source=source, field=field)
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:  # nothing could load the weights either; the loader says so
        return
    for weights in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="numpy"):
                pass
        except (SafetensorError, OSError) as exc:
            raise QuantConfigError(
                f"{what}: weights file {str(weights)!r} is truncated or corrupt ({exc})", source=source, field=field
            ) from None


def _snapshot(repo_id: str, revision: str | None, trust_remote_code: bool) -> Path:
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]
        if trust_remote_code:
            patterns.append("*.py")
        return Path(snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=patterns))
    except Exception as exc:  # offline, unknown repo, gated, network: all mean "cannot get it"
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        hint = (
            " (HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache)"
            if offline
            else " (check the name, your network and your Hugging Face token)"
        )
        if "/" not in repo_id:
            import difflib

            close = difflib.get_close_matches(repo_id, MODEL_REGISTRY, n=1)
            hint += (
                f"; did you mean the registered model {close[0]!r}?"
                if close
                else f"; registered models: {', '.join(MODEL_REGISTRY)}"
            )
        raise QuantConfigError(
            f"cannot get model {repo_id!r} from the Hugging Face hub{hint}: {type(exc).__name__}: {exc}",
            field="model",
        ) from exc


def _resolve_gguf(model: ModelConfig, cache_dir: Path) -> Path:
    base = model.path or model.name
    if model.gguf_file is None:
        gguf_path = Path(base).expanduser()
    else:
        cand = Path(model.gguf_file).expanduser()
        if cand.is_absolute() or cand.is_file():
            gguf_path = cand
        elif Path(base).expanduser().is_dir():
            gguf_path = Path(base).expanduser() / model.gguf_file
        else:
            try:
                from huggingface_hub import hf_hub_download

                gguf_path = Path(hf_hub_download(repo_id=base, filename=model.gguf_file, revision=model.revision))
            except Exception as exc:
                raise QuantConfigError(
                    f"cannot get GGUF file {model.gguf_file!r} of {base!r}: {type(exc).__name__}: {exc}", field="model"
                ) from exc
    if not gguf_path.is_file():
        raise QuantConfigError(f"GGUF file {str(gguf_path)!r} does not exist", field="model")
    return gguf_folder(gguf_path, cache_dir)


def gguf_folder(gguf_path: Path, cache_dir: Path) -> Path:
    """``gguf_path`` converted once into ``cache_dir/models/gguf-<stem>-<sha256[:16]>`` (a suite's
    model and a ``checkpoint:`` scheme share it)."""
    digest = _file_sha256(Path(gguf_path).resolve(), cache_dir)[:16]
    target = Path(cache_dir) / "models" / f"gguf-{Path(gguf_path).stem}-{digest}"

    from pytest_quant.backends.gguf import converted_once

    return converted_once(Path(gguf_path), target)


# ---------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------
def _fingerprint_files(model_dir: Path) -> list[Path]:
    files = [p for p in sorted(model_dir.rglob("*")) if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)]
    return [p for p in files if not any(part.startswith(".") for part in p.relative_to(model_dir).parts)]


def _canonical_config(model_dir: Path) -> bytes:
    """config.json without the fields that record who saved it, not what the model is."""
    data = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    for key in ("transformers_version", "_name_or_path"):
        data.pop(key, None)
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def model_fingerprint(model_dir: str | Path, cache_dir: str | Path | None = None) -> str:
    """sha256 (16 hex digits) over config.json and every weight file's bytes.

    config.json is hashed in canonical form without ``transformers_version`` and
    ``_name_or_path`` (re-saving with another transformers must not make a baseline
    stale). Per-file digests are memoised by (path, size, mtime) in
    ``cache_dir/fingerprints.json``, so a large model is hashed once.
    """
    model_dir = Path(model_dir).resolve()
    h = hashlib.sha256()
    h.update(b"config.json\0" + hashlib.sha256(_canonical_config(model_dir)).hexdigest().encode() + b"\n")
    for path in _fingerprint_files(model_dir):
        rel = path.relative_to(model_dir).as_posix()
        h.update(f"{rel}\0{_file_sha256(path, cache_dir)}\n".encode())
    added = _gguf_added_tokens(model_dir)
    if added:  # a GGUF conversion that made the tokenizer add BOS/EOS scores other prompts than one that did not
        h.update(f"gguf tokenizer\0{json.dumps(added, sort_keys=True)}\n".encode())
    return h.hexdigest()[:16]


def _gguf_added_tokens(model_dir: Path) -> dict[str, Any]:
    """The BOS/EOS-adding flags a GGUF conversion set on the tokenizer (from the file's metadata), or {}:
    absent for every other folder and for GGUF files whose flags the tokenizer already followed, which
    keeps their fingerprints (and the committed baselines) as they were."""
    from pytest_quant.backends.gguf import RECORD

    try:
        record = json.loads((model_dir / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    changed = record.get("special_tokens_set") or {}
    return {k: changed[k] for k in ("add_bos_token", "add_eos_token") if k in changed}


def _file_sha256(path: Path, cache_dir: str | Path | None) -> str:
    st = path.stat()
    key = str(path.resolve())
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    memo_path = Path(cache_dir) / _FINGERPRINT_MEMO if cache_dir is not None else None
    if memo_path is not None and memo_path.is_file():
        with contextlib.suppress(OSError, ValueError):
            entry = json.loads(memo_path.read_text()).get(key)
            if entry and entry.get("size") == stamp["size"] and entry.get("mtime_ns") == stamp["mtime_ns"]:
                return str(entry["sha256"])
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    sha = digest.hexdigest()
    if memo_path is not None:
        _memo_store(memo_path, key, {**stamp, "sha256": sha})
    return sha


def _memo_store(memo_path: Path, key: str, entry: dict[str, Any]) -> None:
    from filelock import FileLock

    memo_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(memo_path) + ".lock"):
        data: dict[str, Any] = {}
        if memo_path.is_file():
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(memo_path.read_text())
        data[key] = entry
        fd, tmp = tempfile.mkstemp(prefix=memo_path.name, dir=memo_path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, memo_path)


# ---------------------------------------------------------------------------
# Layer shapes and the group-size check
# ---------------------------------------------------------------------------
def is_quant_target(name: str, module: Any, patterns: Iterable[str]) -> bool:
    """True when ``module`` (called ``name``) matches one of ``patterns``.

    Same rules as llm-compressor / compressed-tensors ``targets``/``ignore``: a
    pattern is an exact module name, ``re:<regex>`` (``re.match`` on the name), or
    a class name anywhere in the module's class hierarchy.
    """
    mro = {cls.__name__ for cls in type(module).__mro__}
    for pat in patterns:
        if pat.startswith("re:"):
            if re.match(pat[3:], name):
                return True
        elif pat == name or pat in mro:
            return True
    return False


def _meta_model(model_dir: Path, trust_remote_code: bool = False) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    if hasattr(config, "quantization_config"):  # shapes only: build the plain architecture
        delattr(config, "quantization_config")
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def _iter_linears(model_dir: Path, trust_remote_code: bool = False) -> Iterator[tuple[str, Any]]:
    import torch

    model = _meta_model(Path(model_dir), trust_remote_code)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            yield name, module


def linear_layer_shapes(model_dir: str | Path, *, trust_remote_code: bool = False) -> dict[str, tuple[int, int]]:
    """``{module name: (out_features, in_features)}`` (the weight's shape) of every ``nn.Linear``.

    Built from config.json on the meta device: no weights are read.
    """
    return {name: (m.out_features, m.in_features) for name, m in _iter_linears(Path(model_dir), trust_remote_code)}


def validate_scheme_fits(scheme: SchemeConfig, model_dir: str | Path, source: str | None = None) -> None:
    """Raise :class:`QuantConfigError` when ``scheme``'s group size does not divide the
    in-features of a layer it quantizes (layers matching ``scheme.ignore`` are skipped).

    The message names the scheme, the first offending layer, its in-features and
    the group size; ``source`` (e.g. the suite file) prefixes it.
    """
    g = scheme.group_size
    if scheme.checkpoint is not None or g is None:
        return
    for name, module in _iter_linears(Path(model_dir)):
        if is_quant_target(name, module, scheme.ignore):
            continue
        if module.in_features % g:
            divisors = [d for d in (256, 128, 64, 32, 16) if module.in_features % d == 0]
            hint = f"a group size that divides it (e.g. {divisors[0]})" if divisors else "per-channel (no group_size)"
            raise QuantConfigError(
                f"scheme {scheme.name!r} ({scheme.describe()}): group_size {g} does not divide the "
                f"in_features {module.in_features} of layer {name!r}; use {hint}, "
                f"or add {name!r} to the scheme's 'ignore'",
                source=source,
                field=f"schemes.{scheme.name}.weights.group_size",
            )


# ---------------------------------------------------------------------------
# Loading for evaluation (one model kept in memory)
# ---------------------------------------------------------------------------
_LOADED: dict[tuple, tuple[Any, Any]] = {}


def clear_model_cache() -> None:
    """Drop the model kept by :func:`load_causal_lm` and release its memory.

    Called before another model is loaded for evaluation, before a quantization (which loads its
    own copy) and before a vLLM evaluation (its worker process needs the memory), so at most one
    model for evaluation is held in this process: memory is released between models.
    """
    from pytest_quant.backends.memory import release_memory

    _LOADED.clear()
    release_memory()


def _folder_stamp(model_dir: Path) -> tuple:
    files = [model_dir / "config.json", *_fingerprint_files(model_dir)]
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)


def adds_bos(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` puts its BOS token first when ``add_special_tokens=True``."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def quantization_method(model_dir: str | Path) -> str | None:
    """``quantization_config.quant_method`` of a folder's config.json, or None."""
    data = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    qc = data.get("quantization_config") or data.get("compression_config")
    return None if not qc else str(qc.get("quant_method", "unknown"))


def load_causal_lm(
    model_dir: str | Path,
    *,
    dtype: str | None = None,
    device: str = "cpu",
    trust_remote_code: bool = False,
    device_map: str | None = None,
    max_memory: dict[str, str] | None = None,
    offload_folder: str | None = None,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for evaluation, in eval mode; the last one is kept and reused.

    ``dtype`` None means float32 on CPU and the checkpoint's dtype elsewhere. ``device_map`` (with
    ``max_memory`` and ``offload_folder``) hands placement to Accelerate: ``"auto"`` spreads the layers
    over the visible GPUs, then CPU memory, then the offload folder; ``device`` is then not used.
    A compressed-tensors checkpoint is dequantized once at load time
    (``CompressedTensorsConfig(dequantize=True)``, formerly ``run_compressed=False``):
    its modules end in status DECOMPRESSED, so the forward pass skips weight
    fake-quantization, while input-activation quantization (W8A8 int8 / FP8,
    dynamic per token or static per tensor) still runs in every forward.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir).resolve()
    if dtype in (None, ""):
        dtype = "float32" if device == "cpu" else "auto"
    placement = json.dumps([device_map, max_memory, offload_folder], sort_keys=True)
    key = (str(model_dir), dtype, device, trust_remote_code, _folder_stamp(model_dir), placement)
    if key in _LOADED:
        return _LOADED[key]
    clear_model_cache()
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    kwargs["dtype"] = dtype if dtype == "auto" else getattr(torch, dtype)
    if device_map is not None:
        kwargs["device_map"] = device_map
        if max_memory is not None:
            kwargs["max_memory"] = {int(k) if str(k).isdigit() else k: v for k, v in max_memory.items()}
        if offload_folder is not None:
            kwargs["offload_folder"] = offload_folder
    if quantization_method(model_dir) == "compressed-tensors":
        from transformers import CompressedTensorsConfig

        kwargs["quantization_config"] = CompressedTensorsConfig(dequantize=True)
    with warnings.catch_warnings():
        # we pass dequantize=True on purpose; transformers warns that the checkpoint's own config wins otherwise
        warnings.filterwarnings("ignore", message="You passed `quantization_config`", category=UserWarning)
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if dtype != "auto" and any(p.dtype != kwargs["dtype"] for p in model.parameters() if p.is_floating_point()):
        # compressed-tensors dequantizes FP4 (NVFP4 / MXFP4) weights to bfloat16 whatever dtype was asked for:
        # one dtype for every weight, or the forward pass fails on mixed dtypes
        model.to(kwargs["dtype"])
    if device_map is None:
        model.to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    _LOADED[key] = (model, tokenizer)
    return model, tokenizer


def chat_template_text(model_dir: str | Path) -> str | None:
    """The chat template a tokenizer in ``model_dir`` applies (``chat_template.jinja``, a
    ``chat_template.json`` or ``tokenizer_config.json``'s ``chat_template``), as text; None without one.
    Read from the files (no tokenizer is loaded): the template shapes every chat prompt, and the
    model fingerprint (config and weights) does not cover it."""
    folder = Path(model_dir)
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            template = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError, AttributeError):
            continue
        if template:
            return template if isinstance(template, str) else json.dumps(template, sort_keys=True)
    return None
