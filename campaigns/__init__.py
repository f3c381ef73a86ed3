"""Campaigns and the shipped content: Markdown files with front matter (the article, the system
emails, the free-report offer block), loading them, and the preflight check.

Uses ``templates`` (to render what it checks) and ``newsletter.settings``/``newsletter.errors``.
"""

from campaigns.content import (
    CONTENT_DIR,
    Campaign,
    Correction,
    list_campaigns,
    load_block,
    load_campaign,
    system_email,
)
from campaigns.preflight import CheckReport, Finding, check, sample_links, sample_reader
from campaigns.sequence import (
    SendWindow,
    Sequence,
    Step,
    list_sequences,
    load_sequence,
    parse_sequence,
)

__all__ = [
    "CONTENT_DIR",
    "Campaign",
    "CheckReport",
    "Correction",
    "Finding",
    "SendWindow",
    "Sequence",
    "Step",
    "check",
    "list_campaigns",
    "list_sequences",
    "load_block",
    "load_campaign",
    "load_sequence",
    "parse_sequence",
    "sample_links",
    "sample_reader",
    "system_email",
]
