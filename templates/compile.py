"""From ``Content`` to a ``Compiled`` email: MJML assembled and compiled once per template version
(cached by the hash of the MJML source), the HTML and text parts as sandboxed Jinja templates, and
every header and MIME line that is the same for all readers already encoded.

Jinja constructs written by marketers never pass through MRML (``markdown.protect``); the layouts'
own Jinja does, in the places measured to survive it (see ``templates/README.md``).
"""

from __future__ import annotations

import hashlib
import html
import re
import textwrap
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from email.utils import parseaddr
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from mjml import mjml2html

from newsletter.errors import TemplateError
from templates.markdown import ASCII_PUNCTUATION, Protected, protect, to_html, to_text
from templates.model import LAYOUTS, Content
from templates.sandbox import (
    HTML_ENV,
    JINJA_PATTERN,
    TEXT_ENV,
    compile_template,
    guarded,
)

MJML_DIR = Path(__file__).parent / "mjml"
MAX_LINE = 480  # HTML lines are wrapped to this; SMTP allows 998
CACHE_SIZE = 64
CRLF = "\r\n"


@dataclass(frozen=True)
class Sender:
    """The ``From`` of a message and what follows from it."""

    header: str  # as written: "Gut Health Letter <news@example.org>"
    name: str
    address: str

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()

    @classmethod
    def parse(cls, value: str) -> Sender:
        if any(char in value for char in "\r\n\0"):
            raise TemplateError(f"sender {value!r}: holds a line break")
        name, address = parseaddr(value)
        if "@" not in address:
            raise TemplateError(f"sender {value!r}: not an email address")
        return cls(value, name or address.partition("@")[0], address)


@dataclass(frozen=True)
class Compiled:
    """Everything about one content + sender + footer (postal address, medical disclaimer) that is
    the same for every reader.

    ``template`` renders one reader's subject (when it holds Jinja), text part and HTML part in
    one pass, separated by NUL characters (which no printed value can hold)."""

    content: Content
    sender: Sender
    mjml: str  # the assembled MJML source, as compiled
    source_hash: str  # sha256 of it: the template version
    template: jinja2.Template
    subject_text: str  # the subject when it is the same for everyone, else its Jinja source
    personal_subject: bool
    campaign: Any  # the read-only ``campaign`` mapping
    html_source: str  # the Jinja template the HTML part renders from
    text_source: str
    text_bound: int | None  # longest text line before printed values; None: unknown
    html_bound: int | None
    static_dots: bool  # a line may start with a dot whatever the printed values are

    @property
    def crlf_only(self) -> bool:
        """True when every line break the template can output is CRLF. The lexer writes the
        template's own line breaks as CRLF and printed values cannot hold CR or LF (the sandbox's
        ``finalize``), so only statements that transform output (a ``filter`` block, macros,
        loops) could add others: the line bounds are known only for templates without them."""
        return self.text_bound is not None and self.html_bound is not None


# ---------------------------------------------------------------- escaping


def mjml_text(value: str) -> str:
    """Literal text for an MJML document: HTML-escaped, with braces that Jinja cannot read."""
    value = _clean(value)
    return html.escape(value, quote=True).replace("{", "&#123;").replace("}", "&#125;")


def jinja_text(value: str) -> str:
    """Literal text inside a Jinja template."""
    if "{" not in value:
        return value
    return "{% raw %}" + value.replace("{% endraw %}", "{ % endraw %}") + "{% endraw %}"


def _ascii_html(source: str) -> str:
    """Non-ASCII characters outside Jinja constructs become character references, so that the
    rendered HTML is 7-bit whatever the language."""
    if source.isascii():
        return source
    pieces = []
    last = 0
    for match in JINJA_PATTERN.finditer(source):
        pieces.append(source[last : match.start()].encode("ascii", "xmlcharrefreplace").decode())
        pieces.append(match.group(0))
        last = match.end()
    pieces.append(source[last:].encode("ascii", "xmlcharrefreplace").decode())
    return "".join(pieces)


def wrap_html(source: str, width: int = MAX_LINE) -> str:
    """Break lines longer than ``width`` at spaces that are outside quoted attribute values and
    Jinja constructs, where a line break means the same as a space."""
    lines = source.split("\n")
    if all(len(line) <= width for line in lines):
        return source
    return "\n".join(_wrap_line(line, width) if len(line) > width else line for line in lines)


def _wrap_line(line: str, width: int) -> str:
    protected = [(m.start(), m.end()) for m in JINJA_PATTERN.finditer(line)]
    breaks: list[int] = []
    in_tag = False
    quote = ""
    jinja_index = 0
    position = 0
    while position < len(line):
        if jinja_index < len(protected) and position == protected[jinja_index][0]:
            position = protected[jinja_index][1]
            jinja_index += 1
            continue
        char = line[position]
        if quote:
            if char == quote:
                quote = ""
        elif in_tag:
            if char in "\"'":
                quote = char
            elif char == ">":
                in_tag = False
            elif char == " ":
                breaks.append(position)
        elif char == "<":
            in_tag = True
        elif char == " ":
            breaks.append(position)
        position += 1
    out = []
    start = 0
    last_break = None
    for point in breaks:
        if point - start > width and last_break is not None and last_break > start:
            out.append(line[start:last_break])
            start = last_break + 1
        last_break = point
    if len(line) - start > width and last_break is not None and last_break > start:
        out.append(line[start:last_break])
        start = last_break + 1
    out.append(line[start:])
    return "\n".join(out)


# ---------------------------------------------------------------- assembly


@cache
def _partial(name: str) -> str:
    return (MJML_DIR / "partials" / f"{name}.mjml").read_text(encoding="utf-8")


def _layout(layout: str) -> str:
    if layout in LAYOUTS:
        return (MJML_DIR / "layouts" / f"{layout}.mjml").read_text(encoding="utf-8")
    path = Path(layout)
    if path.suffix == ".mjml" and path.is_file():
        return path.read_text(encoding="utf-8")
    raise TemplateError(
        f"layout {layout!r}: expected one of {', '.join(LAYOUTS)} or the path of an .mjml file"
    )


def _fill(template: str, slots: dict[str, str]) -> str:
    return re.sub(r"@@([a-z_]+)@@", lambda m: slots.get(m.group(1), ""), template)


def assemble(
    content: Content, sender: Sender, postal_address: str, disclaimer: str = ""
) -> tuple[str, Protected]:
    """The MJML document for ``content``, with the marketer's Jinja set aside as tokens; the
    footer carries ``disclaimer`` (the medical disclaimer) above the postal address when given."""
    protected = Protected("")
    subject = protect(content.subject, protected).text
    preheader = protect(content.preheader, protected).text
    body = to_html(protect(content.body, protected).text, protected)
    slots = {
        "subject": mjml_text(subject),
        "preheader": mjml_text(preheader),
        "brand": mjml_text(sender.name),
        "postal_address": mjml_text(postal_address),
        "disclaimer": _disclaimer_html(disclaimer),
        "body": body,
    }
    if content.button is not None:
        label = protect(content.button.label, protected).text
        url = protect("{{ " + content.button.url + " }}", protected).text
        slots["button"] = _fill(
            _partial("button"), {"button_label": mjml_text(label), "button_url": url}
        )
    if content.web_url:
        slots["web_article"] = _partial("web-article")
    if content.offer is not None:
        offer_body = to_html(protect(content.offer.body, protected).text, protected)
        slots["offer"] = _fill(
            _partial("offer"),
            {
                "offer_title": mjml_text(protect(content.offer.title, protected).text),
                "offer_body": offer_body,
                "offer_button": mjml_text(protect(content.offer.button_label, protected).text),
            },
        )
    for name in ("head", "header", "footer"):
        slots[name] = _fill(_partial(name), slots)
    slots["body"] = _fill(_partial("body"), slots)
    return _fill(_layout(content.layout), slots), protected


def _disclaimer_html(disclaimer: str) -> str:
    if not disclaimer.strip():
        return ""
    return f'<p class="disclaimer" style="margin:0 0 8px;">{mjml_text(disclaimer)}</p>'


def _disclaimer_text(disclaimer: str) -> str:
    if not disclaimer.strip():
        return ""
    wrapped = textwrap.fill(
        " ".join(disclaimer.translate(ASCII_PUNCTUATION).split()),
        width=72,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return jinja_text(wrapped) + "\n\n"


def text_source(content: Content, sender: Sender, postal_address: str, disclaimer: str = "") -> str:
    """The Jinja template of the plain-text part, written from the same Markdown; the footer
    carries ``disclaimer`` first when given."""
    protected = Protected("")
    body = to_text(protect(content.body, protected).text, protected)
    parts = [jinja_text(sender.name), "\n"]
    parts.append("{% if links.web_version %}In your browser: {{ links.web_version }}\n{% endif %}")
    parts.append("\n")
    parts.append(body)
    if content.button is not None:
        label = protect(content.button.label, protected).text.translate(ASCII_PUNCTUATION)
        parts.append(f"{label}:\n{{{{ {content.button.url} }}}}\n\n")
    if content.web_url:
        parts.append("The full article, with its references, is on the web:\n")
        parts.append("{{ campaign.web_url }}\n\n")
    if content.offer is not None:
        offer = content.offer
        title = protect(offer.title, protected).text.translate(ASCII_PUNCTUATION)
        offer_body = to_text(protect(offer.body, protected).text, protected)
        label = protect(offer.button_label, protected).text.translate(ASCII_PUNCTUATION)
        parts.append("{% if not reader.has_report and links.report %}")
        parts.append(f"FREE REPORT: {title}\n\n{offer_body}{label}:\n{{{{ links.report }}}}\n\n")
        parts.append("{% endif %}")
    parts.append("-- \n")
    parts.append(_disclaimer_text(disclaimer))
    parts.append(f"You receive this because you subscribed to {jinja_text(sender.name)}.\n")
    parts.append("Unsubscribe: {{ links.unsubscribe }}\n")
    parts.append("Manage your preferences: {{ links.preferences }}\n")
    parts.append(jinja_text(postal_address.translate(ASCII_PUNCTUATION)) + "\n")
    return protected.restore("".join(parts))


# ---------------------------------------------------------------- compiling

_mjml_cache: OrderedDict[str, str] = OrderedDict()
_compiled_cache: OrderedDict[tuple[Any, ...], Compiled] = OrderedDict()
_lock = threading.Lock()


def compile_mjml(source: str) -> tuple[str, str]:
    """MRML's HTML for ``source`` and the source's hash; compiled once per version."""
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    with _lock:
        cached = _mjml_cache.get(digest)
    if cached is None:
        try:
            cached = mjml2html(source, disable_comments=False, fonts={})
        except ValueError as error:
            raise TemplateError(f"MJML does not compile: {error}") from None
        with _lock:
            _mjml_cache[digest] = cached
            while len(_mjml_cache) > CACHE_SIZE:
                _mjml_cache.popitem(last=False)
    return cached, digest


def _check_marketer_text(content: Content) -> None:
    """Compile the marketer's pieces alone, so that a syntax error names their file and line."""
    compile_template(TEXT_ENV, content.subject, f"{content.source}: subject")
    compile_template(TEXT_ENV, content.preheader, f"{content.source}: preheader")
    compile_template(TEXT_ENV, content.body, content.source, content.body_line)
    if content.button is not None:
        compile_template(TEXT_ENV, "{{ " + content.button.url + " }}", f"{content.source}: button")
    if content.offer is not None:
        compile_template(TEXT_ENV, content.offer.body, f"{content.source}: offer")


def compile_content(
    content: Content, sender_header: str, postal_address: str, disclaimer: str = ""
) -> Compiled:
    """The ``Compiled`` email for ``content`` sent as ``sender_header``, with ``postal_address``
    and the medical ``disclaimer`` (empty: none) in its footer; cached."""
    key = (content, sender_header, postal_address, disclaimer)
    with _lock:
        found = _compiled_cache.get(key)
        if found is not None:
            _compiled_cache.move_to_end(key)
            return found
    compiled = _compile(content, Sender.parse(sender_header), postal_address, disclaimer)
    with _lock:
        _compiled_cache[key] = compiled
        while len(_compiled_cache) > CACHE_SIZE:
            _compiled_cache.popitem(last=False)
    return compiled


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean(text: str) -> str:
    """Text without the control characters MRML cannot parse (tab and line breaks stay)."""
    return _CONTROL.sub(" ", text) if _CONTROL.search(text) else text


def _cleaned(content: Content) -> Content:
    offer = content.offer
    if offer is not None:
        offer = replace(
            offer,
            title=_clean(offer.title),
            body=_clean(offer.body),
            button_label=_clean(offer.button_label),
        )
    return replace(
        content,
        subject=_clean(content.subject),
        preheader=_clean(content.preheader),
        body=_clean(content.body),
        offer=offer,
    )


def _compile(content: Content, sender: Sender, postal_address: str, disclaimer: str) -> Compiled:
    content = _cleaned(content)  # NUL among them: it separates the parts of the output
    _check_marketer_text(content)
    postal_address = _clean(postal_address)
    disclaimer = _clean(disclaimer)
    source, protected = assemble(content, sender, postal_address, disclaimer)
    compiled_html, digest = compile_mjml(source)
    html_source = _style_dots(wrap_html(_ascii_html(protected.restore(compiled_html))))
    text = text_source(content, sender, postal_address, disclaimer)
    subject_text = " ".join(content.subject.split())
    personal_subject = bool(JINJA_PATTERN.search(content.subject))
    sections = [
        "{% autoescape false %}" + subject_text + "{% endautoescape %}\x00"
        if personal_subject
        else "",
        "{% autoescape false %}" + text + "{% endautoescape %}\x00",
        html_source,
    ]
    template = compile_template(HTML_ENV, "".join(sections), f"{content.source} (compiled)")
    return Compiled(
        content=content,
        sender=sender,
        mjml=source,
        source_hash=digest,
        template=template,
        subject_text=subject_text,
        personal_subject=personal_subject,
        campaign=content.campaign_view(),
        html_source=html_source,
        text_source=text,
        text_bound=line_bound(text),
        html_bound=line_bound(html_source),
        static_dots=may_start_a_line_with_a_dot(text) or may_start_a_line_with_a_dot(html_source),
    )


_STYLE = re.compile(r"(<style\b[^>]*>)(.*?)(</style>)", re.DOTALL | re.IGNORECASE)
_LINE_DOT = re.compile(r"([\r\n])\.")


def _style_dots(html: str) -> str:
    """``html`` with each style sheet line that starts with a dot (MRML writes
    ``.mj-outlook-group-fix`` so) indented by a space, which CSS ignores: a copy without lines
    that start with a dot goes to the SMTP server without a scan for them."""
    if "<style" not in html:
        return html
    return _STYLE.sub(
        lambda match: match.group(1) + _LINE_DOT.sub(r"\1 .", match.group(2)) + match.group(3),
        html,
    )


_LINE_BREAK_DOT = re.compile(r"[\r\n]\.")


def may_start_a_line_with_a_dot(source: str) -> bool:
    """False when no output line of the template ``source`` can start with a dot unless a printed
    value does (for templates of text, ``{{ }}``, ``if`` and ``raw`` only: see ``line_bound``).

    Read from Jinja's own tokens: a line can start with static text at the start, after a line
    break, after values (which may print nothing), and after any statement (which may skip
    what stands before it, ``endif`` for one). The test errs towards True."""
    line_start = True
    for _, kind, value in HTML_ENV.lex(source):
        if kind in ("block_end", "raw_begin", "raw_end"):
            line_start = True
        elif kind == "data" and value:  # static text, raw blocks' included
            if (line_start and value.startswith(".")) or _LINE_BREAK_DOT.search(value):
                return True
            line_start = value[-1] in "\r\n"
    return False


_CONSTRUCT = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_STATEMENT = re.compile(r"\{%(-?)\s*(\w+).*?(-?)%\}", re.DOTALL)
_NONE = -(10**9)  # "this shape cannot occur"


@dataclass(frozen=True)
class _Shape:
    """Longest pieces of an output fragment: ``whole`` when it holds no line break, else its
    ``first`` and ``last`` partial lines and its longest ``inner`` full line."""

    whole: int = _NONE
    first: int = _NONE
    last: int = _NONE
    inner: int = _NONE

    def then(self, other: _Shape) -> _Shape:
        return _Shape(
            whole=max(_NONE, self.whole + other.whole),
            first=max(self.first, self.whole + other.first),
            last=max(other.last, self.last + other.whole),
            inner=max(self.inner, other.inner, self.last + other.first),
        )

    def either(self, other: _Shape) -> _Shape:
        return _Shape(
            max(self.whole, other.whole),
            max(self.first, other.first),
            max(self.last, other.last),
            max(self.inner, other.inner),
        )


_EMPTY = _Shape(whole=0)


def _text_shape(text: str) -> _Shape:
    lines = text.split("\n")
    if len(lines) == 1:
        return _Shape(whole=len(text))
    return _Shape(
        first=len(lines[0]), last=len(lines[-1]), inner=max(map(len, lines[1:-1]), default=_NONE)
    )


def line_bound(source: str) -> int | None:
    """An upper bound on the longest output line of the template ``source`` before printed values
    are added (each printed value counts as empty here; the renderer adds what was printed).
    None when the template uses anything beyond ``if``/``elif``/``else`` and ``raw`` (loops and
    macros repeat text, whitespace control joins lines): the renderer then measures the lines."""
    # Stack of open if-blocks: (shape before the block, branches so far, has an else).
    stack: list[tuple[_Shape, _Shape | None, bool]] = []
    current = _EMPTY
    position = 0
    raw = False
    for match in _CONSTRUCT.finditer(source):
        text = source[position : match.start()]
        position = match.end()
        construct = match.group(0)
        if raw:
            if re.fullmatch(r"\{%\s*endraw\s*%\}", construct):
                raw = False
                current = current.then(_text_shape(text))
            else:
                current = current.then(_text_shape(text + construct))
            continue
        current = current.then(_text_shape(text))
        if construct.startswith("{#"):
            continue
        if construct.startswith("{{"):
            if construct.startswith("{{-") or construct.endswith("-}}"):
                return None
            continue
        statement = _STATEMENT.fullmatch(construct)
        if statement is None or statement.group(1) or statement.group(3):
            return None
        name = statement.group(2)
        if name == "raw":
            raw = True
        elif name == "if":
            stack.append((current, None, False))
            current = _EMPTY
        elif name in ("elif", "else") and stack:
            before, branches, _ = stack.pop()
            branches = current if branches is None else branches.either(current)
            stack.append((before, branches, name == "else"))
            current = _EMPTY
        elif name == "endif" and stack:
            before, branches, has_else = stack.pop()
            branches = current if branches is None else branches.either(current)
            if not has_else:
                branches = branches.either(_EMPTY)
            current = before.then(branches)
        else:
            return None
    if raw or stack:
        return None
    current = current.then(_text_shape(source[position:]))
    return max(current.whole, current.first, current.last, current.inner, 0)


@dataclass
class Parts:
    """One reader's rendered subject, HTML and text, with how much their values printed."""

    subject: str
    html: str
    text: str
    html_printed: int
    text_printed: int
    dotted_values: int = 0  # printed values that start with a dot


def render_parts(compiled: Compiled, context: dict[str, Any]) -> Parts:
    """The subject, HTML and text of one reader's copy (line ends are CRLF)."""
    template = compiled.template
    # Shared: the context is used as it is, not merged into a copy of the globals (there are
    # none: ``sandbox.make_environment`` clears them).
    state = template.new_context(context, shared=True)
    printed = [0, 0, 0]
    state.eval_ctx.printed = printed  # type: ignore[attr-defined]
    try:
        try:
            out = "".join(template.root_render_func(state))
        except Exception:
            template.environment.handle_exception()
    except Exception as error:  # every failure in here is the content's
        raise guarded(compiled.content.source)(error) from None
    # str.find uses memchr for one character; str.split walks the string char by char.
    start = 0
    subject = compiled.subject_text
    if compiled.personal_subject:
        start = out.find("\x00") + 1
        subject = out[: start - 1]
    middle = out.find("\x00", start)
    return Parts(subject, out[middle + 1 :], out[start:middle], printed[0], printed[1], printed[2])


def clear_caches() -> None:
    """Forget every compiled template (tests and the preview server's reload use it)."""
    with _lock:
        _mjml_cache.clear()
        _compiled_cache.clear()
    _partial.cache_clear()


__all__ = ["CRLF", "Compiled", "Parts", "Sender", "compile_content", "render_parts"]
