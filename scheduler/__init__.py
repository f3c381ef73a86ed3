"""Sending: the deliveries outbox, the sender, the worker loop, and the capture inbox.

``deliveries`` (the outbox rows and every query on them: enqueue, claim, outcomes, counts),
``smtp`` (one reused, pipelined SMTP connection), ``worker`` (``run_worker``: the pipeline, top
to bottom), ``rendering`` (a placeholder renderer until templates are wired), ``cli`` (``newsletter
worker`` and ``newsletter deliveries``), ``capture`` (the local capture inbox).

Uses subscribers (who may be mailed), templates (rendering) and campaigns (what to send), plus
the shell's settings and database session.
"""
