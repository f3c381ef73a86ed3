"""The preflight check, on the shipped campaign and on a broken copy of each problem it names."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from campaigns import CheckReport, check, load_campaign
from campaigns.content import parse_campaign
from newsletter.settings import Settings
from templates import Content

ARTICLE = "vitamin-k2-bone-health"
RELAY = "smtp://relay.example.org:587"
SPAMASSASSIN = shutil.which("spamassassin") or "/usr/bin/spamassassin"
needs_spamassassin = pytest.mark.skipif(
    not Path(SPAMASSASSIN).exists(), reason="spamassassin is not installed"
)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Settings as a real send would have them: https links, a real report, a relay."""
    return make_settings(
        base_url="https://news.example.org",
        report="https://news.example.org/files/report.pdf",
        smtp_url=RELAY,
    )


def quick_check(path: Path, settings: Settings) -> CheckReport:
    """The check without SpamAssassin (each test of another problem stays fast)."""
    return check(parse_campaign(path), settings, spamassassin=None)


def messages(findings: list) -> str:  # type: ignore[type-arg]
    return "\n".join(str(finding) for finding in findings)


@needs_spamassassin
def test_the_shipped_article_passes_with_a_low_spam_score(settings: Settings) -> None:
    report = check(load_campaign(ARTICLE), settings, spamassassin=SPAMASSASSIN)
    assert report.ok, messages(report.problems)
    assert report.spam_score is not None and report.spam_score <= 2.0
    assert report.html_bytes is not None and report.html_bytes < 102 * 1024
    assert "placeholder domain" in messages(report.warnings)  # web_url on example.com


@needs_spamassassin
def test_a_spam_score_over_two_blocks_and_names_the_rules(
    broken_copy: Callable[..., Path], settings: Settings
) -> None:
    path = broken_copy(
        body_extra="\nDear friend, this is 100% guaranteed, with a money back guarantee!\n"
    )
    report = check(parse_campaign(path), settings, spamassassin=SPAMASSASSIN)
    assert report.spam_score is not None and report.spam_score > 2.0
    assert "spamassassin: score" in messages(report.problems)
    assert "MONEY_BACK" in messages(report.problems)


def test_a_missing_spamassassin_is_a_warning_not_a_problem(
    content_dir: Path, settings: Settings
) -> None:
    report = check(
        parse_campaign(content_dir / f"{ARTICLE}.md"), settings, spamassassin="/nonexistent/sa"
    )
    assert report.ok, messages(report.problems)
    assert "spamassassin: not installed" in messages(report.warnings)


@pytest.mark.parametrize(
    ("replace", "where", "message"),
    [
        (
            {"{{ reader.first_name": "{{ raeder.first_name"},
            "broken.md:21",
            "unknown variable 'raeder'",
        ),
        ({"{{ reader.first_name": "{{ reader.frist_name"}, "broken.md:21", "frist_name"),
        ({'"there" }}': '"there" }'}, "broken.md:21", "template syntax error"),
        (
            {"Beyond bone": "Beyond bone, Lorem ipsum"},
            "broken.md:",
            "placeholder text 'Lorem ipsum'",
        ),
        ({"Beyond bone": "Beyond bone TODO"}, "broken.md:", "placeholder text 'TODO'"),
        (
            {"Osteocalcin is one": "![](https://cdn.example.org/bone.png)\n\nOsteocalcin is one"},
            "broken.md:",
            "image https://cdn.example.org/bone.png has no alt text",
        ),
        (
            {"Beyond bone": "Beyond [bone](http://bones.example.org/)"},
            "broken.md:",
            "'http://bones.example.org/' is not an absolute https URL",
        ),
        (
            {"Beyond bone": "Beyond [bone](/bones)"},
            "broken.md:",
            "'/bones' is not an absolute https URL",
        ),
        (
            {
                'subject: "Vitamin K2': 'subject: "An exceedingly long subject line that goes '
                + "on about Vitamin K2"
            },
            "broken.md: subject",
            "keep it to 78 or fewer",
        ),
        (
            {
                'preheader: "Why vitamin K2 matters for bone health, and where the research '
                + 'stands."': 'preheader: ""'
            },
            "broken.md: preheader",
            "the preheader is empty",
        ),
        (
            {'subject: "Vitamin K2 and your bones: where calcium ends up matters"': 'subject: ""'},
            "broken.md: subject",
            "the subject is empty",
        ),
    ],
)
def test_a_broken_copy_is_refused_naming_where_the_problem_is(
    broken_copy: Callable[..., Path],
    settings: Settings,
    replace: dict[str, str],
    where: str,
    message: str,
) -> None:
    report = quick_check(broken_copy(replace), settings)
    assert not report.ok
    found = [str(problem) for problem in report.problems if message in problem.message]
    assert found, messages(report.problems)
    assert where in found[0]


@pytest.mark.parametrize(
    ("leftover", "message"),
    [
        ("{% raw %}{{ reader.name }}{% endraw %}", "unresolved placeholder '{{ reader.name }}'"),
        ("*|FNAME|*", "placeholder text '*|FNAME|*'"),
        ("%%first_name%%", "placeholder text '%%first_name%%'"),
    ],
)
def test_a_placeholder_left_unresolved_or_from_another_tool_is_refused(
    broken_copy: Callable[..., Path], settings: Settings, leftover: str, message: str
) -> None:
    report = quick_check(broken_copy({"Beyond bone": f"Beyond bone {leftover}"}), settings)
    assert message in messages(report.problems)
    assert "broken.md:60" in messages(report.problems)


def test_html_over_102_kb_is_refused_because_gmail_clips_it(
    broken_copy: Callable[..., Path], settings: Settings
) -> None:
    paragraph = "Vitamin K2 keeps calcium where it belongs, in the bone. " * 20
    report = quick_check(broken_copy(body_extra=("\n" + paragraph + "\n") * 110), settings)
    assert "Gmail clips emails over 102 KB" in messages(report.problems)


def test_a_layout_without_the_footer_is_refused_for_its_missing_unsubscribe_link_and_address(
    broken_copy: Callable[..., Path], content_dir: Path, settings: Settings
) -> None:
    (content_dir / "bare.mjml").write_text(
        '<mjml lang="en"><mj-body>@@body@@</mj-body></mjml>', encoding="utf-8"
    )
    report = quick_check(broken_copy(front="layout: bare.mjml"), settings)
    text = messages(report.problems)
    assert "no unsubscribe link in the HTML and text parts" in text
    assert "the postal address is missing from the footer" in text


def test_an_empty_postal_address_is_refused(
    content_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        base_url="https://news.example.org",
        report="https://x.example.org/r.pdf",
        postal_address=" ",
    )
    report = quick_check(content_dir / f"{ARTICLE}.md", settings)
    assert "NEWSLETTER_POSTAL_ADDRESS: no postal address" in messages(report.problems)


def test_the_sample_report_blocks_a_real_relay_but_only_warns_for_the_capture_inbox(
    content_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    path = content_dir / f"{ARTICLE}.md"
    relay = quick_check(path, make_settings(base_url="https://news.example.org", smtp_url=RELAY))
    assert "NEWSLETTER_REPORT: NEWSLETTER_REPORT is unset" in messages(relay.problems)
    local = quick_check(path, make_settings(base_url="https://news.example.org"))
    assert local.ok, messages(local.problems)
    assert "SAMPLE report" in messages(local.warnings)


def test_http_unsubscribe_links_block_a_real_relay_but_only_warn_locally(
    content_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    path = content_dir / f"{ARTICLE}.md"
    relay = quick_check(
        path, make_settings(base_url="http://news.example.org", smtp_url=RELAY, report="r.pdf")
    )
    assert "NEWSLETTER_BASE_URL is http://news.example.org" in messages(relay.problems)
    local = quick_check(path, make_settings(base_url="http://127.0.0.1:8000", report="r.pdf"))
    assert local.ok and "NEWSLETTER_BASE_URL" in messages(local.warnings)


def test_a_template_that_reaches_for_internals_is_a_problem_not_a_crash(
    broken_copy: Callable[..., Path], settings: Settings
) -> None:
    path = broken_copy({"Beyond bone": "Beyond {{ reader.__class__.__mro__ }}"})
    report = quick_check(path, settings)
    assert "not allowed in a template" in messages(report.problems)


def test_bare_content_can_be_checked_too(settings: Settings) -> None:
    from campaigns import system_email

    for kind in ("confirmation", "welcome", "unsubscribed"):
        report = check(system_email(kind), settings, spamassassin=None)
        assert report.ok, messages(report.problems)
        assert report.name == kind
    bare = Content(subject="Hello", preheader="A short note", body="Hi {{ reader.name }}.\n")
    report = check(bare, settings, spamassassin=None)
    assert report.ok, messages(report.problems)
