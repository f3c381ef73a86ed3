"""The preview server over HTTP: every email listed even when a file is broken, marketer HTML only
in a sandbox, test sends only from its own page, only to local host names, and a change event
when a file is saved."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from newsletter.settings import Settings
from tests.e2e.preview_site import ARTICLE, PreviewSite, start_preview, stop_preview


@pytest.fixture
def site(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[PreviewSite]:
    preview = start_preview(make_settings, tmp_path)
    yield preview
    stop_preview(preview)


def test_a_broken_file_is_listed_with_its_error_and_every_other_email_still_is(
    site: PreviewSite,
) -> None:
    (site.content / "draft.md").write_text("---\nsubject: [unclosed\n---\nHi\n", encoding="utf-8")
    (site.sequences / "broken.yaml").write_text("steps: [\n", encoding="utf-8")
    with site.client() as client:
        index = client.get("/")
    assert index.status_code == 200
    page = index.text
    assert 'data-key="campaign/draft"' in page and "front matter is not valid YAML" in page
    assert "Sequence broken" in page and "not valid YAML" in page
    for key in ("system/confirmation", "sequence/welcome/vitamin-k2", f"campaign/{ARTICLE}"):
        assert f'data-key="{key}"' in page


def test_marketer_html_is_served_only_in_a_sandbox(site: PreviewSite) -> None:
    with site.client() as client:
        page = client.get(f"/email/campaign/{ARTICLE}").text
        frame = client.get(f"/frame/campaign/{ARTICLE}")
    assert '<iframe class="email" sandbox title=' in page
    assert "allow-same-origin" not in page
    assert frame.headers["content-security-policy"].startswith("sandbox;")
    assert "script-src" not in frame.headers["content-security-policy"]


def test_the_dark_frame_turns_on_the_emails_dark_rules(site: PreviewSite) -> None:
    with site.client() as client:
        light = client.get(f"/frame/campaign/{ARTICLE}").text
        dark = client.get(f"/frame/campaign/{ARTICLE}?scheme=dark").text
    assert "prefers-color-scheme: dark" in light
    assert "prefers-color-scheme: dark" not in dark and "(min-width: 0px)" in dark


def test_unknown_emails_and_readers_are_named_not_crashed_on(site: PreviewSite) -> None:
    with site.client() as client:
        assert client.get("/email/campaign/no-such-thing").status_code == 404
        assert client.get("/email/campaign/..%2F..%2Fetc%2Fpasswd").status_code == 404
        missing = client.get(f"/email/campaign/{ARTICLE}?reader=subscriber:nobody@example.org")
        assert missing.status_code == 422 and "no subscriber nobody@example.org" in missing.text


def test_a_test_send_needs_the_pages_token_and_its_own_origin(site: PreviewSite) -> None:
    with site.client() as client:
        form = {"to": "x@example.org", "reader": "sample", "csrf": "guessed"}
        assert client.post(f"/send-test/campaign/{ARTICLE}", data=form).status_code == 403
        page = client.get(f"/email/campaign/{ARTICLE}").text
        token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        form["csrf"] = token
        cross = client.post(
            f"/send-test/campaign/{ARTICLE}", data=form, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert cross.status_code == 403
        assert site.captured() == []
        sent = client.post(f"/send-test/campaign/{ARTICLE}", data=form)
        assert sent.status_code == 303
    [message] = site.captured()
    assert message.recipients == ["x@example.org"]


def test_requests_for_another_host_name_are_refused(site: PreviewSite) -> None:
    """A web page cannot reach the preview through DNS rebinding."""
    with site.client() as client:
        assert client.get("/", headers={"Host": "evil.example.com"}).status_code == 421
        assert client.get("/", headers={"Host": "localhost:8025"}).status_code == 200


def test_saving_a_sequence_file_sends_a_change_event(site: PreviewSite) -> None:
    with (
        httpx.Client(base_url=site.url, timeout=httpx.Timeout(20)) as client,
        client.stream("GET", "/events?since=0") as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == "retry: 1000"
        site.edit(site.sequences / "welcome.yaml", "delay: 2d", "delay: 3d")
        received = []
        for line in lines:
            received.append(line)
            if line.startswith("data:"):
                break
    assert "event: change" in received
    with site.client() as client:
        assert "3d after the previous step" in client.get("/").text


def test_a_page_from_before_a_restart_is_told_to_update_at_once(site: PreviewSite) -> None:
    with (
        httpx.Client(base_url=site.url, timeout=httpx.Timeout(20)) as client,
        client.stream("GET", "/events?since=7") as stream,
    ):
        lines = stream.iter_lines()
        assert [next(lines) for _ in range(5)] == [
            "retry: 1000",
            "",
            "id: 0",
            "event: change",
            "data: 0",
        ]
