"""Fixtures for the delivery tests: a migrated database and an SMTP server that misbehaves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from newsletter import runtime
from newsletter.db import Database
from newsletter.settings import Settings
from scheduler import sequence_cli
from tests.conftest import SmtpServer, serving
from tests.scheduler.delivery_helpers import SENDER, FaultyHandler, PipeliningHandler


@pytest.fixture
def settings_for(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def build(database: Database, url: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database.url,
            "smtp_url": url,
            "sender": SENDER,
            "send_rate": 100_000,
            "send_concurrency": 4,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@pytest.fixture
def pipelining_server() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) that offers PIPELINING, as postfix and most relays do."""
    with serving(PipeliningHandler()) as server:
        yield server


@pytest.fixture(params=["pipelining", "one command at a time"])
def relay(request: pytest.FixtureRequest) -> SmtpServer:
    """Each kind of relay in turn: with PIPELINING (one round trip a message), then without."""
    name = "pipelining_server" if request.param == "pipelining" else "smtp_server"
    server: SmtpServer = request.getfixturevalue(name)
    return server


@pytest.fixture
def faulty_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, FaultyHandler]]:
    """A misbehaving server; offers PIPELINING unless parametrized (indirect) with False."""
    handler = FaultyHandler(pipelining=getattr(request, "param", True))
    with serving(handler) as server:
        yield server.url, handler


@pytest.fixture
def cli_settings(make_settings: Callable[..., Settings]) -> Settings:
    """The settings ``sequence_command`` runs with; a test module overrides it to change them."""
    return make_settings()


@pytest.fixture
def sequence_command(
    cli_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Result]]:
    """``newsletter sequence …`` in process, its group registered as the shell registers it."""
    monkeypatch.setattr(runtime, "_settings", cli_settings)
    shell = typer.Typer()
    shell.add_typer(sequence_cli.app, name="sequence")

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(shell, list(args))

    yield invoke
    runtime.reset()
