"""Where configured locations point: table name kinds, and confinement of paths to allowed roots.

Pure functions on strings (no Spark, no config types), shared by the config check and table I/O.
A table setting is a catalog name (`catalog.schema.table` / `schema.table`), a path (contains '/'
or '://'), or a bare name placed under the tables root.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

CATALOG_NAME = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*){1,2}$")
BARE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


def is_path(value: str) -> bool:
    """Whether a table setting is a path rather than a catalog or bare name."""
    return "/" in value or "://" in value


def is_catalog_schema(root: str | None) -> bool:
    """Whether a tables.root value names a `catalog.schema` rather than a folder."""
    root = root or ""
    return not is_path(root) and CATALOG_NAME.match(root) is not None and root.count(".") == 1


def table_location(value: str, root: str) -> tuple[str, bool]:
    """(location, is_catalog) of a table setting; a bare name goes under `root` (a folder or catalog.schema)."""
    if is_path(value):
        return value, False
    if CATALOG_NAME.match(value):
        return value, True
    if is_catalog_schema(root):
        return f"{root}.{value}", True
    return str(Path(root) / value), False


def _normalised(location: str) -> tuple[str, str]:
    """(scheme://authority, absolute normalised path) of a local path or storage URI.

    Local paths are made absolute against the working directory and symlinks are resolved, so a
    link inside a root that points elsewhere counts as elsewhere.
    """
    if location.startswith("file://"):
        location = location[len("file://") :]
    if "://" in location:
        parts = urlsplit(location)
        return f"{parts.scheme}://{parts.netloc}", posixpath.normpath("/" + parts.path.lstrip("/"))
    return "", os.path.realpath(os.path.expanduser(location))


def within(location: str, root: str) -> bool:
    """Whether `location` is `root` or lies below it (after normalisation, on the same storage)."""
    loc_base, loc_path = _normalised(location)
    root_base, root_path = _normalised(root)
    if loc_base != root_base:
        return False
    separator = "/" if loc_base else os.sep
    return loc_path == root_path or loc_path.startswith(root_path.rstrip(separator) + separator)


def outside_roots(locations: Mapping[str, str], roots: Sequence[str]) -> list[str]:
    """The settings (key → location) whose location lies under none of `roots`, as 'key=location'."""
    return [f"{key}={value}" for key, value in locations.items() if not any(within(value, r) for r in roots)]
