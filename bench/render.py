"""Personalised messages per second, complete bytes ready for SMTP: the renderer against the naive
path (MRML compile + Jinja + a stdlib ``EmailMessage`` built and serialised for every reader).

    .venv/bin/python -m bench.render [--readers 20000] [--naive-readers 500] [--rounds 3]

Both paths render the shipped article (``vitamin-k2-bone-health``, with the free-report offer) for
the same distinct readers, in one process on one core. Each figure is the median of the rounds;
CPU figures divide by the process's CPU time, which on a shared machine is the fairer "one core".
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from mjml import mjml2html

from campaigns import load_campaign
from newsletter.settings import Settings
from templates import Content, Links, Reader, prepare, render
from templates.compile import _ascii_html, assemble, text_source, wrap_html
from templates.markdown import Protected
from templates.sandbox import HTML_ENV, TEXT_ENV

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
BASE = "https://news.example.org"


def readers(count: int) -> list[tuple[Reader, Links, str]]:
    people = []
    for index in range(count):
        token = f"{index:08d}.{index * 7919 % 1000003:07d}.c2lnbmVkLXRva2Vu"
        reader = Reader(
            email=f"reader{index}@example.net",
            name=f"Reader Number{index}",
            has_report=index % 3 == 0,
        )
        links = Links(
            unsubscribe=f"{BASE}/unsubscribe/{token}",
            preferences=f"{BASE}/preferences/{token}",
            report=f"{BASE}/report/{token}",
        )
        people.append((reader, links, f"<k2.{index}@news.example.org>"))
    return people


def timed(run: Callable[[], int]) -> tuple[float, float]:
    """(messages per wall second, messages per CPU second) for one round."""
    wall, cpu = time.perf_counter(), time.process_time()
    count = run()
    return count / (time.perf_counter() - wall), count / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=20_000)
    parser.add_argument("--naive-readers", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dkim-readers", type=int, default=100, help="0 skips the DKIM figure")
    args = parser.parse_args()

    settings = Settings(
        sender="Gut Health Letter <news@example.org>",
        base_url=BASE,
        postal_address="Gut Health Letter, 1 Sample Street, Springfield, USA",
    )
    content = load_campaign("vitamin-k2-bone-health").content
    people = readers(args.readers)

    compile_start = time.perf_counter()
    prepared = prepare(content, settings)
    compile_ms = (time.perf_counter() - compile_start) * 1000
    sample = render(content, *people[1][:2], message_id=people[1][2], settings=settings, now=NOW)
    assert message_from_bytes(sample, policy=policy.default).get_content_type() == (
        "multipart/alternative"
    )

    def fast() -> int:
        for reader, links, message_id in people:
            render(content, reader, links, message_id=message_id, settings=settings, now=NOW)
        return len(people)

    # The naive path: the same MJML source and the same sandboxed Jinja, but MRML compiles for
    # every reader and a stdlib EmailMessage is built and serialised for every reader.
    source, protected = assemble(content, prepared.compiled.sender, settings.postal_address)
    html_template = HTML_ENV.from_string(
        wrap_html(_ascii_html(protected.restore(mjml2html(source, fonts={}))))
    )
    text_template = TEXT_ENV.from_string(
        text_source(content, prepared.compiled.sender, settings.postal_address)
    )
    naive_people = people[: args.naive_readers]

    def naive() -> int:
        for reader, links, message_id in naive_people:
            compiled = mjml2html(source, fonts={})
            Protected.restore(protected, compiled)
            context = {"reader": reader, "campaign": prepared.compiled.campaign, "links": links}
            html = html_template.render(context)
            text = text_template.render(context)
            message = EmailMessage()
            message["From"] = settings.sender
            message["To"] = f"{reader.name} <{reader.email}>"
            message["Subject"] = content.subject
            message["Date"] = NOW
            message["Message-ID"] = message_id
            message["List-Id"] = '"Gut Health Letter" <vitamin-k2-bone-health.example.org>'
            message["List-Unsubscribe"] = (
                f"<{links.unsubscribe}>, <mailto:news@example.org?subject=unsubscribe>"
            )
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            message.set_content(text)
            message.add_alternative(html, subtype="html")
            message.as_bytes(policy=policy.SMTP)
        return len(naive_people)

    fast_rounds = [timed(fast) for _ in range(args.rounds)]
    naive_rounds = [timed(naive) for _ in range(args.rounds)]
    fast_wall = statistics.median(r[0] for r in fast_rounds)
    fast_cpu = statistics.median(r[1] for r in fast_rounds)
    naive_wall = statistics.median(r[0] for r in naive_rounds)
    naive_cpu = statistics.median(r[1] for r in naive_rounds)

    print(f"article email: {len(sample):,} bytes per message; first compile {compile_ms:.1f} ms")
    print(
        f"render():   {fast_wall:>9,.0f} messages/s wall  {fast_cpu:>9,.0f} /s CPU  "
        f"({len(people):,} readers x {args.rounds} rounds)"
    )
    print(
        f"naive path: {naive_wall:>9,.0f} messages/s wall  {naive_cpu:>9,.0f} /s CPU  "
        f"({len(naive_people):,} readers x {args.rounds} rounds)"
    )
    print(f"speed-up:   {fast_wall / naive_wall:.1f}x wall, {fast_cpu / naive_cpu:.1f}x CPU")
    if args.dkim_readers:
        dkim_wall, dkim_cpu = dkim_rate(settings, content, people[: args.dkim_readers])
        print(
            f"render() + DKIM (2048-bit RSA, dkimpy): {dkim_wall:,.0f} messages/s wall  "
            f"{dkim_cpu:,.0f} /s CPU  ({args.dkim_readers} readers)"
        )


def dkim_rate(
    settings: Settings, content: Content, people: list[tuple[Reader, Links, str]]
) -> tuple[float, float]:
    """Messages per second when every copy is DKIM-signed with a fresh 2048-bit key."""
    from dkim import dknewkey

    with tempfile.TemporaryDirectory() as folder:
        key = Path(folder) / "dkim.key"
        dknewkey.GenRSAKeys(str(key), verbose=False)
        signing = settings.model_copy(update={"dkim_key": key})

        def signed() -> int:
            for reader, links, message_id in people:
                render(content, reader, links, message_id=message_id, settings=signing, now=NOW)
            return len(people)

        return timed(signed)


if __name__ == "__main__":
    main()
