"""Budget values: "1%", "0.5pp", "99%" recoveries and "a >= b - 1pp" claims.

Data layer: plain parsing, no pytest, no heavy libraries. Every parse error is a
``ValueError`` whose message shows the offending text; callers add file/field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["relative", "absolute"]
# How a budget is decided (README "Decision modes"): the estimate, or a one-sided bound.
Mode = Literal["point", "alarm", "gate"]
MODES: tuple[Mode, ...] = ("point", "alarm", "gate")

_THRESHOLD = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%|pp)\s*$")


@dataclass(frozen=True)
class Threshold:
    """A tolerated loss: ``relative`` as a fraction of the baseline, ``absolute`` in metric units.

    ``"1%"`` is ``Threshold(0.01, "relative")``; ``"2pp"`` (percentage points of a
    metric on a 0..1 scale, such as accuracy) is ``Threshold(0.02, "absolute")``.
    """

    value: float
    kind: Kind

    def __str__(self) -> str:
        scaled = self.value * 100
        text = f"{scaled:.4g}"
        return f"{text}%" if self.kind == "relative" else f"{text}pp"

    def absolute(self, baseline_value: float) -> float:
        """The threshold in metric units, given the baseline's value."""
        if self.kind == "absolute":
            return self.value
        return self.value * abs(baseline_value)


def parse_threshold(text: object) -> Threshold:
    """Parse ``"1%"`` (relative) or ``"0.5pp"`` (absolute points); bare numbers are ambiguous."""
    if isinstance(text, Threshold):
        return text
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"expected a string such as '1%' or '0.5pp', got {text!r}")
    if isinstance(text, (int, float)):
        raise ValueError(
            f"{text!r} is ambiguous: write '{text}%' for a drop relative to the baseline "
            f"or '{text}pp' for absolute percentage points"
        )
    if re.fullmatch(r"\s*[0-9]*\.?[0-9]+\s*", text):
        raise ValueError(
            f"{text!r} is ambiguous: write '{text.strip()}%' for a drop relative to the baseline "
            f"or '{text.strip()}pp' for absolute percentage points"
        )
    m = _THRESHOLD.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a budget: write e.g. '1%' (relative) or '0.5pp' (absolute points)")
    number = float(m.group(1))
    if number >= 100:
        raise ValueError(f"{text!r} allows a loss of 100% or more, which can never fail")
    return Threshold(number / 100.0, "relative" if m.group(2) == "%" else "absolute")


def recovery_to_threshold(text: object) -> Threshold:
    """``min_recovery: "99%"`` is the same budget as ``max_drop: "1%"``."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"expected a recovery such as '99%', got {text!r}")
    th = parse_threshold(text)
    if th.kind != "relative":
        raise ValueError(f"a recovery is a percentage of the baseline such as '99%', got {text!r}")
    recovered = th.value
    if not 0 < recovered <= 1:
        raise ValueError(f"a recovery must lie in (0%, 100%], got {text!r}")
    return Threshold(round(1.0 - recovered, 12), "relative")


_OPS = (">=", "<=")
_COMPARE = re.compile(
    r"^\s*(?P<left>[^\s<>=]+)\s*(?P<op>>=|<=)\s*(?P<right>[^\s<>=]+)"
    r"(?:\s+(?P<sign>[-+])\s+(?P<margin>\S+))?\s*$"
)


@dataclass(frozen=True)
class Comparison:
    """``better >= worse - margin``: ``better`` must score at least ``worse`` minus the margin.

    ``"fp8 >= w8a8-sq"`` and ``"w8a8-sq <= fp8"`` parse to the same comparison.
    ``baseline`` names the unquantized model.
    """

    better: str
    worse: str
    margin: Threshold | None = None

    def __str__(self) -> str:
        tail = f" - {self.margin}" if self.margin else ""
        return f"{self.better} >= {self.worse}{tail}"


def parse_comparison(text: object) -> Comparison:
    if not isinstance(text, str):
        raise ValueError(f"expected a claim such as 'fp8 >= w8a8-sq', got {text!r}")
    m = _COMPARE.match(text)
    if not m:
        raise ValueError(
            f"{text!r} is not a comparison: write 'A >= B' or 'A >= B - 1pp' (spaces around the margin's sign)"
        )
    left, op, right = m.group("left"), m.group("op"), m.group("right")
    if left == right:
        raise ValueError(f"{text!r} compares {left!r} with itself")
    margin = None
    if m.group("margin") is not None:
        if m.group("sign") != "-":
            raise ValueError(f"{text!r}: only a tolerance ('- 1pp') is supported, not a required lead")
        margin = parse_threshold(m.group("margin"))
    if op == "<=":
        left, right = right, left
    return Comparison(better=left, worse=right, margin=margin)


@dataclass(frozen=True)
class ValueFloor:
    """A floor on a metric's own value, not on a loss: ``value >= reference * (1 - rtol)``.

    ``min_value: 0.62`` is ``ValueFloor(0.62)``; ``min_value: {value: 0.753, rtol: 8%}``
    is vLLM's lm-eval correctness rule (the value recorded in the config, less a
    relative tolerance). There is no per-item reference behind the number, so a
    floor is judged on the candidate's own scores, never paired.
    """

    reference: float
    rtol: float = 0.0

    @property
    def floor(self) -> float:
        return self.reference * (1.0 - self.rtol)

    def __str__(self) -> str:
        if self.rtol:
            return f"value >= {self.floor:.4g} ({self.reference:g} - {self.rtol * 100:.4g}%)"
        return f"value >= {self.reference:g}"


_FLOOR_KEYS = ("value", "rtol")


def _finite_number(v: object, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{what} must be a finite number in metric units such as 0.62, got {v!r}")
    return float(v)


def parse_value_floor(spec: object) -> ValueFloor:
    """``0.62`` (the floor itself) or ``{value: 0.753, rtol: "8%"}`` (a recorded value less a relative tolerance)."""
    if isinstance(spec, ValueFloor):
        return spec
    if isinstance(spec, dict):
        unknown = [k for k in spec if k not in _FLOOR_KEYS]
        if unknown:
            raise ValueError(f"min_value has no key {unknown[0]!r}; it takes 'value' and optionally 'rtol'")
        if "value" not in spec:
            raise ValueError("min_value needs 'value' (the recorded metric value), e.g. {value: 0.753, rtol: 8%}")
        reference = _finite_number(spec["value"], "min_value.value")
        rtol = 0.0
        if spec.get("rtol") is not None:
            th = parse_threshold(spec["rtol"])
            if th.kind != "relative":
                raise ValueError(f"min_value.rtol is relative to the value, such as '8%', got {spec['rtol']!r}")
            rtol = th.value
        return ValueFloor(reference, rtol)
    return ValueFloor(_finite_number(spec, "min_value"))


# -- efficiency budgets: measurements, not losses ------------------------------------------------
_RATIO = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*[xX]\s*$")
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(B|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$")
_SIZE_UNITS = {
    "B": 1,
    "kB": 10**3,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}


@dataclass(frozen=True)
class Ratio:
    """A factor of the baseline's own measurement: ``"1.2x"`` is ``Ratio(1.2)``."""

    factor: float

    def __str__(self) -> str:
        return f"{self.factor:g}x"


def parse_ratio(text: object, what: str = "a ratio") -> Ratio:
    """Parse ``"1.0x"`` (a factor of the baseline's number, > 0); bare numbers are refused."""
    if isinstance(text, Ratio):
        return text
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"expected {what} such as '1.0x', got {text!r}")
    if isinstance(text, (int, float)) or re.fullmatch(r"\s*[-+]?[0-9]*\.?[0-9]+\s*", text):
        raise ValueError(
            f"write {what} with an 'x', such as '{str(text).strip()}x' (a factor of the baseline's number)"
        )
    m = _RATIO.match(text)
    if not m:
        raise ValueError(f"{text!r} is not {what}: write a factor of the baseline's number such as '1.0x'")
    factor = float(m.group(1))
    if not 0 < factor < float("inf"):
        raise ValueError(f"{text!r}: the factor must be a finite number above 0")
    return Ratio(factor)


@dataclass(frozen=True)
class MemoryLimit:
    """``max_memory``: weight memory as a factor of the baseline's (``"0.35x"``) or a size (``"4GiB"``)."""

    ratio: float | None = None
    size: int | None = None  # bytes

    def limit(self, baseline_bytes: float) -> float:
        """The limit in bytes, given the baseline's weight memory."""
        return self.ratio * baseline_bytes if self.ratio is not None else float(self.size or 0)

    def __str__(self) -> str:
        if self.ratio is not None:
            return f"{self.ratio:g}x"
        return format_bytes(float(self.size or 0))


def format_bytes(n: float) -> str:
    """``1536`` → ``'1.5 KiB'`` (binary units, as memory is counted)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} B" if unit == "B" else f"{n:.4g} {unit}"
        n /= 1024
    return f"{n:.4g} TiB"  # pragma: no cover


def parse_memory_limit(text: object) -> MemoryLimit:
    """``"0.35x"`` (of the baseline's weight memory) or an absolute size ``"4GiB"`` / ``"500MB"``."""
    if isinstance(text, MemoryLimit):
        return text
    hint = "write a factor of the baseline's weight memory such as '0.35x' or a size such as '4GiB'"
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"expected a memory budget: {hint}, got {text!r}")
    if isinstance(text, (int, float)) or re.fullmatch(r"\s*[-+]?[0-9]*\.?[0-9]+\s*", text):
        raise ValueError(f"{text!r} is ambiguous: {hint}")
    m = _SIZE.match(text)
    if m:
        size = float(m.group(1)) * _SIZE_UNITS[m.group(2)]
        if not 0 < size < float("inf"):
            raise ValueError(f"{text!r}: a memory size must be above 0")
        return MemoryLimit(size=int(size))
    if _RATIO.match(text):
        return MemoryLimit(ratio=parse_ratio(text, "a memory ratio").factor)
    raise ValueError(f"{text!r} is not a memory budget: {hint}")
