"""The wheel installs on Databricks' ML runtimes without replacing their libraries.

docs/databricks.md lists the versions each runtime ships (Databricks' own package lists). Installing
the wheel keeps a shipped library only if the wheel's requirement admits its version, and only if no
library the wheel adds (peft, gguf, ...) requires another: pip would otherwise replace it, e.g. swap the
runtime's transformers for another major version under its sentence-transformers."""

from __future__ import annotations

from importlib.metadata import requires

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import REPO

RUNTIMES = ("17.3 LTS ML", "18.0 ML")


def _shipped() -> dict[str, dict[str, str]]:
    """runtime -> canonical package name -> version, from the docs' table (a cell may name several
    packages; 'not installed' and a build tag's CPU note are not versions)."""
    text = (REPO / "docs" / "databricks.md").read_text().split("<!-- runtime-libraries")[1]
    rows = [line for line in text.splitlines()[1:] if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    out: dict[str, dict[str, str]] = {name: {} for name in header[1:]}
    for line in rows[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        for runtime, value in zip(header[1:], cells[1:], strict=True):
            if value != "not installed":
                for name in cells[0].split(","):
                    out[runtime][canonicalize_name(name.strip())] = value.split()[0]
    return out


def _bare(distribution: str) -> list[Requirement]:
    """The requirements `distribution` installs without extras."""
    parsed = [Requirement(r) for r in requires(distribution) or []]
    return [r for r in parsed if r.marker is None or r.marker.evaluate({"extra": ""})]


def _refused(requirements: list[Requirement], shipped: dict[str, str]) -> list[str]:
    return [
        f"{r} refuses {r.name} {shipped[canonicalize_name(r.name)]}"
        for r in requirements
        if canonicalize_name(r.name) in shipped
        and not r.specifier.contains(shipped[canonicalize_name(r.name)], prereleases=True)
    ]


def test_the_docs_table_names_both_runtimes_and_the_libraries_that_matter() -> None:
    shipped = _shipped()
    assert tuple(shipped) == RUNTIMES
    for versions in shipped.values():
        assert {"torch", "transformers", "tokenizers", "mlflow-skinny", "pandas", "pyarrow"} <= set(versions)
        assert "peft" not in versions  # the wheel brings it


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_wheels_requirements_admit_every_version_the_runtime_ships(runtime: str) -> None:
    shipped = _shipped()[runtime]
    wheel = _bare("instructrec-batch")
    assert {"transformers", "torch"} <= {canonicalize_name(r.name) for r in wheel}
    assert not _refused(wheel, shipped)
    # The check can fail: the requirement this release replaced refused both runtimes' transformers.
    assert _refused([Requirement("transformers>=5.24,<5.40")], shipped)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_what_the_wheel_adds_leaves_the_runtimes_libraries_in_place(runtime: str) -> None:
    """Each library the wheel requires that the runtime lacks is installed with its own requirements (as
    released: the versions `make test` installs), which must admit the runtime's versions too."""
    shipped = _shipped()[runtime]
    added = [canonicalize_name(r.name) for r in _bare("instructrec-batch") if canonicalize_name(r.name) not in shipped]
    assert "peft" in added
    for name in added:
        assert not _refused(_bare(name), shipped), name
