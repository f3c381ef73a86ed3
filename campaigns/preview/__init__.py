"""The preview server's domain side: every email the product can send (system emails, sequence
steps, campaigns) rendered for a sample or real reader by the same ``render`` that sends, its
preflight result, and the change feed that makes open pages reload when a file is saved.

Uses ``templates`` (rendering), ``campaigns`` (content, sequences, preflight), ``subscribers``
(a real reader picked by address) and the shell's settings and database. Only ``web.py`` imports
the web framework; the shell (``newsletter.preview``) assembles the app and wires "send test".
"""

from campaigns.preview.catalog import Catalog, Entry, Rendered, Section
from campaigns.preview.live import ChangeFeed
from campaigns.preview.readers import ReaderChoice, load_sample_readers

__all__ = [
    "Catalog",
    "ChangeFeed",
    "Entry",
    "ReaderChoice",
    "Rendered",
    "Section",
    "load_sample_readers",
]
