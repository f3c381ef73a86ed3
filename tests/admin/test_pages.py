"""The dashboard's pages over HTTP: each answers a signed-in marketer, refusals come back as the
page with the reason and nothing stored, imports report bad rows by line, erasing asks first, and
the sequences page counts readers per step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from scheduler.campaigns import CampaignRun
from scheduler.sequences import enrol
from subscribers.models import Subscriber, Suppression
from tests.admin.conftest import READERS, AdminSite, csrf_token

CAMPAIGN = "vitamin-k2-bone-health"


def runs(site: AdminSite) -> int:
    with site.database.session() as session:
        return int(session.scalar(select(func.count()).select_from(CampaignRun)) or 0)


def test_every_page_answers_a_signed_in_marketer(admin_site: AdminSite) -> None:
    reader = admin_site.reader(READERS[0])
    assert reader is not None
    paths = [
        "/admin/",
        "/admin/campaigns",
        f"/admin/campaigns/{CAMPAIGN}",
        f"/admin/campaigns/{CAMPAIGN}/frame",
        "/admin/sequences",
        "/admin/subscribers",
        "/admin/subscribers?status=confirmed",
        f"/admin/subscribers/{reader.id}",
        f"/admin/subscribers/{reader.id}/unsubscribe",
        f"/admin/subscribers/{reader.id}/erase",
        "/admin/subscribers/import",
        "/admin/account",
    ]
    with admin_site.signed_in() as client:
        for path in paths:
            answer = client.get(path)
            assert answer.status_code == 200, path
            assert answer.headers["cache-control"] == "no-store", path
        assert client.get("/admin/campaigns/no-such-campaign").status_code == 404
        assert client.get("/admin/subscribers/999999").status_code == 404
        assert client.get("/admin/subscribers?status=nonsense").status_code == 200


def test_the_preview_frame_cannot_run_scripts_and_pages_cannot_be_framed(
    admin_site: AdminSite,
) -> None:
    with admin_site.signed_in() as client:
        page = client.get(f"/admin/campaigns/{CAMPAIGN}")
        frame = client.get(f"/admin/campaigns/{CAMPAIGN}/frame")
    assert '<iframe class="email" sandbox title=' in page.text
    assert "allow-same-origin" not in page.text and "allow-scripts" not in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert frame.headers["content-security-policy"].startswith("sandbox")
    assert "The Importance of Vitamin K2" in frame.text


def test_scheduling_in_the_past_or_in_an_unknown_zone_says_why_and_stores_nothing(
    admin_site: AdminSite,
) -> None:
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    with admin_site.signed_in() as client:
        token = csrf_token(client)
        past = client.post(
            f"/admin/campaigns/{CAMPAIGN}/schedule",
            data={"csrf_token": token, "date": yesterday, "time": "09:00", "zone": "UTC"},
        )
        assert past.status_code == 422
        assert "is in the past" in past.text
        assert f'value="{yesterday}"' in past.text, "the form keeps what was typed"
        nowhere = client.post(
            f"/admin/campaigns/{CAMPAIGN}/schedule",
            data={"csrf_token": token, "date": "2030-01-01", "time": "09:00", "zone": "Mars/Base"},
        )
        assert nowhere.status_code == 422
        assert "unknown time zone" in nowhere.text
        segment = client.post(
            f"/admin/campaigns/{CAMPAIGN}/schedule",
            data={
                "csrf_token": token,
                "date": "2030-01-01",
                "time": "09:00",
                "zone": "UTC",
                "segment": "tag:vip and (",
            },
        )
        assert segment.status_code == 422
        paused = client.post(f"/admin/campaigns/{CAMPAIGN}/pause", data={"csrf_token": token})
        assert paused.status_code == 409
        assert "is not scheduled" in paused.text
    assert runs(admin_site) == 0


def test_a_scheduled_campaign_shows_in_the_overview_and_answers_its_status_as_json(
    admin_site: AdminSite,
) -> None:
    with admin_site.signed_in() as client:
        token = csrf_token(client)
        scheduled = client.post(
            f"/admin/campaigns/{CAMPAIGN}/schedule",
            data={
                "csrf_token": token,
                "date": "2030-01-01",
                "time": "09:30",
                "zone": "Asia/Tokyo",
                "segment": "",
            },
        )
        assert scheduled.status_code == 303
        status = client.get(f"/admin/campaigns/{CAMPAIGN}/status.json").json()
        assert status["state"] == "scheduled"
        assert status["zone"] == "Asia/Tokyo"
        assert status["send_at"] == "2030-01-01T00:30:00+00:00"
        assert {"queued", "sent", "failed", "bounced"} <= set(status)
        overview = client.get("/admin/").text
        assert CAMPAIGN in overview and "scheduled" in overview
        again = client.post(
            f"/admin/campaigns/{CAMPAIGN}/schedule",
            data={"csrf_token": token, "date": "2030-01-02", "time": "09:00", "zone": "UTC"},
        )
        assert again.status_code == 422
        assert "cancel" in again.text
        cancelled = client.post(f"/admin/campaigns/{CAMPAIGN}/cancel", data={"csrf_token": token})
        assert cancelled.status_code == 303
        assert client.get(f"/admin/campaigns/{CAMPAIGN}/status.json").json()["state"] == (
            "cancelled"
        )


def test_a_csv_import_reports_each_bad_row_by_its_line(admin_site: AdminSite) -> None:
    csv = (
        "email,name\n"
        "new.one@example.com,Ann\n"
        "not-an-address,Bob\n"
        f"{READERS[0]},Again\n"
        "new.two@example.com,Cy\n"
        ",Nobody\n"
    )
    with admin_site.signed_in() as client:
        token = csrf_token(client, "/admin/subscribers/import")
        answer = client.post(
            "/admin/subscribers/import",
            data={"csrf_token": token, "status": "confirmed", "source": "webinar-2026"},
            files={"file": ("webinar.csv", csv.encode(), "text/csv")},
        )
    assert answer.status_code == 200, answer.text
    assert '<dd data-count="imported">2</dd>' in answer.text
    assert '<dd data-count="bad">2</dd>' in answer.text
    assert "<td>3</td>" in answer.text and "<td>6</td>" in answer.text
    added = admin_site.reader("new.one@example.com")
    assert added is not None and added.status == "confirmed" and added.form == "webinar-2026"


def test_an_import_without_a_file_or_a_consent_answer_stores_nothing(
    admin_site: AdminSite,
) -> None:
    with admin_site.signed_in() as client:
        token = csrf_token(client, "/admin/subscribers/import")
        answer = client.post(
            "/admin/subscribers/import",
            data={"csrf_token": token},
            files={"file": ("people.csv", b"email\nsomeone@example.com\n", "text/csv")},
        )
    assert answer.status_code == 422
    assert "Say whether these readers consented" in answer.text
    assert admin_site.reader("someone@example.com") is None


def test_erasing_a_reader_asks_first_then_leaves_only_the_hash(admin_site: AdminSite) -> None:
    reader = admin_site.reader(READERS[4])
    assert reader is not None
    with admin_site.signed_in() as client:
        question = client.get(f"/admin/subscribers/{reader.id}/erase")
        assert f"Erase {READERS[4]}?" in question.text
        assert admin_site.reader(READERS[4]) is not None, "asking erases nothing"
        erased = client.post(
            f"/admin/subscribers/{reader.id}/erase", data={"csrf_token": csrf_token(client)}
        )
        assert erased.status_code == 303
        assert client.get(f"/admin/subscribers/{reader.id}").status_code == 404
        for action in ("erase", "unsubscribe"):  # a reader already gone: a page that says so
            again = client.post(
                f"/admin/subscribers/{reader.id}/{action}", data={"csrf_token": csrf_token(client)}
            )
            assert again.status_code == 404 and "Not found" in again.text
    assert admin_site.reader(READERS[4]) is None
    with admin_site.database.session() as session:
        assert session.scalar(select(func.count()).select_from(Suppression)) == 1


def test_the_sequences_page_counts_readers_waiting_for_each_step(admin_site: AdminSite) -> None:
    with admin_site.database.session() as session:
        ids = session.scalars(select(Subscriber.id).order_by(Subscriber.id)).all()
        for subscriber_id in ids[:3]:
            enrol(session, subscriber_id, now=datetime.now(UTC))
    with admin_site.signed_in() as client:
        page = client.get("/admin/sequences").text
    assert "welcome-report" in page and "vitamin-k2" in page
    # Each of the three readers is at the first step: waiting for it, being sent it, or got it
    # (the worker sends while the page is read); nobody has left.
    first = step_counts(page, "welcome-report")
    assert first["waiting"] + first["being sent"] + first["got it"] == 3
    assert first["left"] == 0
    assert step_counts(page, "vitamin-k2")["got it"] == 0


def step_counts(page: str, step: str) -> dict[str, int]:
    """One step's row of the sequences table, by column."""
    row = page.split(f'<th scope="row">{step}<br>')[1].split("</tr>")[0]
    cells = [int(cell.split("</td>")[0]) for cell in row.split("<td>")[1:]]
    names = ["waiting", "got it", "being sent", "skipped", "failed", "left"]
    return dict(zip(names, cells, strict=True))
