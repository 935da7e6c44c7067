"""The record of everything rpl_noqt changed, and the means to undo it.

Every change goes through :class:`PatchRecord`: attribute patches keep the true
original (``setdefault``, so re-patching never loses it) and can be undone;
import redirections and served modules are recorded with the PyRPL modules
they were served to. ``print(rpl_noqt.patch_record())`` shows the lot.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ("PatchEntry", "PatchKind", "PatchRecord")

PatchKind = Literal["import", "module", "attribute", "builtin"]
_MISSING = object()


def _qualname(obj: object) -> str:
    if isinstance(obj, str):
        return obj
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if name is None:
        return repr(obj)
    return f"{module}.{name}" if module else str(name)


@dataclass
class PatchEntry:
    """One change: what was replaced, by what, why, and where it took effect."""

    kind: PatchKind
    target: str
    replacement: str
    reason: str
    served_to: set[str] = field(default_factory=set)

    def describe(self) -> str:
        text = f"[{self.kind}] {self.target} -> {self.replacement}: {self.reason}"
        if self.served_to:
            text += f" (served to {len(self.served_to)} module(s): {', '.join(sorted(self.served_to))})"
        return text


class PatchRecord:
    """Thread-safe record of patches; attribute patches are reversible."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._entries: dict[tuple[str, str], PatchEntry] = {}
        self._originals: dict[tuple[int, str], tuple[Any, str, Any]] = {}

    # -- recording ---------------------------------------------------------------
    def note(self, kind: PatchKind, target: str, replacement: object, reason: str, served_to: str | None = None) -> PatchEntry:
        """Record a non-attribute change (idempotent; accumulates ``served_to``)."""
        with self._lock:
            entry = self._entries.get((kind, target))
            if entry is None:
                entry = PatchEntry(kind, target, _qualname(replacement), reason)
                self._entries[(kind, target)] = entry
            if served_to:
                entry.served_to.add(served_to)
            return entry

    def patch_attribute(self, owner: Any, name: str, new: object, reason: str) -> None:
        """``setattr(owner, name, new)``, remembering the true original once."""
        with self._lock:
            original = owner.__dict__.get(name, _MISSING) if hasattr(owner, "__dict__") else getattr(owner, name, _MISSING)
            self._originals.setdefault((id(owner), name), (owner, name, original))
            setattr(owner, name, new)
            self.note("attribute", f"{_qualname(owner)}.{name}", new, reason)

    # -- queries --------------------------------------------------------------------
    def is_patched(self, owner: Any, name: str) -> bool:
        with self._lock:
            return (id(owner), name) in self._originals

    def get_original(self, owner: Any, name: str) -> Any:
        """The attribute as it was before rpl_noqt touched it."""
        with self._lock:
            try:
                _owner, _name, original = self._originals[(id(owner), name)]
            except KeyError:
                return getattr(owner, name)
        if original is _MISSING:
            raise AttributeError(f"{_qualname(owner)}.{name} did not exist before it was patched")
        return original

    def entries(self) -> list[PatchEntry]:
        with self._lock:
            return list(self._entries.values())

    def __iter__(self) -> Iterator[PatchEntry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self._entries)

    # -- undo -------------------------------------------------------------------------
    def undo_attributes(self) -> int:
        """Restore every patched attribute (newest first); returns how many."""
        with self._lock:
            originals = list(self._originals.values())
            self._originals.clear()
            for key in [k for k, e in self._entries.items() if e.kind == "attribute"]:
                del self._entries[key]
        for owner, name, original in reversed(originals):
            if original is _MISSING:
                try:
                    delattr(owner, name)
                except AttributeError:
                    pass
            else:
                setattr(owner, name, original)
        return len(originals)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._originals.clear()

    # -- display ----------------------------------------------------------------------
    def format(self) -> str:
        entries = self.entries()
        if not entries:
            return "rpl_noqt: no patches applied (rpl_noqt.activate() not called, or RPL_NOQT_DISABLE set)"
        lines = [f"rpl_noqt: {len(entries)} patch(es) applied"]
        for kind in ("import", "module", "builtin", "attribute"):
            group = [e for e in entries if e.kind == kind]
            if group:
                lines.append(f"  {kind}:")
                lines.extend(f"    {e.target} -> {e.replacement}" + (f"  [{len(e.served_to)} importer(s)]" if e.served_to else "")
                             + f"\n        {e.reason}" for e in group)
        return "\n".join(lines)

    __str__ = format

    def __repr__(self) -> str:
        return f"<PatchRecord {len(self)} entries>"
