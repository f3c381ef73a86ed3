"""Settings come from NEWSLETTER_* variables and newsletter.toml, and a bad value is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.errors import SettingsError
from newsletter.settings import load_settings


def test_defaults_run_on_sqlite_and_the_capture_inbox(tmp_path: Path) -> None:
    settings = load_settings({}, toml_file=tmp_path / "absent.toml")
    assert settings.database_url == "sqlite:///newsletter.db"
    assert settings.uses_capture_inbox
    assert settings.timezone == "UTC"


def test_environment_wins_over_the_toml_file(tmp_path: Path) -> None:
    toml = tmp_path / "newsletter.toml"
    toml.write_text(
        'base_url = "https://file.example"\nsend_rate = 7\nfrom = "A <a@file.example>"\n'
    )
    settings = load_settings({"NEWSLETTER_BASE_URL": "https://env.example/"}, toml_file=toml)
    assert settings.base_url == "https://env.example"
    assert settings.send_rate == 7
    assert settings.sender_address == "a@file.example"


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("NEWSLETTER_DATABASE_URL", "nonsense", "SQLAlchemy database URL"),
        ("NEWSLETTER_SMTP_URL", "http://mail.example", "smtp://"),
        ("NEWSLETTER_BASE_URL", "mail.example", "http(s) URL"),
        ("NEWSLETTER_SEND_RATE", "-3", "positive number"),
        ("NEWSLETTER_SEND_CONCURRENCY", "many", "whole number"),
        ("NEWSLETTER_TIMEZONE", "Mars/Olympus", "IANA time zone"),
        ("NEWSLETTER_SIGNUP_LIMIT", "lots", "limits library"),
        ("NEWSLETTER_FROM", "nobody", "address"),
    ],
)
def test_a_bad_value_names_the_setting_and_what_it_expects(
    tmp_path: Path, variable: str, value: str, named: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({variable: value}, toml_file=tmp_path / "absent.toml")
    assert raised.value.message.startswith(f"{variable}: expected")
    assert named in raised.value.message


def test_a_plain_postgresql_url_uses_psycopg_3(tmp_path: Path) -> None:
    settings = load_settings(
        {"NEWSLETTER_DATABASE_URL": "postgresql://u@db.example/news"},
        toml_file=tmp_path / "absent.toml",
    )
    assert settings.database_url == "postgresql+psycopg://u@db.example/news"


def test_a_broken_toml_file_is_named(tmp_path: Path) -> None:
    toml = tmp_path / "newsletter.toml"
    toml.write_text("base_url = ")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings({}, toml_file=toml)
