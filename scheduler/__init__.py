"""Sending: the deliveries outbox, the sender, the worker loop, and the capture inbox.

``deliveries`` (the outbox rows and every query on them: enqueue, claim, outcomes, counts),
``smtp`` (one reused, pipelined SMTP connection), ``worker`` (``run_worker``: the pipeline, top
to bottom), ``rendering`` (``Renderer``: a message key and a reader to the bytes of their copy),
``campaigns`` (campaign runs: schedule, pause, resume, cancel, status), ``clock`` (APScheduler
with its SQLAlchemy job store: ``schedule_campaign``, ``start_clock``, ``run_clock``), ``cli``
(``newsletter worker``, ``newsletter deliveries`` and the scheduling ``newsletter campaign``
commands), ``capture`` (the local capture inbox), ``sequences`` (enrolments, and
``decide_step``: the one decision on a reader's next step), ``cadence`` (``release``: the
per-reader caps), ``plan`` / ``explain`` / ``simulate`` / ``diff`` (the marketer's views, each
computed by those same decisions).

Uses subscribers (who may be mailed), templates (rendering) and campaigns (what to send), plus
the shell's settings and database session.
"""
