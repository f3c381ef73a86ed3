"""Sequence files: the shipped welcome sequence loads, and each mistake is named with its step."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path

import pytest

from campaigns import load_sequence, parse_sequence
from newsletter.errors import ContentError, NotFoundError


def test_the_shipped_welcome_sequence_sends_the_report_then_the_article_two_days_later() -> None:
    sequence = load_sequence("welcome")
    first, second = sequence.steps
    assert (first.id, first.content_name, first.delay) == (
        "welcome-report",
        "system:welcome",
        timedelta(0),
    )
    assert first.after_confirmation
    assert (second.content_name, second.delay) == ("vitamin-k2-bone-health", timedelta(days=2))
    assert second.window is not None
    assert second.window.days == (0, 1, 2, 3, 4)
    assert (second.window.start, second.window.end) == (time(8), time(18))
    assert sequence.message_key(second) == "sequence:welcome:vitamin-k2"
    assert "Vitamin K2" in second.content().subject
    assert "report" in first.content().subject.lower()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("steps: [", "not valid YAML"),
        ("name: x\n", "non-empty list of steps"),
        ("steps:\n  - id: a\n    system: welcome\n    delay: soon\n", "delay 'soon'"),
        ("steps:\n  - id: a\n    content: no-such-article\n", "no-such-article"),
        (
            "steps:\n  - id: a\n    system: welcome\n    content: vitamin-k2-bone-health\n",
            "exactly one",
        ),
        ("steps:\n  - id: A B\n    system: welcome\n", "id 'A B'"),
        ("steps:\n  - id: a\n    system: welcome\n  - id: a\n    system: welcome\n", "repeated: a"),
        ("steps:\n  - id: a\n    system: welcome\n    window: {days: [funday]}\n", "funday"),
        (
            "steps:\n  - id: a\n    system: welcome\n    window: {start: '18:00', end: '08:00'}\n",
            "after start",
        ),
        ("steps:\n  - id: a\n    system: welcome\n    colour: red\n", "unknown field colour"),
    ],
)
def test_a_broken_sequence_file_is_refused_naming_the_problem(
    tmp_path: Path, text: str, named: str
) -> None:
    with pytest.raises(ContentError) as raised:
        parse_sequence(_write(tmp_path, text))
    assert named in raised.value.message


def test_an_unknown_sequence_lists_the_known_ones() -> None:
    with pytest.raises(NotFoundError, match="welcome"):
        load_sequence("nurture")
