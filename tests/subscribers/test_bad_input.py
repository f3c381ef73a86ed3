"""Every bad signup gets a clean 4xx with a message, and the store is left exactly as it was."""

from __future__ import annotations

from typing import Any

import pytest

from tests.subscribers.conftest import Site

LONG = "a" * 400
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

# (case, content type, body, expected status, field that must be named or None)
BAD_SIGNUPS: list[tuple[str, str, Any, int, str | None]] = [
    ("no at-sign", FORM, {"email": "reader.example.org"}, 422, "email"),
    ("empty address", FORM, {"email": ""}, 422, "email"),
    ("only spaces", FORM, {"email": "   "}, 422, "email"),
    ("missing address", FORM, {"name": "Ada"}, 422, "email"),
    ("two at-signs", FORM, {"email": "a@b@example.org"}, 422, "email"),
    ("no domain", FORM, {"email": "reader@"}, 422, "email"),
    ("no local part", FORM, {"email": "@example.org"}, 422, "email"),
    ("dot at start", FORM, {"email": ".reader@example.org"}, 422, "email"),
    ("double dot", FORM, {"email": "re..ader@example.org"}, 422, "email"),
    ("space inside", FORM, {"email": "re ader@example.org"}, 422, "email"),
    ("domain without dot", FORM, {"email": "reader@localhost"}, 422, "email"),
    ("ip literal", FORM, {"email": "reader@[127.0.0.1]"}, 422, "email"),
    ("reserved domain", FORM, {"email": "reader@example.invalid"}, 422, "email"),
    ("CRLF header injection", FORM, {"email": "a@example.org\r\nBcc: x@evil.test"}, 422, "email"),
    ("LF in address", FORM, {"email": "a@example.org\nx"}, 422, "email"),
    ("NUL in address", FORM, {"email": "a\x00@example.org"}, 422, "email"),
    ("CRLF in name", FORM, {"email": "ok@example.org", "name": "Ada\r\nBcc: x"}, 422, "name"),
    ("NUL in name", FORM, {"email": "ok@example.org", "name": "Ada\x00"}, 422, "name"),
    (
        "tab-free control char in name",
        FORM,
        {"email": "ok@example.org", "name": "A\x07"},
        422,
        "name",
    ),
    ("very long address", FORM, {"email": LONG + "@example.org"}, 422, "email"),
    ("comma in address", FORM, {"email": "a,b@example.org"}, 422, "email"),
    ("angle brackets", FORM, {"email": "Ada <a@example.org>"}, 422, "email"),
    ("very long name", FORM, {"email": "ok@example.org", "name": "N" * 150}, 422, "name"),
    ("name over the field cap", FORM, {"email": "ok@example.org", "name": LONG}, 422, "name"),
    ("bad form id", FORM, {"email": "ok@example.org", "form": "<script>"}, 422, "form"),
    (
        "time zone over the field cap",
        FORM,
        {"email": "ok@example.org", "timezone": LONG},
        422,
        "timezone",
    ),
    ("HTML in address", FORM, {"email": "<script>alert(1)</script>@example.org"}, 422, "email"),
    ("SQL in address", FORM, {"email": "x'; DROP TABLE subscribers;--@example.org"}, 422, "email"),
    ("SQL tautology", FORM, {"email": "' OR '1'='1"}, 422, "email"),
    ("quoted local part with HTML", FORM, {"email": '"<b>"@example.org'}, 422, "email"),
    ("JSON: address is a number", JSON, {"email": 42}, 422, "email"),
    ("JSON: address is a list", JSON, {"email": ["a@example.org"]}, 422, "email"),
    ("JSON: address is null", JSON, {"email": None}, 422, "email"),
    ("JSON: name is an object", JSON, {"email": "ok@example.org", "name": {"$ne": 1}}, 422, "name"),
    ("JSON: not an object", JSON, ["ok@example.org"], 422, None),
    ("JSON: a bare string", JSON, "ok@example.org", 422, None),
    ("JSON: malformed", JSON, b'{"email": ', 422, None),
    ("JSON: not UTF-8", JSON, b'{"email": "\xff\xfe@example.org"}', 422, None),
    ("JSON: HTML payload", JSON, {"email": "<img src=x onerror=alert(1)>"}, 422, "email"),
    ("wrong content type: text", "text/plain", b"email=ok@example.org", 415, None),
    ("wrong content type: xml", "application/xml", b"<email>ok@example.org</email>", 415, None),
    ("no content type", "", b"email=ok@example.org", 415, None),
    ("oversized body", FORM, b"email=" + b"a" * 20000 + b"@example.org", 413, None),
]


@pytest.mark.parametrize(
    ("case", "content_type", "body", "status", "field"),
    BAD_SIGNUPS,
    ids=[case[0] for case in BAD_SIGNUPS],
)
def test_a_bad_signup_gets_a_clean_4xx_and_changes_nothing(
    sqlite_site: Site, case: str, content_type: str, body: Any, status: int, field: str | None
) -> None:
    before = sqlite_site.snapshot()
    with sqlite_site.client() as client:
        response = _post(client, content_type, body)
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    if field and content_type == JSON:
        assert field in response.json()["errors"]
    elif field:
        # The form page comes back with the message beside the field.
        assert f'id="{field}-error"' in response.text
    assert sqlite_site.snapshot() == before
    assert sqlite_site.smtp.messages == []


def _post(client: Any, content_type: str, body: Any) -> Any:
    if content_type == JSON and not isinstance(body, bytes):
        return client.post("/subscribe", json=body)
    if content_type == FORM and isinstance(body, dict):
        return client.post("/subscribe", data=body)
    headers = {"Content-Type": content_type} if content_type else {}
    return client.post("/subscribe", content=body, headers=headers)


def test_there_are_at_least_forty_bad_inputs() -> None:
    assert len(BAD_SIGNUPS) >= 40


def test_the_form_page_comes_back_with_the_message_beside_the_field(sqlite_site: Site) -> None:
    with sqlite_site.client() as client:
        response = client.post("/subscribe", data={"email": "nope", "name": "<b>Ada</b>"})
    assert response.status_code == 422
    assert 'aria-invalid="true" aria-describedby="email-error"' in response.text
    assert 'id="email-error"' in response.text
    # What the reader typed comes back, escaped.
    assert "&lt;b&gt;Ada&lt;/b&gt;" in response.text
    assert "<b>Ada</b>" not in response.text


def test_unknown_routes_are_404_and_wrong_methods_405(sqlite_site: Site) -> None:
    with sqlite_site.client() as client:
        assert client.get("/no-such-page").status_code == 404
        assert client.delete("/subscribe").status_code == 405
        assert client.put("/unsubscribe/abc").status_code == 405
        spec = client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for route in ("/subscribe", "/confirm/{token}", "/unsubscribe/{token}", "/healthz"):
        assert route in paths
    assert "application/json" in paths["/subscribe"]["post"]["requestBody"]["content"]
