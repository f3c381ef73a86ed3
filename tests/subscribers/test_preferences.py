"""A reader changes name, time zone and topics from the link in any email."""

from __future__ import annotations

from subscribers.tokens import Purpose, signed_url
from tests.subscribers.conftest import Site


def _preferences_url(site: Site, email: str) -> str:
    with site.client() as client:
        client.post("/subscribe", json={"email": email, "name": "Old"})
    reader = site.subscriber(email)
    return signed_url(site.url, site.settings.secret_key or "", Purpose.PREFERENCES, reader.key)


def test_a_reader_changes_name_zone_and_topics(sqlite_site: Site) -> None:
    url = _preferences_url(sqlite_site, "prefs@example.org")
    with sqlite_site.client() as client:
        page = client.get(url)
        assert page.status_code == 200 and "prefs@example.org" in page.text
        saved = client.post(
            url,
            data={
                "name": "Grace",
                "timezone": "Europe/Paris",
                "topics": ["gut-health", "nutrition"],
            },
        )
    assert saved.status_code == 200 and "Saved." in saved.text
    reader = sqlite_site.subscriber("prefs@example.org")
    assert (reader.name, reader.timezone) == ("Grace", "Europe/Paris")
    assert reader.tag_names == ["gut-health", "nutrition"]


def test_a_bad_preference_is_named_and_nothing_changes(sqlite_site: Site) -> None:
    url = _preferences_url(sqlite_site, "careful@example.org")
    with sqlite_site.client() as client:
        response = client.post(
            url, data={"name": "New\r\nBcc: x", "timezone": "Nowhere/Land", "topics": ["crypto"]}
        )
    assert response.status_code == 422
    assert 'id="name-error"' in response.text and 'id="timezone-error"' in response.text
    assert "Unknown topic: crypto" in response.text
    reader = sqlite_site.subscriber("careful@example.org")
    assert (reader.name, reader.timezone, reader.tag_names) == ("Old", None, [])


def test_a_name_is_escaped_where_it_is_shown(sqlite_site: Site) -> None:
    url = _preferences_url(sqlite_site, "xss@example.org")
    with sqlite_site.client() as client:
        client.post(url, data={"name": "<script>alert(1)</script>"})
        page = client.get(url)
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
