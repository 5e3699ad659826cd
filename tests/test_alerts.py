"""Alerts (sync.alerts): Slack-compatible JSON over httpx, mocked with respx."""

from __future__ import annotations

import json
import logging
import socket

import httpx
import pytest
import respx

from crmsync.sync.logs import redact
from crmsync.sync.mapping.model import AlertConfig
from crmsync.sync.pipeline.alerts import TIMEOUT, Event, payload, send

from conftest import write_csv, write_mapping

HOOK = "https://hooks.slack.com/services/T0001/B0001/s3cr3tPath"
OTHER = "https://chat.example.com/hooks/another-secret"


def alert(url: str = HOOK, on=("failure", "safeguard", "transition"), transitions=(),
          sample: int = 5) -> AlertConfig:
    return AlertConfig.model_validate({
        "url": url, "on": list(on), "sample": sample,
        "transitions": [{"from": a, "to": b} for a, b in transitions]})


EVENTS = [
    Event.failure("champions-meta", "token expired: set META_ACCESS_TOKEN"),
    Event.safeguard("champions-list", removes=300, fraction=0.3),
    Event.transition("champions", "at_risk", 12, ["101", "102", "103", "104", "105", "106"]),
    Event.transition("leads", "customers", 40, ["201"]),
]


def posted(route: respx.Route, i: int = 0) -> dict:
    return json.loads(route.calls[i].request.content)


@respx.mock
def test_payload_shape_and_content():
    route = respx.post(HOOK).mock(return_value=httpx.Response(200, text="ok"))
    n = send([alert(transitions=[("champions", "at_risk")])], EVENTS)
    assert n == 1 and route.call_count == 1
    req = route.calls[0].request
    assert req.headers["content-type"] == "application/json"
    body = posted(route)
    assert set(body) == {"text", "blocks"}
    text = body["text"]
    assert text.startswith("*crmsync*: 3 alerts")
    assert "*champions-meta* failed: token expired: set META_ACCESS_TOKEN" in text
    assert "safeguard tripped on *champions-list*: it would remove 300 members (30%" in text
    assert "12 contacts moved from *champions* to *at_risk*" in text
    assert "`101`, `102`, `103`, `104`, `105`" in text and "106" not in text  # sample: 5
    assert "leads" not in text  # that transition is not named by this alert
    assert body["blocks"][0]["type"] == "section"
    assert [b["text"]["type"] for b in body["blocks"]] == ["mrkdwn"] * 4
    assert all(b["text"]["text"] in text for b in body["blocks"])


@respx.mock
def test_filtering_by_on():
    failures = respx.post(HOOK).mock(return_value=httpx.Response(200))
    moves = respx.post(OTHER).mock(return_value=httpx.Response(200))
    send([alert(on=["failure"]), alert(OTHER, on=["transition"], sample=2,
                                       transitions=[("leads", "customers")])], EVENTS)
    text = posted(failures)["text"]
    assert "champions-meta" in text and "safeguard" not in text and "moved" not in text
    text = posted(moves)["text"]
    assert "40 contacts moved from *leads* to *customers*" in text
    assert "failed" not in text and "safeguard" not in text and "at_risk" not in text


@respx.mock
def test_nothing_to_say_means_no_post():
    route = respx.post(HOOK).mock(return_value=httpx.Response(200))
    assert send([alert(on=["safeguard"])], [EVENTS[0]]) == 0
    assert send([alert(on=["transition"], transitions=[("a", "b")])], EVENTS) == 0
    assert send([alert(transitions=[("a", "b")])], [Event.transition("a", "b", 0)]) == 0
    assert send([alert()], []) == 0
    assert route.call_count == 0


@respx.mock
def test_no_email_or_phone_in_payload():
    route = respx.post(HOOK).mock(return_value=httpx.Response(200))
    events = [Event.failure("x", "rejected jane.doe@acme.example (+1 415 555 0100)"),
              Event.transition("a", "b", 3, ["ann@acme.example", "+14155550100", "301"])]
    send([alert(transitions=[("a", "b")])], events)
    raw = route.calls[0].request.content.decode()
    assert "@" not in raw and "555" not in raw
    assert "`301`" in raw and "&lt;email&gt;" in raw


def test_redact_keeps_dates_numeric_ids_and_counts():
    assert redact("contact 51234567 on 2026-03-01") == "contact 51234567 on 2026-03-01"
    assert redact("a@b.io, 415-555-0100, (415) 555-0100") == "<email>, <phone>, <phone>"
    assert redact("+1 (415) 555-0100 / +44 20 7946 0958") == "<phone> / <phone>"
    # a destination's summary line: counts, not a phone
    assert redact("list: ok +300000 -0 ~0 =12") == "list: ok +300000 -0 ~0 =12"


@respx.mock
def test_unreachable_webhook_is_logged_not_raised(caplog):
    respx.post(HOOK).mock(side_effect=httpx.ConnectError("refused"))
    ok = respx.post(OTHER).mock(return_value=httpx.Response(200))
    with caplog.at_level(logging.WARNING, logger="crmsync.alerts"):
        n = send([alert(), alert(OTHER)], EVENTS[:1])
    assert n == 1 and ok.call_count == 1  # the second webhook still gets its message
    (rec,) = caplog.records
    assert rec.levelno == logging.WARNING
    assert "https://hooks.slack.com" in rec.getMessage() and "ConnectError" in rec.getMessage()
    assert "s3cr3tPath" not in caplog.text and "T0001" not in caplog.text


@respx.mock
def test_non_2xx_is_logged_not_raised(caplog):
    respx.post(HOOK).mock(return_value=httpx.Response(404, text="no_service"))
    log = logging.getLogger("test.alerts")
    with caplog.at_level(logging.WARNING, logger="test.alerts"):
        assert send([alert()], EVENTS[:1], log=log) == 0
    assert "HTTP 404" in caplog.text and "s3cr3tPath" not in caplog.text


@respx.mock
def test_timeout_is_bounded():
    route = respx.post(HOOK).mock(return_value=httpx.Response(200))
    send([alert()], EVENTS[:1])
    timeout = route.calls[0].request.extensions["timeout"]
    assert timeout["connect"] == timeout["read"] == TIMEOUT == 10.0


@respx.mock
def test_timeout_error_is_logged(caplog):
    respx.post(HOOK).mock(side_effect=httpx.ReadTimeout("slow"))
    with caplog.at_level(logging.WARNING, logger="crmsync.alerts"):
        assert send([alert()], EVENTS[:1]) == 0
    assert "ReadTimeout" in caplog.text


def test_really_unreachable_webhook(caplog):
    """No mock: a closed port on 127.0.0.1 over real httpx."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hooks/secret-token"
    with caplog.at_level(logging.WARNING, logger="crmsync.alerts"):
        assert send([alert(url)], EVENTS[:1]) == 0
    assert "http://127.0.0.1" in caplog.text and "secret-token" not in caplog.text


def test_malformed_url_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="crmsync.alerts"):
        assert send([alert("not a url")], EVENTS[:1]) == 0
    assert "not delivered" in caplog.text


@respx.mock
def test_caller_client_is_used_and_left_open():
    route = respx.post(HOOK).mock(return_value=httpx.Response(200))
    with httpx.Client() as client:
        assert send([alert()], EVENTS[:1], client=client) == 1
        assert not client.is_closed
    assert route.call_count == 1


def test_slack_escaping_and_block_limit():
    events = [Event.failure(f"d{i}", "a <b> & c") for i in range(60)]
    body = payload(alert(), events, title="acme")
    assert body is not None
    assert len(body["blocks"]) == 50
    assert body["blocks"][-1]["elements"][0]["text"] == "... and 12 more"
    assert "a &lt;b&gt; &amp; c" in body["text"] and body["text"].startswith("*acme*: 60 alerts")


@pytest.mark.parametrize("kind", ["failure", "safeguard", "transition"])
def test_each_kind_alone(kind):
    event = {"failure": EVENTS[0], "safeguard": EVENTS[1], "transition": EVENTS[2]}[kind]
    body = payload(alert(on=[kind], transitions=[("champions", "at_risk")]), [event])
    assert body is not None and body["text"].startswith("*crmsync*: 1 alert\n")


def test_environment_secrets_and_sdk_errors_are_masked_on_one_line(tmp_path):
    """A value the mapping read from the environment is masked wherever text is redacted
    (logs, history, alerts); an SDK's HTTP error becomes its status and body on one line."""
    from crmsync.sync.logs import error_text
    from crmsync.sync.mapping.loader import load

    write_csv(tmp_path / "c.csv", ["id", "email"], [["k1", "a@x.example"]])
    m = write_mapping(tmp_path / "m.yaml", {
        "version": 1, "sources": {"crm": {"type": "csv", "path": "c.csv", "key": "id"}},
        "segments": {"s": {"description": "d", "owner": "o",
                           "where": {"field": "email", "is_known": True}}},
        "destinations": [{"name": "f", "segment": "s", "type": "csv", "path": "o.csv"}],
        "alerts": [{"url": "${HOOK_URL}", "on": ["failure"]}]})
    load(m, env={"HOOK_URL": "https://hooks.example/T0/B0/s3cr3tpath"})

    class ApiError(Exception):
        status, body = 400, b'{"message": "bad token https://hooks.example/T0/B0/s3cr3tpath"}'

    text = error_text(ApiError("(400)\nReason: Bad Request\nHTTP response headers: {...}"))
    assert text == 'ApiError: HTTP 400: {"message": "bad token <secret>"}'
    assert redact("mail bob@x.example at +1 415 555 0100") == "mail <email> at <phone>"
