"""The emails: MJML layouts and partials, and the renderer that turns content into each reader's
message (MJML compiled once per template version, Jinja per reader in a sandbox, a real plain-text
part, the headers, DKIM).

Uses ``newsletter.settings`` and ``newsletter.errors`` only; ``campaigns`` and ``scheduler`` use it.
"""

from templates.model import Button, Content, Links, Offer, Reader
from templates.render import clear_caches, prepare, render

__all__ = ["Button", "Content", "Links", "Offer", "Reader", "clear_caches", "prepare", "render"]
