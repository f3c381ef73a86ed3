"""Health-content compliance: disease-treatment wording is named with its sentence and place, an
email with such claims never goes out without the medical disclaimer in its footer, and an
article names its sources."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from html import unescape
from pathlib import Path

import pytest

from campaigns import CheckReport, check, load_campaign, sample_links, sample_reader, system_email
from campaigns.compliance import BUILT_IN_TERMS, Text, find_claims, inflections
from campaigns.content import parse_campaign
from campaigns.preflight import check_system_emails
from newsletter.errors import SettingsError
from newsletter.settings import DEFAULT_MEDICAL_DISCLAIMER, Settings, load_settings
from templates import Content, render
from templates.render import prepare

ARTICLE = "vitamin-k2-bone-health"
ROOT = Path(__file__).resolve().parents[2]
# "## Beyond bone" is on line 60 of the article; a paragraph put after it starts on line 62.
AFTER_HEADING = "## Beyond bone"
NEW_PARAGRAPH_LINE = 62


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """A real send's settings, with the shipped default disclaimer."""
    return make_settings(
        base_url="https://news.example.org",
        report="https://news.example.org/files/report.pdf",
        smtp_url="smtp://relay.example.org:587",
    )


def quick_check(path: Path, settings: Settings) -> CheckReport:
    return check(parse_campaign(path), settings, spamassassin=None)


def shown(findings: list) -> str:  # type: ignore[type-arg]
    return "\n".join(str(finding) for finding in findings)


def with_paragraph(broken_copy: Callable[..., Path], paragraph: str) -> Path:
    """The article with ``paragraph`` written from line 62."""
    return broken_copy({AFTER_HEADING: f"{AFTER_HEADING}\n\n{paragraph}\n"})


def parts(message: bytes) -> tuple[str, str]:
    """(HTML with character references unescaped, text) of a rendered message."""
    parsed = message_from_bytes(message, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    html = parsed.get_body(("html",))
    text = parsed.get_body(("plain",))
    assert html is not None and text is not None
    return unescape(html.get_content()), text.get_content()


def one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- the wording


@pytest.mark.parametrize(
    ("sentence", "word"),
    [
        ("This broth heals the gut lining.", "heals"),
        ("Healing the gut takes time.", "Healing"),
        ("Many readers healed their gut this way.", "healed"),
        ("Vitamin K2 cures osteoporosis.", "cures"),
        ("Her bone loss was cured in a month.", "cured"),
        ("Natto has curative powers.", "curative"),
        ("Vitamin K2 treats weak bones.", "treats"),
        ("This is a treatment for leaky gut.", "treatment"),
        ("K2 prevents heart disease.", "prevents"),
        ("Diet is the best prevention of fractures.", "prevention"),
        ("Take it as a preventive measure.", "preventive"),
        ("Vitamin K2 may help to reduce and even reverse arterial calcification.", "reverse"),
        ("Reversing bone loss is possible.", "Reversing"),
        ("The reversal of bone loss was striking.", "reversal"),
        ("Five natural remedies for leaky gut.", "remedies"),
        ("It alleviates joint pain.", "alleviates"),
        ("Magnesium mitigates the risk.", "mitigates"),
        ("No need to get diagnosed.", "diagnosed"),
    ],
)
def test_each_term_family_is_warned_with_its_sentence_and_place(
    broken_copy: Callable[..., Path], settings: Settings, sentence: str, word: str
) -> None:
    report = quick_check(with_paragraph(broken_copy, sentence), settings)
    found = [claim for claim in report.claims if claim.sentence == sentence]
    assert found, shown(report.claims)
    assert found[0].where.endswith(f"broken.md:{NEW_PARAGRAPH_LINE}")
    assert found[0].words == (word,)
    assert f'"{word}"' in shown(report.warnings)  # the claims are warnings, not problems
    assert report.ok, shown(report.problems)  # the default disclaimer is in the footer


def test_a_sentence_over_several_lines_is_shown_whole_at_the_line_of_its_claim(
    broken_copy: Callable[..., Path], settings: Settings
) -> None:
    paragraph = (
        "Researchers have studied vitamin K2 for years. In one small study it\n"
        "appeared to *reverse* some of the calcium build-up in the arteries of\n"
        "older adults. More work is needed."
    )
    report = quick_check(with_paragraph(broken_copy, paragraph), settings)
    [claim] = [claim for claim in report.claims if claim.words == ("reverse",)]
    assert claim.where.endswith(f"broken.md:{NEW_PARAGRAPH_LINE + 1}")
    assert claim.sentence == (
        "In one small study it appeared to reverse some of the calcium build-up in the "
        "arteries of older adults."
    )


def test_an_abbreviation_does_not_cut_a_sentence_short() -> None:
    text = "Ask Dr. Smith first. Some foods, e.g. natto, may prevent bone loss. Eat well."
    [claim] = find_claims([Text("note.md", text, 1)])
    assert claim.sentence == "Some foods, e.g. natto, may prevent bone loss."


def test_the_subject_preheader_and_offer_title_are_named_as_such(
    broken_copy: Callable[..., Path], settings: Settings
) -> None:
    path = broken_copy(
        {
            'subject: "Vitamin K2 and your bones': 'subject: "Heal your bones: Vitamin K2',
            'preheader: "Why vitamin K2': 'preheader: "Prevent fractures. Why vitamin K2',
        }
    )
    claims = {
        claim.where.rpartition(": ")[2]: claim for claim in quick_check(path, settings).claims
    }
    assert (
        claims["subject"].sentence == "Heal your bones: Vitamin K2: where calcium ends up matters"
    )
    assert claims["preheader"].sentence == "Prevent fractures."
    assert claims["title"].where.endswith("blocks/free-report.md: title")
    assert claims["title"].words == ("Heal",)
    assert claims["title"].sentence == (
        "The 7 Core Strategies to Heal the Gut Lining and Manage Leaky Gut"
    )


def test_words_that_only_look_alike_are_not_claims() -> None:
    text = (
        "Healthy eating is good for your health. Current research is curious about "
        "secure hearts; a treaty of reverie. "
        "Read it at https://example.org/treatment or [here]({{ links.web_version }})."
    )
    assert find_claims([Text("note.md", text, 1)]) == []


def test_inflections_cover_the_forms_an_editor_writes() -> None:
    assert {"heal", "heals", "healed", "healing", "healer"} <= set(inflections("heal"))
    assert {"cure", "cures", "cured", "curing", "curative"} <= set(inflections("cure"))
    assert {"treats", "treated", "treating", "treatment", "treatments"} <= set(inflections("treat"))
    assert {"prevents", "prevented", "prevention", "preventive", "preventative"} <= set(
        inflections("prevent")
    )
    assert {"reverses", "reversed", "reversing", "reversal"} <= set(inflections("reverse"))
    assert {"remedies", "remedied", "remedial"} <= set(inflections("remedy"))
    assert "health" not in inflections("heal")
    assert set(BUILT_IN_TERMS) >= {"heal", "cure", "treat", "prevent", "reverse"}


# ---------------------------------------------------------------- the publisher's own terms


def test_the_publisher_extends_the_list_with_words_and_phrases(
    broken_copy: Callable[..., Path], make_settings: Callable[..., Settings]
) -> None:
    paragraph = "This tea detoxes the liver. It is also said to be boosting\nimmunity in winter."
    path = with_paragraph(broken_copy, paragraph)
    base = {"base_url": "https://news.example.org", "report": "https://x.example.org/r.pdf"}

    plain = quick_check(path, make_settings(**base))
    assert [claim.words for claim in plain.claims] == [("Heal",)]  # only the offer's title

    extended = quick_check(path, make_settings(**base, health_terms=["detox", "boost immunity"]))
    found = {claim.words: claim for claim in extended.claims}
    assert found[("detoxes",)].sentence == "This tea detoxes the liver."
    assert found[("detoxes",)].where.endswith(f"broken.md:{NEW_PARAGRAPH_LINE}")
    assert found[("boosting immunity",)].sentence == (
        "It is also said to be boosting immunity in winter."
    )
    assert ("Heal",) in found  # the built-in list still applies


def test_newsletter_health_terms_is_read_comma_separated_and_checked(tmp_path: Path) -> None:
    settings = load_settings(
        {"NEWSLETTER_HEALTH_TERMS": " detox, Boost  Immunity,,"}, tmp_path / "none.toml"
    )
    assert settings.health_terms == ["detox", "boost immunity"]
    with pytest.raises(SettingsError, match="NEWSLETTER_HEALTH_TERMS: expected a comma-sep"):
        load_settings({"NEWSLETTER_HEALTH_TERMS": "detox, 100%"}, tmp_path / "none.toml")


def test_a_disclaimer_is_one_paragraph_and_never_holds_a_control_character(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        {"NEWSLETTER_MEDICAL_DISCLAIMER": "  Not medical\n  advice.  "}, tmp_path / "none.toml"
    )
    assert settings.medical_disclaimer == "Not medical advice."
    with pytest.raises(SettingsError, match="NEWSLETTER_MEDICAL_DISCLAIMER: expected one para"):
        load_settings({"NEWSLETTER_MEDICAL_DISCLAIMER": "Not\x00 advice"}, tmp_path / "none.toml")


# ---------------------------------------------------------------- the disclaimer


def test_the_default_disclaimer_is_shipped_and_an_empty_one_turns_it_off(tmp_path: Path) -> None:
    assert load_settings({}, tmp_path / "none.toml").medical_disclaimer == (
        DEFAULT_MEDICAL_DISCLAIMER
    )
    assert "not medical advice" in DEFAULT_MEDICAL_DISCLAIMER
    empty = load_settings({"NEWSLETTER_MEDICAL_DISCLAIMER": ""}, tmp_path / "none.toml")
    assert empty.medical_disclaimer == ""


def test_claims_without_a_disclaimer_block_the_send_and_say_what_to_set(
    content_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        base_url="https://news.example.org",
        report="https://x.example.org/r.pdf",
        medical_disclaimer="",
    )
    report = quick_check(content_dir / f"{ARTICLE}.md", settings)  # the offer: "Heal the Gut…"
    assert not report.ok
    [problem] = report.problems
    assert problem.where == "NEWSLETTER_MEDICAL_DISCLAIMER"
    assert "makes health claims (1 sentence, the first at" in problem.message
    assert "blocks/free-report.md: title" in problem.message
    assert f'set NEWSLETTER_MEDICAL_DISCLAIMER, for example to "{DEFAULT_MEDICAL_DISCLAIMER}"' in (
        problem.message
    )


def test_without_claims_no_disclaimer_is_needed(
    broken_copy: Callable[..., Path], make_settings: Callable[..., Settings]
) -> None:
    path = broken_copy({"offer: free-report\n": ""})
    settings = make_settings(base_url="https://news.example.org", medical_disclaimer="")
    report = quick_check(path, settings)
    assert report.claims == []
    assert report.ok, shown(report.problems)


def test_claims_with_the_disclaimer_in_the_footer_pass(
    content_dir: Path, settings: Settings
) -> None:
    report = quick_check(content_dir / f"{ARTICLE}.md", settings)
    assert report.ok, shown(report.problems)
    assert report.claims and report.message is not None
    html, text = parts(report.message)
    assert DEFAULT_MEDICAL_DISCLAIMER in one_line(html)
    assert DEFAULT_MEDICAL_DISCLAIMER in one_line(text)


def test_a_layout_that_drops_the_html_footer_is_refused_when_the_email_makes_claims(
    broken_copy: Callable[..., Path], content_dir: Path, settings: Settings
) -> None:
    (content_dir / "bare.mjml").write_text(
        '<mjml lang="en"><mj-body>@@body@@@@offer@@</mj-body></mjml>', encoding="utf-8"
    )
    report = quick_check(broken_copy(front="layout: bare.mjml"), settings)
    assert (
        "the medical disclaimer (NEWSLETTER_MEDICAL_DISCLAIMER) is missing from the footer "
        "of the HTML part"
    ) in shown(report.problems)


@pytest.mark.parametrize("kind", ["article", "confirmation", "welcome", "unsubscribed"])
def test_the_disclaimer_is_in_the_footer_of_both_parts_of_every_email(
    settings: Settings, kind: str
) -> None:
    content = load_campaign(ARTICLE).content if kind == "article" else system_email(kind)
    message = render(
        content,
        sample_reader(content),
        sample_links(settings),
        message_id="<m.1@example.org>",
        settings=settings,
    )
    html, text = parts(message)
    assert DEFAULT_MEDICAL_DISCLAIMER in one_line(html)
    footer = text.replace("\r\n", "\n").split("\n-- \n", 1)[1]
    assert one_line(footer).startswith(DEFAULT_MEDICAL_DISCLAIMER)
    assert max(len(line) for line in footer.splitlines()) <= 78  # wrapped like the body


def test_an_empty_disclaimer_leaves_the_footer_as_it_was(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(base_url="https://news.example.org", medical_disclaimer="")
    content = load_campaign(ARTICLE).content
    html, text = parts(
        render(
            content,
            sample_reader(content),
            sample_links(settings),
            message_id="<m.1@example.org>",
            settings=settings,
        )
    )
    assert "medical advice" not in html and "medical advice" not in text
    assert "disclaimer" not in html


def test_a_disclaimer_of_any_wording_is_printed_literally_and_the_html_stays_7bit(
    make_settings: Callable[..., Settings],
) -> None:
    wording = "Nicht ärztlicher Rat — ask your doctor {{ reader.email }} <b>first</b>."
    settings = make_settings(base_url="https://news.example.org", medical_disclaimer=wording)
    content = load_campaign(ARTICLE).content
    message = render(
        content,
        sample_reader(content),
        sample_links(settings),
        message_id="<m.1@example.org>",
        settings=settings,
    )
    html, text = parts(message)
    assert wording in one_line(html)
    assert "Nicht ärztlicher Rat -- ask your doctor {{ reader.email }} <b>first</b>." in one_line(
        text
    )
    raw_html = message.split(b"Content-Type: text/html", 1)[1]
    assert raw_html.isascii()


def test_the_disclaimer_is_compiled_into_the_template_once_not_rendered_per_reader(
    settings: Settings, make_settings: Callable[..., Settings]
) -> None:
    content = load_campaign(ARTICLE).content
    prepared = prepare(content, settings)
    assert prepare(content, settings) is prepared  # one compiled template for every reader
    assert DEFAULT_MEDICAL_DISCLAIMER in one_line(prepared.compiled.html_source)
    assert DEFAULT_MEDICAL_DISCLAIMER in one_line(prepared.compiled.text_source)
    links = sample_links(settings)
    first = render(
        content,
        sample_reader(content),
        links,
        message_id="<m.1@example.org>",
        settings=settings,
    )
    assert first.count(b"not medical advice") == 2  # HTML and text parts

    other = make_settings(**{**settings.model_dump(), "medical_disclaimer": "Ask your GP."})
    changed = prepare(content, other)
    assert changed is not prepared  # a new disclaimer is a new template version
    assert "Ask your GP." in changed.compiled.html_source


def test_the_same_inputs_still_give_the_same_bytes_with_the_disclaimer(settings: Settings) -> None:
    from datetime import UTC, datetime

    content = load_campaign(ARTICLE).content
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    copies = [
        render(
            content,
            sample_reader(content),
            sample_links(settings),
            message_id="<m.1@example.org>",
            settings=settings,
            now=now,
        )
        for _ in range(2)
    ]
    assert copies[0] == copies[1]


def test_the_welcome_email_claims_too_and_is_covered_by_the_disclaimer(
    settings: Settings, make_settings: Callable[..., Settings]
) -> None:
    reports = check_system_emails(settings)
    assert all(report.ok for report in reports.values()), shown(
        [problem for report in reports.values() for problem in report.problems]
    )
    welcome = reports["welcome"].claims
    assert any(claim.where.endswith("welcome.md: preheader") for claim in welcome)
    assert any(claim.where.endswith("welcome.md:13") for claim in welcome)  # the body
    off = check_system_emails(make_settings(**{**settings.model_dump(), "medical_disclaimer": ""}))
    assert "NEWSLETTER_MEDICAL_DISCLAIMER" in shown(off["welcome"].problems)
    assert off["confirmation"].ok and off["unsubscribed"].ok  # they make no claim


def test_the_offer_block_is_named_by_its_own_file_and_line(
    content_dir: Path, settings: Settings
) -> None:
    block = content_dir / "blocks" / "free-report.md"
    block.write_text(
        block.read_text(encoding="utf-8").replace(
            "---\nOur free", "---\n\nIt may cure you.\n\nOur free"
        ),
        encoding="utf-8",
    )
    report = quick_check(content_dir / f"{ARTICLE}.md", settings)
    [claim] = [claim for claim in report.claims if claim.words == ("cure",)]
    assert claim.where == f"{block}:6"
    assert claim.sentence == "It may cure you."


# ---------------------------------------------------------------- sources


def test_an_article_without_sources_is_warned(
    broken_copy: Callable[..., Path], settings: Settings
) -> None:
    path = broken_copy(
        {
            "sources:\n"
            '  - title: "The Importance of Vitamin K2 for Bone Health"\n'
            '    file: "shared/seed/000_4f949559484ec1ab.txt"\n': "",
            '    note: "The web page this email is edited from; its reference list is on the web '
            'version."\n': "",
        }
    )
    report = quick_check(path, settings)
    assert report.ok, shown(report.problems)  # a warning, not a problem
    assert "broken.md: sources: the article lists no sources" in shown(report.warnings)


def test_an_article_with_sources_but_no_web_url_is_warned(
    broken_copy: Callable[..., Path], settings: Settings
) -> None:
    path = broken_copy({'web_url: "https://www.example.com/articles/vitamin-k2-bone-health"\n': ""})
    report = quick_check(path, settings)
    assert "broken.md: web_url: the article lists sources but has no web_url" in shown(
        report.warnings
    )


def test_the_shipped_article_has_its_sources_and_web_url(settings: Settings) -> None:
    report = check(load_campaign(ARTICLE), settings, spamassassin=None)
    assert "lists no sources" not in shown(report.warnings)
    assert "has no web_url" not in shown(report.warnings)
    assert report.ok, shown(report.problems)


# ---------------------------------------------------------------- as the publisher runs it


def test_the_shipped_article_passes_with_the_default_settings() -> None:
    """As ``newsletter campaign check vitamin-k2-bone-health`` runs it with nothing set (the
    command itself is run in tests/campaigns/test_campaign_cli.py)."""
    report = check(load_campaign(ARTICLE), Settings(), spamassassin=None)
    assert report.ok, shown(report.problems)
    assert 'disease-treatment wording "Heal"' in shown(report.warnings)


def test_campaign_check_blocks_the_shipped_article_when_the_disclaimer_is_turned_off(
    tmp_path: Path,
) -> None:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("NEWSLETTER_")}
    environ["NEWSLETTER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    environ["NEWSLETTER_MEDICAL_DISCLAIMER"] = ""
    blocked = subprocess.run(
        [sys.executable, "-m", "newsletter", "campaign", "check", ARTICLE],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    assert (
        'warning: campaigns/content/blocks/free-report.md: title: disease-treatment wording "Heal"'
        in blocked.stdout
    )
    assert "problem: NEWSLETTER_MEDICAL_DISCLAIMER: the email makes health claims" in blocked.stdout
    assert "set NEWSLETTER_MEDICAL_DISCLAIMER, for example to" in blocked.stdout


def test_the_shipped_content_makes_no_claim_the_article_body_itself(settings: Settings) -> None:
    """The article's own text informs rather than promises; its one claim is the offer's title."""
    content: Content = load_campaign(ARTICLE).content
    claims = check(load_campaign(ARTICLE), settings, spamassassin=None).claims
    assert [claim.where.rpartition("/")[2] for claim in claims] == ["free-report.md: title"]
    assert content.offer is not None and "Heal" in content.offer.title
