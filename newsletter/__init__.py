"""The shell: settings, the database, the CLI entry point and the web app.

It assembles the domain folders (subscribers, templates, campaigns, scheduler) into the
``newsletter`` command and the FastAPI app; it holds no domain logic of its own.
"""
