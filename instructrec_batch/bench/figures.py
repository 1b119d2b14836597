"""How every bench command prints its result: one JSON object, or one aligned `name: value` line per figure."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any


def report(result: Any, as_json: bool, width: int = 22) -> str:
    """`result` (a dataclass of figures) as JSON or as lines with names right-aligned to `width`."""
    if as_json:
        return json.dumps(asdict(result))
    return "\n".join(f"{key:>{width}}: {value}" for key, value in asdict(result).items())
