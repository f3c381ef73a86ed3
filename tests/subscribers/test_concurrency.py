"""Simultaneous signups: each distinct address lands exactly once, and one address hammered
200 times at once makes one reader and one confirmation email."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import func, select

from subscribers.models import Consent, StatusChange, Subscriber
from tests.subscribers.conftest import Site

SIMULTANEOUS = 200


def post_all_at_once(url: str, bodies: list[dict[str, str]]) -> list[int]:
    """POST every body concurrently; in a thread of its own, since Playwright's sync API may
    have left an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _post_all(url, bodies)).result()


async def _post_all(url: str, bodies: list[dict[str, str]]) -> list[int]:
    limits = httpx.Limits(max_connections=SIMULTANEOUS, max_keepalive_connections=SIMULTANEOUS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        responses = await asyncio.gather(*(client.post("/subscribe", json=b) for b in bodies))
    return [response.status_code for response in responses]


def test_200_simultaneous_signups_of_distinct_addresses_all_land_once(site: Site) -> None:
    bodies = [{"email": f"reader{n}@example.org"} for n in range(SIMULTANEOUS)]
    codes = post_all_at_once(site.url, bodies)
    assert codes == [202] * SIMULTANEOUS
    assert site.count(Subscriber) == SIMULTANEOUS
    assert site.count(Consent) == SIMULTANEOUS
    assert site.count(StatusChange) == SIMULTANEOUS
    mails = site.smtp.wait_for(lambda mails: len(mails) >= SIMULTANEOUS, timeout=60)
    recipients = sorted(mail.rcpt_tos[0] for mail in mails)
    assert recipients == sorted(body["email"] for body in bodies)


def test_200_simultaneous_signups_of_one_address_make_one_reader_and_one_email(
    site: Site,
) -> None:
    bodies = [{"email": "same@example.org"}] * SIMULTANEOUS
    codes = post_all_at_once(site.url, bodies)
    assert codes == [202] * SIMULTANEOUS
    with site.database.session() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 1
        assert session.scalar(select(func.count()).select_from(Consent)) == 1
    site.smtp.wait_for(lambda mails: len(mails) >= 1)
    time.sleep(1.0)
    assert len(site.smtp.messages) == 1
