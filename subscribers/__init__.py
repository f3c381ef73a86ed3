"""The subscriber store and everything a reader does to it.

Owns the models and migrations, signup with double opt-in, consent records, unsubscribe,
preferences, segment queries, import/export/erase, and the public pages for them. Uses only the
shell's settings, database session and errors; later work (sending a confirmation email) is
asked for through the ``SubscriberEvents`` hook the shell wires.
"""
