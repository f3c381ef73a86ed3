"""``newsletter subscribers …``: import, export, list, show and erase readers."""

from __future__ import annotations

import typer

app = typer.Typer(help="Readers: import, export, list, show, erase.", no_args_is_help=True)
