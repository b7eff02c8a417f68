"""The shipped example config is valid, shows every dialect, and check-config names mistakes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ari_app.app.cli import main
from ari_app.app.settings import ConfigError, load_settings

EXAMPLE = Path(__file__).parents[1] / "config" / "pbxcrm.example.toml"


def example_with_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    text = EXAMPLE.read_text()
    for name in set(re.findall(r'"env:([A-Z_]+)"', text)):
        monkeypatch.setenv(name, f"secret-for-{name.lower()}-0123456789")
    for path in set(re.findall(r'"file:(/[^"]+)"', text)):
        local = tmp_path / Path(path).name
        local.write_text("a-file-secret-0123456789\n")
        text = text.replace(f"file:{path}", f"file:{local}")
    copy = tmp_path / "pbxcrm.toml"
    copy.write_text(text)
    return copy


def test_the_example_config_loads_and_shows_every_dialect(tmp_path, monkeypatch) -> None:
    settings = load_settings(example_with_secrets(tmp_path, monkeypatch))
    types = {block.type for block in settings.crm}
    assert types == {"webhook", "salesforce", "creatio", "fixdigital", "dbn", "declarative"}
    assert all(not block.enabled for block in settings.crm)
    assert {block["type"] for block in settings.lookup} == {"local", "jtel", "dbn"}
    assert settings.pbx.ami.password.get_secret_value().startswith("secret-for-")
    assert settings.http.clients and settings.agi.port == 4573


def test_check_config_accepts_the_example(tmp_path, monkeypatch, capsys) -> None:
    assert main(["check-config", "--config", str(example_with_secrets(tmp_path, monkeypatch))]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_config_names_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[pbx.ami]\nhost = "127.0.0.1"\nport = "not-a-port"\n')
    with pytest.raises(ConfigError) as error:
        load_settings(bad)
    assert f"{bad}:3: pbx.ami.port" in str(error.value)


def test_an_unknown_crm_type_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[crm]]\ntype = "sugarcrm"\n')
    with pytest.raises(ConfigError, match="unknown CRM type 'sugarcrm'"):
        load_settings(bad)


def test_a_missing_environment_secret_is_named_without_any_value(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("NO_SUCH_SECRET_VAR", raising=False)
    bad = tmp_path / "bad.toml"
    bad.write_text('[pbx.ami]\npassword = "env:NO_SUCH_SECRET_VAR"\n')
    with pytest.raises(ConfigError, match="NO_SUCH_SECRET_VAR is not set"):
        load_settings(bad)
