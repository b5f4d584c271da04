"""A generic, thread-safe plugin registry.

Plugins register with a decorator (``@METHODS.register("ridge")``), as lazy ``"module:attr"``
targets that are imported on first use, or through Python entry points in the registry's
group (``stbench.methods``, ``stbench.datasets``, ``stbench.encoders``) so that third-party
packages add plugins without touching stbench.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import threading
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from stbench.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> plugin mapping with lazy targets, entry points and helpful errors.

    Args:
        kind: What is registered, for messages ("method", "dataset", ...).
        group: The entry-point group scanned once, on first lookup.
    """

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._items: dict[str, T | str] = {}
        self._lock = threading.RLock()
        self._entry_points_loaded = group is None

    def register(self, name: str, target: T | str | None = None) -> Callable[[T], T] | T | str:
        """Register ``target`` under ``name``; without a target, return a decorator.

        ``target`` may be the object itself or a lazy ``"package.module:attr"`` string.

        Raises:
            ValueError: If ``name`` is already registered.
        """
        if target is not None:
            self._add(name, target)
            return target

        def decorator(obj: T) -> T:
            self._add(name, obj)
            return obj

        return decorator

    def _add(self, name: str, target: T | str) -> None:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"invalid {self.kind} name {name!r}: use letters, digits, '_' or '-'")
        with self._lock:
            existing = self._items.get(name)
            if existing is not None and existing is not target:
                raise ValueError(f"{self.kind} {name!r} is already registered ({existing!r})")
            self._items[name] = target

    def _load_entry_points(self) -> None:
        with self._lock:
            if self._entry_points_loaded:
                return
            self._entry_points_loaded = True
            for ep in entry_points(group=self.group):
                if ep.name in self._items:
                    if self._items[ep.name] == ep.value:
                        continue
                    raise ValueError(
                        f"{self.kind} {ep.name!r} from entry point {ep.value!r} clashes with an "
                        f"already registered {self.kind}"
                    )
                self._items[ep.name] = ep.value

    def get(self, name: str) -> T:
        """Return the plugin registered as ``name``, importing a lazy target if needed.

        Raises:
            UnknownNameError: If no plugin has that name (the message lists the closest names).
        """
        self._load_entry_points()
        with self._lock:
            if name not in self._items:
                close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
                hint = f"did you mean {', '.join(close)}?" if close else None
                raise UnknownNameError(
                    f"unknown {self.kind} {name!r}",
                    fix=(hint + " " if hint else "")
                    + f"see `stbench list {self.kind}s` for the registered ones",
                )
            item = self._items[name]
            if isinstance(item, str):
                item = _import_target(item)
                self._items[name] = item
            return item

    def list(self, pattern: str = "*") -> list[str]:
        """Registered names matching a glob ``pattern``, sorted."""
        self._load_entry_points()
        with self._lock:
            return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self.list())


def _import_target(target: str) -> object:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    obj: object = module
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj
