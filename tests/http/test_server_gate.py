"""The payment gate in one server process (uvicorn thread, SQLite store, real anvil).

CORE-47 / SES-29: a duplicate that arrives while the first request runs gets 409 problem+json
with Retry-After (never a second run or charge); a key reused for another request gets 422; a
request that fails frees its key and gives its fixed price back, so the retry runs and pays
once. SES-34: a new stream on a channel ends the previous one. AMB-05/06: an expired challenge
is `session/challenge-not-found` without the adapter checking expiry itself.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.http.support import Env, ServerThread
from tests.http.test_server_processes import SLOW, Cluster, build_app, server_config

P = "https://paymentauth.org/problems/"


class Served:
    def __init__(self, env: Env, **config: object) -> None:
        self.dsn = f"sqlite://{env.tmp / 'gate.db'}"
        self.server = ServerThread(build_app(server_config(env, self.dsn, **config))).start()
        self.url = self.server.url
        self.c = Cluster(env, self.dsn, self.url)


@pytest.fixture
def served(env: Env) -> Iterator[Served]:
    s = Served(env, delay=1.5, voucher_timeout=20.0)
    try:
        yield s
    finally:
        s.server.stop()


def test_core_47_ses_29_duplicate_in_flight_gets_409_then_the_replay(served: Served) -> None:
    c, url, body = served.c, served.url, b'{"q": 2}'
    before = c.state()
    cred = c.credential(c.challenge(url + "/slow", "POST", content=body), 15_000)
    headers = {"Authorization": cred, "Idempotency-Key": "k-in-flight"}
    first: dict[str, httpx.Response] = {}
    t = threading.Thread(
        target=lambda: first.update(r=httpx.post(url + "/slow", content=body, headers=headers))
    )
    t.start()
    time.sleep(0.5)  # the first is inside its 1.5 s handler
    busy = httpx.post(url + "/slow", content=body, headers=headers)
    t.join(30)
    assert busy.status_code == 409 and int(busy.headers["retry-after"]) >= 1
    problem = json.loads(busy.content)
    assert busy.headers["content-type"] == "application/problem+json"
    assert problem["status"] == 409 and "payment-receipt" not in busy.headers
    ok = first["r"]
    assert ok.status_code == 200
    replay = httpx.post(url + "/slow", content=body, headers=headers)
    assert replay.status_code == 200 and replay.content == ok.content
    ch3 = c.challenge(url + "/slow", "POST", content=b'{"q": 3}')
    other_headers = {**headers, "Authorization": c.credential(ch3, 15_000)}
    other = httpx.post(url + "/slow", content=b'{"q": 3}', headers=other_headers)
    assert other.status_code == 422  # the key belongs to another request (no run, no charge)
    assert c.runs_of("/slow") == 1
    assert c.state().spent - before.spent == SLOW.amount


def test_core_47_ses_29_failed_request_frees_its_key_and_gives_the_price_back(
    served: Served,
) -> None:
    c, url = served.c, served.url
    before = c.state()
    cred = c.credential(c.challenge(url + "/flaky", "POST", content=b"{}"), 15_000)
    headers = {"Authorization": cred, "Idempotency-Key": "k-flaky"}
    failed = httpx.post(url + "/flaky", content=b"{}", headers=headers)
    assert failed.status_code == 500 and "payment-receipt" not in failed.headers  # CORE-33
    assert c.state().spent == before.spent  # SES-30: the fixed price went back
    retry = httpx.post(url + "/flaky", content=b"{}", headers=headers)
    assert retry.status_code == 200 and "payment-receipt" in retry.headers
    again = httpx.post(url + "/flaky", content=b"{}", headers=headers)
    assert again.content == retry.content
    assert c.runs_of("/flaky") == 2
    assert c.state().spent - before.spent == SLOW.amount


def test_ses_34_a_new_stream_on_the_channel_ends_the_previous_one(served: Served) -> None:
    c, url = served.c, served.url
    st = c.state()
    cred = c.credential(c.challenge(url + "/stream"), st.accepted_cumulative)
    old: list[str] = []
    paused = threading.Event()
    ended: dict[str, float] = {}

    def read_old() -> None:
        with httpx.stream("GET", url + "/stream?n=1000", headers={"Authorization": cred}) as r:
            for text in r.iter_text():
                old.append(text)
                if "payment-need-voucher" in text:
                    paused.set()
        ended["at"] = time.monotonic()

    reader = threading.Thread(target=read_old)
    reader.start()
    try:
        assert paused.wait(20)
        started = time.monotonic()
        funded = c.credential(c.challenge(url + "/stream"), st.accepted_cumulative + 500)
        new = httpx.get(url + "/stream?n=5", headers={"Authorization": funded}, timeout=30)
    finally:
        reader.join(30)
    assert new.status_code == 200 and new.text.count('data: {"i"') == 5
    assert ended["at"] - started < 10  # ended by the new stream, not the 20 s voucher timeout
    assert "event: payment-receipt" in "".join(old)  # ended cleanly, with its final receipt


def test_amb_05_expired_challenge_is_challenge_not_found(served: Served) -> None:
    c, url = served.c, served.url
    from mpp.core.binding import ChallengeIssuer
    from tests.http.support import SECRET

    issuer = ChallengeIssuer(SECRET, realm="test.local")
    fresh = c.challenge(url + "/stream")
    past = datetime.now(UTC) - timedelta(minutes=10)
    expired = issuer.issue(method="tempo", intent="session", request=fresh.request, now=past)
    r = httpx.get(url + "/stream", headers={"Authorization": c.credential(expired, 1)})
    assert r.status_code == 402
    assert json.loads(r.content)["type"] == P + "session/challenge-not-found"
    assert "www-authenticate" in r.headers  # a fresh challenge to retry with
