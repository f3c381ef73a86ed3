"""Sending: the deliveries outbox, the sender, the worker loop, and the capture inbox.

Uses subscribers (who may be mailed), templates (rendering) and campaigns (what to send), plus
the shell's settings and database session.
"""
