"""Health-content compliance: disease-treatment wording, the medical disclaimer, and sources.

A newsletter about health may inform; it may not sell a cure. Regulators read words such as
*heal*, *cure*, *treat*, *prevent* and *reverse* next to a condition as a claim that the thing
sold or recommended acts on a disease. The preflight check therefore:

- finds every sentence with such wording (``find_claims``), in every inflection (heals, healing,
  cured, treatment, prevents, reversal…), naming the sentence and where it is written (file and
  line, or the subject, preheader, button or offer block). The built-in list (``BUILT_IN_TERMS``)
  is extended by the publisher's own words and phrases in ``NEWSLETTER_HEALTH_TERMS``. Each
  sentence found is a warning: an editor reads it, and a claim stays only if it is supported.
- blocks a send that makes such claims when the footer carries no medical disclaimer
  (``NEWSLETTER_MEDICAL_DISCLAIMER``, on by default with ``DEFAULT_MEDICAL_DISCLAIMER``).
- warns about an article that names no sources, or names them without the ``web_url`` of the
  full article where readers can follow them (``check_sources``).

This module only reads text; ``campaigns.preflight`` turns what it finds into the report.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from campaigns.content import CONTENT_DIR, Campaign, shown, split_front_matter
from newsletter.errors import NewsletterError
from newsletter.settings import DEFAULT_MEDICAL_DISCLAIMER
from templates import Content
from templates.markdown import ASCII_PUNCTUATION
from templates.sandbox import JINJA_PATTERN

# The verbs (and a noun or two) of disease treatment. Each is matched with its inflections, so
# "heal" also finds heals, healed, healing and healer, but never health or healthy.
BUILT_IN_TERMS: tuple[str, ...] = (
    "heal",
    "cure",
    "treat",
    "prevent",
    "reverse",
    "remedy",
    "mitigate",
    "alleviate",
    "diagnose",
)

# Word endings tried on a term: (ending of the term that is dropped, endings added).
_E_ENDINGS = ("", "s", "d", "r", "rs")  # cure: cures, cured, curer
_E_STEM_ENDINGS = ("ing", "ion", "ions", "al", "als", "ative")  # curing, reversal, curative
_Y_STEM_ENDINGS = ("ies", "ied", "ial", "ially")  # remedy: remedies, remedied, remedial
_ENDINGS = (
    *("", "s", "es", "ed", "ing", "er", "ers"),  # heal: heals, healed, healing, healer
    *("ment", "ments", "ion", "ions", "ive", "ative", "able"),  # treatment, prevention, -ative
)
_VOWELS = "aeiou"

# A sentence ends at . ! or ? (with closing quotes, brackets or emphasis) before a space.
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u2019\u201d)\]*_]*(?=\s|$)")
# Abbreviations whose full stop does not end a sentence.
_ABBREVIATION = re.compile(
    r"(?<![\w.])(?:e\.g|i\.e|cf|dr|mr|mrs|ms|prof|vs|approx|fig|no)\.$", re.I
)
# A Markdown block starts a new sentence even without punctuation: a blank line, a heading, a
# list item or a quote; a heading also ends at its line's end.
_BLOCK_START = re.compile(r"\n[ \t]*\n|\n(?=[ \t]*(?:#{1,6}\s|[-*+]\s|\d+[.)]\s|>))")
_HEADING = re.compile(r"^[ \t]*#{1,6}\s.*$", re.M)
# Text that is not prose: Jinja, link targets and bare URLs (a path may hold "treatment").
_NOT_PROSE = re.compile(JINJA_PATTERN.pattern + r"|\]\([^)\s]*\)|https?://\S+", re.DOTALL)
_MARKDOWN_MARKS = re.compile(
    r"^[ \t]*(?:#{1,6}|[-*+]|\d+[.)]|>)[ \t]+|(?<!\w)[*_]{1,3}|[*_]{1,3}(?!\w)", re.M
)
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
MAX_SENTENCE = 300


@dataclass(frozen=True)
class Claim:
    """One sentence with disease-treatment wording: where it is written, the words that make it
    a claim (as written), and the sentence itself (Markdown marks taken out)."""

    where: str
    words: tuple[str, ...]
    sentence: str

    @property
    def message(self) -> str:
        words = ", ".join(f'"{word}"' for word in self.words)
        return f'disease-treatment wording {words} in: "{self.sentence}"'

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class Text:
    """A piece of text a marketer wrote, with where it is: ``first_line`` is the file line its
    first line is on (None for a one-line field such as the subject, named by ``where``)."""

    where: str
    text: str
    first_line: int | None = None

    def place(self, line_offset: int) -> str:
        if self.first_line is None:
            return self.where
        return f"{self.where}:{self.first_line + line_offset}"


# ---------------------------------------------------------------- terms


def inflections(word: str) -> tuple[str, ...]:
    """The forms of ``word`` that are matched: ``heal`` gives heal, heals, healed, healing,
    healer…; ``cure`` gives cures, cured, curing, curative…; ``remedy`` gives remedies…"""
    word = word.lower()
    if len(word) < 3:
        return (word,)
    if word.endswith("e"):
        stem = word[:-1]
        forms = [word + ending for ending in _E_ENDINGS]
        forms += [stem + ending for ending in _E_STEM_ENDINGS]
    elif word.endswith("y") and word[-2] not in _VOWELS:
        stem = word[:-1]
        forms = [word, word + "ing"] + [stem + ending for ending in _Y_STEM_ENDINGS]
    else:
        forms = [word + ending for ending in _ENDINGS]
        if _doubles(word):  # stop: stopped, stopping
            forms += [word + word[-1] + ending for ending in ("ed", "ing", "er")]
    return tuple(dict.fromkeys(forms))


def _doubles(word: str) -> bool:
    """A short word ending consonant-vowel-consonant doubles its last letter (stop, stopped)."""
    return (
        len(word) <= 4
        and word[-1] not in _VOWELS + "wxy"
        and word[-2] in _VOWELS
        and word[-3] not in _VOWELS
    )


@lru_cache(maxsize=16)
def terms_pattern(extra_terms: tuple[str, ...] = ()) -> re.Pattern[str]:
    """One pattern for the built-in terms and ``extra_terms`` (words or phrases; a phrase's first
    word is inflected and its words may be split across lines: "boost immunity" also finds
    "boosts immunity")."""
    alternatives = []
    for term in dict.fromkeys((*BUILT_IN_TERMS, *extra_terms)):
        first, *rest = term.lower().split()
        forms = "|".join(re.escape(form) for form in inflections(first))
        tail = "".join(r"\s+" + re.escape(word) for word in rest)
        alternatives.append(f"(?:{forms}){tail}")
    # Longest alternatives first, so that "treatment" wins over "treat".
    alternatives.sort(key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?![\w])", re.I)


# ---------------------------------------------------------------- finding claims


def find_claims(pieces: Iterable[Text], extra_terms: Sequence[str] = ()) -> list[Claim]:
    """Every sentence of ``pieces`` with disease-treatment wording, in order."""
    pattern = terms_pattern(tuple(extra_terms))
    claims: list[Claim] = []
    for piece in pieces:
        claims.extend(_claims_in(piece, pattern))
    return claims


def _claims_in(piece: Text, pattern: re.Pattern[str]) -> Iterator[Claim]:
    text = piece.text
    prose = _NOT_PROSE.sub(lambda match: re.sub(r"[^\n]", " ", match.group(0)), text)
    matches = list(pattern.finditer(prose))
    if not matches:
        return
    starts, ends = _sentence_bounds(prose)
    found: dict[tuple[int, int], list[re.Match[str]]] = {}
    for match in matches:
        start = starts[bisect_right(starts, match.start()) - 1]
        end = ends[bisect_left(ends, match.end())]
        found.setdefault((start, end), []).append(match)
    newlines = [newline.start() for newline in re.finditer("\n", text)]
    for (start, end), hits in found.items():
        line = bisect_left(newlines, hits[0].start())  # lines before the first hit's
        words = tuple(dict.fromkeys(" ".join(hit.group(0).split()) for hit in hits))
        yield Claim(piece.place(line), words, _shown_sentence(text[start:end]))


def _sentence_bounds(text: str) -> tuple[list[int], list[int]]:
    """Sorted starts and ends of the sentences of ``text`` (a start is where the text after the
    end of the previous sentence begins; leading space is trimmed when shown)."""
    starts = [0]
    ends = [len(text)]
    for match in _SENTENCE_END.finditer(text):
        if _ABBREVIATION.search(text, max(0, match.start() - 8), match.start() + 1):
            continue  # "e.g. vitamin K2" and "Dr. Smith" go on
        ends.append(match.end())
        starts.append(match.end())
    for match in _BLOCK_START.finditer(text):
        ends.append(match.start())
        starts.append(match.end())
    for match in _HEADING.finditer(text):
        ends.append(match.end())
        starts.append(match.end())
        starts.append(match.start())
        ends.append(match.start())
    return sorted(set(starts)), sorted(set(ends))


def _shown_sentence(sentence: str) -> str:
    sentence = _LINK.sub(r"\1", sentence)
    sentence = _MARKDOWN_MARKS.sub("", sentence)
    sentence = " ".join(sentence.split())
    if len(sentence) > MAX_SENTENCE:
        sentence = sentence[: MAX_SENTENCE - 1].rstrip() + "\u2026"
    return sentence


# ---------------------------------------------------------------- what a campaign says


def pieces_of(content: Content, campaign: Campaign | None = None) -> list[Text]:
    """Every piece of text a reader of ``content`` may see, with where it is written: the
    subject, preheader, body (by line), the button label, and the offer block (by line of the
    block's own file when ``campaign`` says which block it is)."""
    where = content.source
    pieces = [
        Text(f"{where}: subject", content.subject),
        Text(f"{where}: preheader", content.preheader),
        Text(where, content.body, content.body_line),
    ]
    if content.button is not None:
        pieces.append(Text(f"{where}: button", content.button.label))
    offer = content.offer
    if offer is not None:
        block = _offer_file(offer.title, campaign)
        if block is None:
            pieces.append(Text(f"{where}: offer title", offer.title))
            pieces.append(Text(f"{where}: offer", offer.body))
            pieces.append(Text(f"{where}: offer button", offer.button_label))
        else:
            path, body_line = block
            pieces.append(Text(f"{path}: title", offer.title))
            pieces.append(Text(path, offer.body, body_line))
            pieces.append(Text(f"{path}: button", offer.button_label))
    return pieces


def _offer_file(title: str, campaign: Campaign | None) -> tuple[str, int] | None:
    """The offer block's file as messages show it, and its body's first line; found as
    ``load_block`` finds it (next to the campaign, else in the shipped content)."""
    if campaign is None:
        return None
    name = campaign.front_matter.get("offer")
    if not isinstance(name, str):
        return None
    for root in (campaign.path.parent, CONTENT_DIR):
        path = Path(root) / "blocks" / f"{name}.md"
        if path.is_file():
            where = shown(path)
            try:
                data, body, body_line = split_front_matter(path.read_text(encoding="utf-8"), where)
            except (OSError, UnicodeDecodeError, NewsletterError):
                return None
            if data.get("title") != title:
                return None
            # The block's body is kept stripped: count the blank lines that were taken off.
            body_line += body[: len(body) - len(body.lstrip())].count("\n")
            return where, body_line
    return None


def campaign_claims(
    content: Content, extra_terms: Sequence[str] = (), campaign: Campaign | None = None
) -> list[Claim]:
    """The claims in everything a reader of ``content`` may see."""
    return find_claims(pieces_of(content, campaign), extra_terms)


# ---------------------------------------------------------------- the disclaimer


def missing_disclaimer_message(claims: Sequence[Claim]) -> str:
    """What to tell the publisher when claims go out without a medical disclaimer."""
    count = len(claims)
    return (
        f"the email makes health claims ({count} sentence{'s' if count != 1 else ''}, "
        f"the first at {claims[0].where}) but its footer has no medical disclaimer: set "
        f'NEWSLETTER_MEDICAL_DISCLAIMER, for example to "{DEFAULT_MEDICAL_DISCLAIMER}"'
    )


def disclaimer_in(disclaimer: str, html: str, text: str) -> list[str]:
    """The parts ("HTML", "text") of a rendered message that do not carry ``disclaimer``;
    ``html`` is the part's markup with its character references already unescaped."""
    wanted = " ".join(disclaimer.split())
    wanted_text = " ".join(disclaimer.translate(ASCII_PUNCTUATION).split())
    missing = []
    if wanted not in " ".join(html.split()):
        missing.append("HTML")
    if wanted_text not in " ".join(text.split()):
        missing.append("text")
    return missing


# ---------------------------------------------------------------- sources


def check_sources(campaign: Campaign) -> tuple[str, str] | None:
    """(where, message) when an article names no sources, or names them with no ``web_url``
    where readers can follow them; None when it is fine or is not an article."""
    content = campaign.content
    if content.layout == "system":
        return None
    if not campaign.sources:
        return (
            f"{content.source}: sources",
            "the article lists no sources; name them in the front matter (sources: with a "
            "title and a url for each) so that its claims can be checked",
        )
    if not content.web_url:
        return (
            f"{content.source}: web_url",
            "the article lists sources but has no web_url: the email carries no reference "
            "list, so set web_url to the full article where readers can follow them",
        )
    return None


__all__ = [
    "BUILT_IN_TERMS",
    "Claim",
    "Text",
    "campaign_claims",
    "check_sources",
    "disclaimer_in",
    "find_claims",
    "inflections",
    "missing_disclaimer_message",
    "pieces_of",
    "terms_pattern",
]
