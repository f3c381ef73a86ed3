"""``newsletter admin …``: dashboard accounts (create one, set its password)."""

from __future__ import annotations

import typer

from newsletter import runtime
from newsletter.admin import accounts

app = typer.Typer(help="The dashboard at /admin: its accounts.", no_args_is_help=True)

PASSWORD_HELP = "The password (asked for, hidden, when not given; 12 characters or more)."


def _password(given: str | None) -> str:
    if given is not None:
        return given
    answer: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return answer


@app.command("create-user")
def create_user(
    email: str = typer.Argument(..., help="The marketer's email address: their sign-in name."),
    password: str | None = typer.Option(None, "--password", help=PASSWORD_HELP),
) -> None:
    """Add a dashboard account."""
    chosen = _password(password)
    with runtime.session() as session:
        account = accounts.create_account(session, email, chosen)
    typer.echo(f"account {account.email} created; sign in at /admin")


@app.command("set-password")
def set_password(
    email: str = typer.Argument(..., help="The account's email address."),
    password: str | None = typer.Option(None, "--password", help=PASSWORD_HELP),
) -> None:
    """Change an account's password; every session of the account is signed out."""
    chosen = _password(password)
    with runtime.session() as session:
        account = accounts.set_password(session, email, chosen)
    typer.echo(f"password of {account.email} changed; its sessions are signed out")
