"""The models a check evaluates: resolution, artifact keys, quantize-once, weight footprints.

A scheme's model folder is produced once per key (the model's fingerprint, the resolved
scheme, its calibration data, the library versions that shape the weights) and kept in the
session's cache; a ``checkpoint:`` scheme is used as is. Everything heavy happens in the
backends, imported on first use: the warm path (a cached artifact) imports none.
"""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_quant.config import ModelConfig, SchemeConfig, canonical_hash
from pytest_quant.errors import QuantConfigError
from pytest_quant.results import WeightFootprint
from pytest_quant.session import QuantSession

if TYPE_CHECKING:
    from pytest_quant.backends.models import ResolvedModel

log = logging.getLogger("pytest_quant")

# Libraries whose versions can change a quantized artifact.
QUANT_LIBS = ("llmcompressor", "compressed-tensors", "torch", "transformers")


def library_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of ``names`` (those not installed are left out)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def resolve_model(session: QuantSession, model: ModelConfig) -> ResolvedModel:
    """The local HF folder and fingerprint of ``model`` (resolved once per session)."""
    key = model.model_dump_json()
    if key not in session.models:
        from pytest_quant.backends.models import resolve_model as resolve

        session.models[key] = resolve(model, session.options.cache_dir)
    return session.models[key]


def artifact_key(session: QuantSession, model: ModelConfig, scheme: SchemeConfig) -> str:
    """What identifies a scheme's quantized folder in the cache."""
    resolved = resolve_model(session, model)
    libs = QUANT_LIBS + (("autoawq",) if scheme.backend == "autoawq" else ())  # only its own keys move with AutoAWQ
    payload: dict[str, Any] = {
        "model": resolved.fingerprint,
        "scheme": scheme.fingerprint_payload(),
        "libs": library_versions(libs),
    }
    if scheme.calibration is not None:
        from pytest_quant.backends.calibration import corpus_fingerprint

        payload["calibration_data"] = corpus_fingerprint(scheme.calibration)
    if isinstance(scheme.recipe, str):  # a recipe file: its text decides the model, not its name
        payload["recipe_text"] = _recipe_file_hash(scheme)
    return f"{scheme.method}-{canonical_hash(payload)}"


def _recipe_file_hash(scheme: SchemeConfig) -> str:
    import hashlib

    assert isinstance(scheme.recipe, str)
    try:
        return hashlib.sha256(Path(scheme.recipe).read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise QuantConfigError(
            f"scheme {scheme.name!r}: cannot read recipe {scheme.recipe!r}: {exc}",
            field=f"schemes.{scheme.name}.recipe",
        ) from None


def artifact(
    session: QuantSession,
    model: ModelConfig,
    scheme: SchemeConfig | None,
    *,
    source: str = "",
    device: str | None = None,
) -> Path:
    """The folder of the model to evaluate: the unquantized model, a checkpoint, or a quantized copy (built once).

    A checkpoint is loaded as :func:`checkpoint_folder` decides for ``device`` (None: its own files,
    what it takes deployed)."""
    from pytest_quant.backends import get_quantizer

    quantizer = (
        get_quantizer(scheme.quantizer) if scheme is not None else None
    )  # a missing library: skip, before any build
    resolved = resolve_model(session, model)
    if scheme is None or quantizer is None:
        return resolved.path
    existing = quantizer.existing(scheme, source=source or scheme.name)
    if existing is not None:
        return checkpoint_folder(session, existing, device, label=f"{model.name}/{scheme.name}")
    key = artifact_key(session, model, scheme)
    cached = session.cache.lookup(key)
    if cached is not None:  # the warm path imports no heavy library
        return cached
    from pytest_quant.backends.models import validate_scheme_fits

    validate_scheme_fits(scheme, resolved.path, source or scheme.name)
    calib = scheme.calibration
    oom_hint = (
        f"lower schemes.{scheme.name}.calibration.samples or .seq_len (now {calib.samples} x {calib.seq_len} tokens), "
        "or quantize on a machine with more memory"
        if calib is not None
        else "quantize on a machine with more memory"
    )
    what = f"quantizing {resolved.display} with scheme {scheme.name!r} ({scheme.describe()})"

    def build(out_dir: Path) -> None:
        from pytest_quant.backends.memory import out_of_memory_explained, release_memory
        from pytest_quant.backends.models import clear_model_cache

        clear_model_cache()  # the quantizer loads its own copy: drop the model kept for evaluation first
        try:
            session.timed(
                f"quantizing {resolved.display} with {scheme.name} ({scheme.describe()})",
                lambda: out_of_memory_explained(
                    lambda: quantizer.quantize(resolved.path, scheme, out_dir), what, oom_hint
                ),
            )
        finally:
            release_memory()  # the quantized model is dropped on return; its cycles and CUDA cache go now

    return session.cache.artifact(key, build, label=f"{model.name}/{scheme.name}")


def checkpoint_folder(session: QuantSession, checkpoint: Path, device: str | None, *, label: str = "") -> Path:
    """The folder a ``checkpoint:`` scheme is evaluated from on ``device``: the checkpoint itself, a GGUF
    file's conversion, or a dense folder pytest-quant dequantized it into (built once, cached under a key
    of the checkpoint's fingerprint and the dequantizer's format version)."""
    from pytest_quant.backends.quantize.checkpoint import loading_plan

    plan = loading_plan(checkpoint, device)
    if plan.kind == "gguf":
        from pytest_quant.backends.models import gguf_folder

        return gguf_folder(checkpoint, session.options.cache_dir)
    if plan.kind != "dequantize":
        return checkpoint
    from pytest_quant.backends.dequantize import FORMAT, dequantize_checkpoint
    from pytest_quant.backends.models import model_fingerprint

    fingerprint = model_fingerprint(checkpoint, session.options.cache_dir)
    key = f"dequantized-{canonical_hash({'checkpoint': fingerprint, 'format': FORMAT})}"
    cached = session.cache.lookup(key)
    if cached is not None:
        return cached

    def build(out_dir: Path) -> None:
        session.timed(
            f"{plan.how} ({checkpoint})", lambda: dequantize_checkpoint(checkpoint, out_dir, fingerprint=fingerprint)
        )

    return session.cache.artifact(key, build, label=label or checkpoint.name)


def checkpoint_loading(
    session: QuantSession, model: ModelConfig, scheme: SchemeConfig, device: str | None, *, source: str = ""
) -> str | None:
    """How ``scheme``'s checkpoint is loaded on ``device``, in words for its result row; None for a scheme
    quantized here."""
    if scheme.checkpoint is None:
        return None
    from pytest_quant.backends import get_quantizer
    from pytest_quant.backends.quantize.checkpoint import loading_plan

    existing = get_quantizer(scheme.quantizer).existing(scheme, source=source or scheme.name)
    return None if existing is None else loading_plan(existing, device).how


def artifact_identity(session: QuantSession, model: ModelConfig, scheme: SchemeConfig, model_dir: Path) -> str:
    """What an evaluation of ``scheme``'s folder is keyed on: its artifact key, or a checkpoint's fingerprint
    (for a dense folder pytest-quant dequantized: the checkpoint's, and the dequantizer's format version)."""
    if scheme.checkpoint is None:
        return artifact_key(session, model, scheme)
    from pytest_quant.backends.dequantize import read_record
    from pytest_quant.backends.models import model_fingerprint

    record = read_record(model_dir)
    if record.get("source_fingerprint"):
        return f"checkpoint-{record['source_fingerprint']}-{record['format']}"
    return "checkpoint-" + model_fingerprint(model_dir, session.options.cache_dir)


def built(session: QuantSession, model: ModelConfig, scheme: SchemeConfig | None) -> Path | None:
    """A quantized scheme's artifact folder when it is complete, even under --quant-no-cache (whose
    cache folder holds this session's builds only); None otherwise."""
    if scheme is None or scheme.checkpoint is not None:
        return None
    from pytest_quant.backends.cache import COMPLETE

    folder = session.cache.artifact_dir(artifact_key(session, model, scheme))
    return folder if (folder / COMPLETE).exists() else None


def footprint(
    session: QuantSession, model: ModelConfig, scheme: SchemeConfig | None, *, source: str = ""
) -> WeightFootprint:
    """Weight memory and checkpoint size of the model (``scheme`` None) or a scheme's artifact (not cached: cheap)."""
    from pytest_quant.backends.efficiency import weight_footprint

    return weight_footprint(built(session, model, scheme) or artifact(session, model, scheme, source=source))


def weight_columns(
    session: QuantSession, model: ModelConfig, scheme: SchemeConfig | None, *, source: str = ""
) -> dict[str, Any]:
    """``weight_bytes`` / ``baseline_weight_bytes`` for an accuracy row (the Pareto plot's x), or {} when unknown.

    Never quantizes: a scheme whose artifact is not in the cache (a cached result outliving
    its artifact) gets no weight memory rather than a surprise rebuild.
    """
    try:
        if scheme is not None and scheme.checkpoint is None and built(session, model, scheme) is None:
            return {}
        return {
            "weight_bytes": footprint(session, model, scheme, source=source).weight_bytes,
            "baseline_weight_bytes": footprint(session, model, None).weight_bytes,
        }
    except (OSError, ValueError, QuantConfigError) as exc:
        log.debug("no weight memory for %s: %s", scheme.name if scheme else model.name, exc)
        return {}
