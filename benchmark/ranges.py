"""Valid ranges of numeric settings, declared next to each setting and checked before any work.

Every numeric field of a ``Config`` dataclass (the harness's groups and every plugin's) states
its range with :func:`bounded`::

    @dataclass
    class Config(MethodConfig):
        lr: float = bounded(1e-3, "> 0")
        dropout: float = bounded(0.1, "[0, 1)")
        epochs: int = bounded(100, ">= 1")
        grid: list[float] = bounded_list([0.1, 1.0], "> 0")

A range is written ``"> a"``, ``">= a"``, ``"< b"``, ``"<= b"`` or as an interval such as
``"[0, 1)"`` or ``"(0, 1]"``. The config system refuses a value outside it (exit code 2, one
line naming the key, the value and the range); a numeric field without a range fails the
table-driven test ``tests/test_ranges.py``, so every new key gets one.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_BOUND = re.compile(r"^\s*(>=|<=|>|<)\s*(-?[\d.eE+-]+|inf)\s*$")
_INTERVAL = re.compile(r"^\s*([\[(])\s*(-?[\d.eE+-]+|-inf)\s*,\s*(-?[\d.eE+-]+|inf)\s*([\])])\s*$")


@dataclass(frozen=True)
class Range:
    """A closed, open or half-open interval of the real line (``None`` = unbounded)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    @classmethod
    def parse(cls, spec: str) -> "Range":
        """Parse ``"> 0"``, ``">= 1"``, ``"[0, 1)"`` ...; raises ValueError on anything else."""
        m = _BOUND.match(spec)
        if m:
            op, value = m.group(1), float(m.group(2))
            if op in (">", ">="):
                return cls(lo=value, lo_open=op == ">")
            return cls(hi=value, hi_open=op == "<")
        m = _INTERVAL.match(spec)
        if m:
            lo, hi = float(m.group(2)), float(m.group(3))
            return cls(lo=None if math.isinf(lo) else lo, hi=None if math.isinf(hi) else hi,
                       lo_open=m.group(1) == "(", hi_open=m.group(4) == ")")
        raise ValueError(f"not a range: {spec!r} (write e.g. '> 0', '>= 1' or '[0, 1)')")

    def contains(self, value: float) -> bool:
        """True when ``value`` is a finite number inside the range."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            return False
        return not math.isinf(value)

    def outside(self) -> list[float]:
        """Values just outside the range (for tests): one below and/or one above."""
        values = []
        if self.lo is not None:
            values.append(self.lo if self.lo_open else self.lo - 1)
        if self.hi is not None:
            values.append(self.hi if self.hi_open else self.hi + 1)
        return values

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None:
            return (f"{'(' if self.lo_open else '['}{_num(self.lo)}, "
                    f"{_num(self.hi)}{')' if self.hi_open else ']'}")
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        return "any number"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def bounded(default: Any, spec: str) -> Any:
    """A dataclass field with ``default`` whose values must lie in ``spec``."""
    return dataclasses.field(default=default, metadata={"range": Range.parse(spec)})


def bounded_list(default: list, spec: str) -> Any:
    """A list field (default copied per instance) whose every element must lie in ``spec``."""
    return dataclasses.field(default_factory=lambda: list(default),
                             metadata={"range": Range.parse(spec)})


def range_of(f: dataclasses.Field) -> Range | None:
    """The declared range of a dataclass field, if any."""
    return f.metadata.get("range") if f.metadata else None


def violations(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any, Range]]:
    """``(key, value, range)`` for every declared range ``obj`` breaks, recursively.

    ``obj`` is a dataclass instance or an OmegaConf node typed by one; ``None`` values of
    optional settings are allowed.
    """
    from omegaconf import DictConfig, OmegaConf

    typ = OmegaConf.get_type(obj) if isinstance(obj, DictConfig) else type(obj)
    if not (isinstance(typ, type) and dataclasses.is_dataclass(typ)):
        return
    for f in dataclasses.fields(typ):
        if isinstance(obj, DictConfig) and f.name not in obj:
            continue
        value = obj[f.name] if isinstance(obj, DictConfig) else getattr(obj, f.name)
        rng = range_of(f)
        if rng is not None and value is not None:
            items = list(value) if isinstance(value, (list, tuple)) or _is_listconfig(value) else [value]
            for item in items:
                if not rng.contains(item):
                    yield f"{prefix}{f.name}", item, rng
                    break
        if isinstance(value, DictConfig) or dataclasses.is_dataclass(value):
            yield from violations(value, f"{prefix}{f.name}.")


def _is_listconfig(value: Any) -> bool:
    from omegaconf import ListConfig

    return isinstance(value, ListConfig)


def numeric_fields_without_range(cls: type) -> list[str]:
    """Names of ``cls``'s int/float (or list of them) fields that declare no range."""
    import typing

    hints = typing.get_type_hints(cls)
    missing = []
    for f in dataclasses.fields(cls):
        text = str(hints.get(f.name, f.type))
        numeric = hints.get(f.name) in (int, float) or re.search(r"\b(int|float)\b", text)
        if numeric and "bool" not in text and range_of(f) is None:
            missing.append(f.name)
    return missing
