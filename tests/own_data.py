"""Own data as docs/own-data.md and docs/production.md write it: CSV exports of a small shop and the docs'
snippets that turn them into tables, shared by the tests that run the production path."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from tests.helpers import REPO


def readme_snippet(name: str = "own-data") -> str:
    pages = "".join((REPO / "docs" / page).read_text() for page in ("own-data.md", "production.md"))
    found = re.search(rf"<!-- {name}:[^>]*-->\s*```python\n(.*?)```", pages, re.S)
    assert found, f"docs/own-data.md or docs/production.md lost its {name} snippet"
    return found.group(1)


def documented_tables(tmp_path: Path, *snippets: str) -> None:
    """Run the docs' snippets (own-data.md, production.md), unchanged but for the paths, on the exports in
    `tmp_path`."""
    namespace: dict[str, object] = {}
    for name in snippets:
        code = readme_snippet(name).replace('"my_work/tables"', repr(str(tmp_path / "my_work" / "tables")))
        for export in ("events.csv", "products.csv", "retrieved.csv", "retrieved_history.csv"):
            code = code.replace(f'"{export}"', repr(str(tmp_path / export)))
        exec(compile(code, "docs/own-data.md", "exec"), namespace)


START = datetime(2026, 3, 1)


def bought(u: int, j: int, products: int = 40) -> str:
    """User u's j-th product of the exports (at START + 10·j + u hours: every user's log spans the period)."""
    return f"SKU-{(u * 7 + j * 3) % products:03d}"


def exports(folder: Path, users: int = 12, products: int = 40, per_user: int = 9) -> None:
    rows = [
        (f"u{u}", bought(u, j, products), (START + timedelta(hours=10 * j + u)).isoformat())
        for u in range(users)
        for j in range(per_user)
    ]
    pd.DataFrame(rows, columns=["user", "product", "timestamp"]).to_csv(folder / "events.csv", index=False)
    names = [(f"SKU-{p:03d}", f"Product {p} &amp; accessories") for p in range(products)]
    pd.DataFrame(names, columns=["product", "name"]).to_csv(folder / "products.csv", index=False)
