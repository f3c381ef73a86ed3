"""The marketer dashboard under ``/admin``: accounts, signed-cookie sessions, and pages over the
same domain code the CLI drives.

Part of the shell, so it may use every domain folder: ``subscribers`` (search, history, import,
unsubscribe, erase), ``campaigns`` (the preview catalog and preflight), ``scheduler`` (scheduling,
pause, resume, cancel, progress, sequence status). Only ``web.py`` imports FastAPI and only
``cli.py`` imports Typer; ``accounts``, ``sessions`` and ``overview`` are plain code a test calls.
"""
