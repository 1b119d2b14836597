from pathlib import Path

import pytest
import yaml

from instructrec_batch.config import Config, load_config, run_identity
from instructrec_batch.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    found: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            found.update(_leaves(value, f"{prefix}{key}."))
        else:
            found[f"{prefix}{key}"] = value
    return found


def test_user_and_advanced_yaml_together_mirror_code_defaults_without_overlap() -> None:
    user = _leaves(yaml.safe_load((REPO / "conf" / "base.yaml").read_text()))
    advanced = _leaves(yaml.safe_load((REPO / "conf" / "advanced.yaml").read_text()))
    assert not set(user) & set(advanced), "a key is in both conf/base.yaml and conf/advanced.yaml"
    assert {**user, **advanced} == _leaves(Config().model_dump(mode="json"))
    assert len(user) < len(advanced)  # the user's file is the short one


def test_no_fault_injection_key_in_the_config() -> None:
    keys = _leaves(Config().model_dump(mode="json"))
    assert not [key for key in keys if "fail" in key or "fault" in key]


def test_default_training_and_scoring_history_lengths_agree() -> None:
    """Training examples and scoring prompts are cut to one history length, so an adapter is served the
    history length it was tuned on: there is one key, and no training-only one."""
    cfg = Config()
    assert "max_history" not in type(cfg.train).model_fields
    assert cfg.prompt.max_history == 10


def test_layers_apply_in_order(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("engine:\n  kind: spark\n  master: local[2]\ndata:\n  negatives: 99\n")
    cfg = load_config([REPO / "conf" / "base.yaml", overlay], ["data.negatives=5", "tables.format=parquet"])
    assert (cfg.engine.kind, cfg.engine.master) == ("spark", "local[2]")
    assert cfg.data.negatives == 5  # the CLI override wins over the overlay
    assert cfg.tables.format == "parquet"
    assert cfg.tables.interactions == "interactions"  # untouched keys keep the base value


def test_unknown_key_is_named_with_allowed_keys() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["engine.kindd=spark"])
    message = str(err.value)
    assert "unknown config key 'engine.kindd'" in message
    assert "kind" in message and "shuffle_partitions" in message


def test_unknown_top_level_key_in_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("engin:\n  kind: local\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'engin'.*engine"):
        load_config([bad])


def test_bad_value_names_key_and_allowed_values() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["engine.kind=yarn"])
    assert "engine.kind" in str(err.value) and "'local'" in str(err.value) and "'connect'" in str(err.value)
    with pytest.raises(ConfigError, match=r"data\.negatives"):
        load_config(overrides=["data.negatives=0"])


def test_yaml_cannot_build_objects(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("workdir: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match=r"evil\.yaml is not plain YAML data.*python/object"):
        load_config([evil])


def test_missing_file_and_bad_override_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config([tmp_path / "nope.yaml"])
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        load_config(overrides=["no-equals-sign"])


def test_fingerprint_changes_with_config() -> None:
    assert Config().fingerprint() == Config().fingerprint()
    assert load_config(overrides=["data.seed=7"]).fingerprint() != Config().fingerprint()


def test_run_date_accepts_yaml_dates_and_rejects_bad_ones() -> None:
    assert load_config(overrides=["run.run_date=2026-01-02"]).run.run_date == "2026-01-02"
    with pytest.raises(ConfigError, match=r"run\.run_date"):
        load_config(overrides=["run.run_date=tomorrow"])
    with pytest.raises(ConfigError, match=r"run\.run_id"):
        load_config(overrides=["run.run_id=x' OR 1=1"])


def test_jobs_of_one_night_share_the_default_run_id() -> None:
    night = ["run.run_date=2026-03-01"]
    prompts = run_identity(load_config(overrides=night))
    score = run_identity(load_config(overrides=[*night, "score.adapter=/a", "score.k=5", "engine.kind=spark"]))
    assert prompts.run_id == score.run_id and prompts.run_id.startswith("2026-03-01-")
    assert run_identity(load_config(overrides=[*night, "prompt.max_history=5"])).run_id != prompts.run_id
    assert run_identity(load_config(overrides=["run.run_date=2026-03-02"])).run_id != prompts.run_id
