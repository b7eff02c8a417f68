"""`pbxcrm check-config` as a new admin meets it: several [[crm]] blocks, the shipped example."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ari_app.app.cli import main
from ari_app.app.settings import ConfigError, check_settings, load_settings
from crm.model import EventKind

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "config" / "pbxcrm.example.toml"

# Four blocks, the mistakes in the later ones; line numbers are asserted below.
SEVERAL_BLOCKS = """\
[pbx.ami]
password = "x"

[[crm]]
type = "webhook"
name = "hook"
url = "http://127.0.0.1:9/events"

[[crm]]
type = "salesforce"
name = "sf"
base_url = "https://sf.example.com"

[crm.auth]
mode = "oauth2"
token_url = "https://login.example.com/token"
client_id = "a"
client_secret = "b"

[[crm]]
type = "declarative"
name = "by-config"

[crm.auth]
mode = "bogus"

[crm.requests.ringing]
url = "https://crm.example.com/ring"

[[crm]]
type = "creatio"
name = "creatio-anon"
base_url = "https://creatio.example.com"
token = "t"
auth_mode = "anon"
"""


def test_each_error_names_file_real_line_and_block(tmp_path: Path) -> None:
    config = tmp_path / "pbxcrm.toml"
    config.write_text(SEVERAL_BLOCKS)
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    lines = str(error.value).splitlines()
    assert f'{config}:25: crm[2] "by-config": auth.mode: Input should be' in lines[0]
    assert f'{config}:35: crm[3] "creatio-anon": auth_mode: Input should be' in lines[1]
    assert len(lines) == 2


def test_a_block_level_mistake_points_at_its_own_header(tmp_path: Path) -> None:
    config = tmp_path / "pbxcrm.toml"
    config.write_text(
        SEVERAL_BLOCKS.replace('auth_mode = "anon"', 'auth_mode = "login"').replace(
            'mode = "bogus"', 'mode = "none"'
        )
    )
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    # Creatio's login needs username and password: reported at the 4th [[crm]] (line 30).
    assert str(error.value) == (
        f'{config}:30: crm[3] "creatio-anon": auth_mode = "login" needs username and password'
    )


def test_other_arrays_of_tables_are_named_too(tmp_path: Path) -> None:
    config = tmp_path / "pbxcrm.toml"
    config.write_text(
        '[[http.clients]]\nname = "a"\ntoken = "0123456789abcdef"\n'
        '[[http.clients]]\nname = "b"\ntoken = "0123456789abcdef"\nroutes = ["nope"]\n'
    )
    with pytest.raises(ConfigError, match=re.escape(f'{config}:7: http.clients[1] "b": routes')):
        load_settings(config)


def test_two_blocks_with_one_name_are_both_named(tmp_path: Path) -> None:
    config = tmp_path / "pbxcrm.toml"
    block = '[[crm]]\ntype = "webhook"\nurl = "http://127.0.0.1:9/e"\n'
    config.write_text("[logging]\nlevel = 'INFO'\n" + block + block)
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    assert str(error.value) == (
        f"{config}:3: crm: two [[crm]] blocks are named 'webhook' (crm[0] and crm[1]): "
        "give each a name"
    )


def _environment_without_example_secrets() -> dict[str, str]:
    names = set(re.findall(r'"env:([A-Z_]+)"', EXAMPLE.read_text()))
    return {key: value for key, value in os.environ.items() if key not in names}


def test_the_example_passes_check_config_exactly_as_shipped() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ari_app.app.cli", "check-config", "--config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=_environment_without_example_secrets(),
    )
    assert result.returncode == 0, result.stderr
    summary = [line for line in result.stdout.splitlines() if line.startswith("  crm[")]
    assert [line.split()[1] for line in summary] == [
        '"webhook"',
        '"salesforce"',
        '"creatio"',
        '"fixdigital"',
        '"dbn"',
        '"fixdigital-by-config"',
    ]
    # Switched-off blocks keep their secrets unread; only enabled parts are mentioned.
    assert "WEBHOOK_TOKEN" not in result.stdout + result.stderr
    assert "SALESFORCE_CLIENT_SECRET" not in result.stdout + result.stderr
    assert "PBXCRM_AMI_SECRET is not set" in result.stderr


def test_a_switched_off_block_needs_no_secret(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("UNSET_HOOK_TOKEN", raising=False)
    block = '[[crm]]\ntype = "webhook"\nurl = "http://x/e"\nbearer_token = "env:UNSET_HOOK_TOKEN"\n'
    config = tmp_path / "pbxcrm.toml"
    config.write_text(block + "enabled = false\n")
    assert load_settings(config).crm[0].enabled is False
    config.write_text(block)
    with pytest.raises(ConfigError, match=r':4: crm\[0\] "webhook": bearer_token: .*UNSET_HOOK'):
        load_settings(config)


def test_check_config_warns_about_an_unreadable_secret_and_refuses_a_real_mistake(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("UNSET_AMI_SECRET", raising=False)
    config = tmp_path / "pbxcrm.toml"
    config.write_text('[pbx.ami]\npassword = "env:UNSET_AMI_SECRET"\n')
    check = check_settings(config)
    assert [str(problem) for problem in check.unreadable_secrets] == [
        f"{config}:2: pbx.ami.password: environment variable UNSET_AMI_SECRET is not set"
    ]
    config.write_text('[pbx.ami]\npassword = "env:UNSET_AMI_SECRET"\nport = "x"\n')
    with pytest.raises(ConfigError) as error:
        check_settings(config)
    assert str(error.value).startswith(f"{config}:3: pbx.ami.port")
    assert "UNSET_AMI_SECRET" not in str(error.value)


def test_the_summary_shows_a_table_that_attached_to_the_wrong_block(tmp_path, capsys) -> None:
    # The admin meant [crm.auth] for the first webhook, but wrote it below the second one.
    config = tmp_path / "pbxcrm.toml"
    config.write_text(
        '[[crm]]\ntype = "webhook"\nname = "first"\nurl = "https://u:pw@a.example.com/e"\n'
        '[[crm]]\ntype = "webhook"\nname = "second"\nurl = "https://b.example.com/e?k=s3cr3t"\n'
        'events = ["completed"]\n'
        '[crm.auth]\nmode = "bearer"\ntoken = "0123456789abcdef"\n'
    )
    assert main(["check-config", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == [
        "crm[0]",
        '"first"',
        "type=webhook",
        "url=https://a.example.com/e",
        "auth=none",
        "events=" + ",".join(kind.value for kind in EventKind),  # a webhook's default: all
    ]
    assert lines[2].split() == [
        "crm[1]",
        '"second"',
        "type=webhook",
        "url=https://b.example.com/e",
        "auth=bearer",
        "events=completed",
    ]


def test_check_config_on_an_ari_source_prints_the_ari_address(tmp_path, capsys) -> None:
    config = tmp_path / "pbxcrm.toml"
    config.write_text(
        '[pbx]\nsource = "ari"\n[pbx.ari]\nurl = "http://10.0.0.5:8088"\napp = "crm-app"\n'
    )
    assert main(["check-config", "--config", str(config)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "ARI http://10.0.0.5:8088 app crm-app" in first
    assert "5038" not in first and "AMI" not in first
