"""Configured paths stay inside allowed_roots: '..', absolute paths, symlinks and other buckets are refused."""

from pathlib import Path

import pytest

from instructrec_batch.config import build_config
from instructrec_batch.errors import ConfigError
from instructrec_batch.paths import within
from tests.helpers import run_cli


def _config(root: Path, **overrides: object) -> dict:
    return {"allowed_roots": [str(root)], "workdir": str(root / "work"), "cache_dir": str(root / "cache"), **overrides}


def test_defaults_under_a_root_pass(tmp_path: Path) -> None:
    cfg = build_config([_config(tmp_path, train={"output": str(tmp_path / "adapters" / "a")})])
    assert cfg.path_settings()["tables.prompts"] == str(tmp_path / "work" / "tables" / "prompts")
    assert all(within(p, str(tmp_path)) for p in cfg.path_settings().values())


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("tables", "rejects", "work/../../../outside/rejects"),  # relative, climbs out through '..'
        ("tables", "root", "/etc/instructrec"),
        ("tables", "staging", "/tmp/elsewhere"),
        ("score", "adapter", "/opt/adapters/a"),
        ("evaluate", "report_dir", "/var/www/report"),
        ("model", "base", "/models/smollm2"),
    ],
)
def test_a_path_outside_the_roots_is_refused_with_its_key(tmp_path: Path, section: str, key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"outside allowed_roots \({tmp_path}\): {section}\.{key}="):
        build_config([_config(tmp_path, **{section: {key: value}})])


def test_a_symlink_out_of_the_root_counts_as_outside(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "link").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match=r"tables\.items="):
        build_config([_config(root, tables={"items": str(root / "link" / "items")})])
    build_config([_config(root, tables={"items": str(root / "real" / "items")})])


def test_bare_table_names_cannot_climb_even_without_roots() -> None:
    with pytest.raises(ConfigError, match=r"config key 'tables\.prompts'.*plain table name.*got '\.\.'"):
        build_config([{"tables": {"prompts": ".."}}])
    assert build_config([{"tables": {"prompts": "prompts-v2"}}]).tables.prompts == "prompts-v2"


def test_storage_uris_compare_bucket_and_prefix() -> None:
    assert within("s3://lake/prod/tables/items", "s3://lake/prod")
    assert not within("s3://lake/prod2/items", "s3://lake/prod")
    assert not within("s3://other/prod/items", "s3://lake/prod")
    assert not within("s3://lake/prod/../secrets", "s3://lake/prod")
    assert not within("/lake/prod/items", "s3://lake/prod")


def test_cli_refuses_before_starting_a_job(tmp_path: Path) -> None:
    args = ["--workdir", str(tmp_path / "work"), "--set", f"allowed_roots=[{tmp_path}]"]
    proc = run_cli(["prompts", *args, "--set", "tables.rejects=/tmp/not-here/rejects"], timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "tables.rejects=/tmp/not-here/rejects" in proc.stderr
    assert not (tmp_path / "work").exists()
