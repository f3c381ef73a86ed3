"""The preview's catalog: every email the product can send, by key, rendered by the one renderer;
the sample readers file; the preheader an inbox shows; error locations."""

from __future__ import annotations

from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from campaigns import system_email
from campaigns.preflight import sample_links, sample_reader
from campaigns.preview.catalog import Catalog, as_dark, preheader_of
from campaigns.preview.readers import choose_reader, load_sample_readers
from campaigns.preview.web import located
from newsletter.errors import ContentError, NotFoundError
from newsletter.settings import Settings
from templates import render


@pytest.fixture
def catalog(make_settings: Callable[..., Settings]) -> Catalog:
    return Catalog(make_settings())


def test_every_key_of_the_index_names_an_email_that_renders(catalog: Catalog) -> None:
    keys = [entry.key for section in catalog.sections() for entry in section.entries]
    assert keys == [
        "system/confirmation",
        "system/welcome",
        "system/unsubscribed",
        "sequence/welcome/welcome-report",
        "sequence/welcome/vitamin-k2",
        "campaign/vitamin-k2-bone-health",
    ]
    for key in keys:
        content = catalog.content(key)
        rendered = catalog.render(content, sample_reader(content), key)
        assert rendered.subject and rendered.html and rendered.text


def test_the_preview_is_what_is_sent(catalog: Catalog) -> None:
    content = system_email("welcome")
    reader = sample_reader(content)
    shown = catalog.render(content, reader, "system/welcome")
    sent = render(
        content,
        reader,
        sample_links(catalog.settings),
        message_id="<preview.system-welcome@example.org>",
        settings=catalog.settings,
        now=parsedate_to_datetime(next(v for n, v in shown.headers if n == "Date")),
    )
    assert shown.raw == sent


@pytest.mark.parametrize("key", ["campaign/../secrets", "system/nope", "other/x", "campaign/a/b"])
def test_keys_outside_the_catalog_are_not_found(catalog: Catalog, key: str) -> None:
    with pytest.raises(NotFoundError):
        catalog.content(key)


def test_the_shipped_sample_readers_load_and_each_can_be_chosen(catalog: Catalog) -> None:
    samples = load_sample_readers()
    content = catalog.content("campaign/vitamin-k2-bone-health")
    for sample in samples:
        assert choose_reader(f"sample:{sample.id}", content, samples, None).reader == sample.reader
    with pytest.raises(NotFoundError):
        choose_reader("sample:nobody", content, samples, None)


def test_a_readers_file_with_an_unknown_field_names_the_file_and_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "readers.yaml"
    path.write_text("readers:\n  - {id: a, email: a@example.org, nmae: Ann}\n", encoding="utf-8")
    with pytest.raises(ContentError, match=r"readers.yaml: reader 1: unknown field\(s\) nmae"):
        load_sample_readers(path)


def test_the_preheader_is_the_hidden_text_without_its_invisible_padding() -> None:
    html = (
        '<body><div style="display: none; max-height:0">Read this \u034f\u00a0\u034f</div><p>x</p>'
    )
    assert preheader_of(html) == "Read this"


def test_dark_mode_turns_on_the_dark_rules_and_off_the_light_ones() -> None:
    css = "@media (prefers-color-scheme: dark) {a{}} @media (prefers-color-scheme:light) {b{}}"
    assert as_dark(css) == "@media (min-width: 0px) {a{}} @media (max-width: 0px) {b{}}"


def test_an_error_is_split_into_file_line_and_message_with_the_lines_around_it(
    tmp_path: Path,
) -> None:
    source = tmp_path / "draft.md"
    source.write_text("one\ntwo\nthree {{ x |\nfour\n", encoding="utf-8")
    where = located(f"{source}:3: template syntax error: unexpected end")
    assert (where["file"], where["line"]) == (str(source), 3)
    assert where["message"] == "template syntax error: unexpected end"
    assert where["excerpt"] == [(1, "one"), (2, "two"), (3, "three {{ x |"), (4, "four")]
    assert located("MJML does not compile: oops")["file"] is None
