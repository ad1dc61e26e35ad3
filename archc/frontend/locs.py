"""Raw spec data and where each piece of it came from.

Both frontends (YAML and DSL) produce the same *raw data*: nested dicts (str keys),
lists and scalars (str, int, float, bool, None), plus a `LocMap` from a data path
(a tuple of dict keys and list indices) to the `SourceLoc` of the value there, and
of the key that introduced it. Later stages keep the map in step with the data so a
message about any value points at the user's text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from archc.diagnostics import SourceLoc

Path = tuple[str | int, ...]


@dataclass
class LocMap:
    """Locations of values (`values[path]`) and of mapping keys (`keys[path]`)."""

    values: dict[Path, SourceLoc] = field(default_factory=dict)
    keys: dict[Path, SourceLoc] = field(default_factory=dict)

    def value(self, path: Path) -> SourceLoc | None:
        """The location of the value at `path`, or of its nearest located ancestor."""
        p = tuple(path)
        while True:
            if p in self.values:
                return self.values[p]
            if p in self.keys:
                return self.keys[p]
            if not p:
                return None
            p = p[:-1]

    def key(self, path: Path) -> SourceLoc | None:
        """The location of the key that introduced `path` (falls back to the value)."""
        p = tuple(path)
        if p in self.keys:
            return self.keys[p]
        return self.value(p)

    def set(self, path: Path, loc: SourceLoc | None, key_loc: SourceLoc | None = None) -> None:
        if loc is not None:
            self.values[tuple(path)] = loc
        if key_loc is not None:
            self.keys[tuple(path)] = key_loc

    def subtree(self, prefix: Path) -> Iterator[tuple[Path, SourceLoc, bool]]:
        """(relative path, loc, is_key) of everything under `prefix`."""
        n = len(prefix)
        for table, is_key in ((self.values, False), (self.keys, True)):
            for p, loc in table.items():
                if p[:n] == tuple(prefix):
                    yield p[n:], loc, is_key

    def graft(self, dst: Path, src: LocMap, src_prefix: Path = ()) -> None:
        """Copy `src`'s locations under `src_prefix` to live under `dst` here."""
        for rel, loc, is_key in list(src.subtree(src_prefix)):
            table = self.keys if is_key else self.values
            table[tuple(dst) + rel] = loc

    def drop(self, prefix: Path) -> None:
        """Forget every location under `prefix` (the value there was replaced)."""
        n = len(prefix)
        for table in (self.values, self.keys):
            for p in [p for p in table if p[:n] == tuple(prefix) and len(p) > n]:
                del table[p]


def path_str(path: Path) -> str:
    """`layers[2].attention.heads` for ("layers", 2, "attention", "heads")."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
