"""The access log (`mpp.inference.access`): one line per request with its payment outcome, units
and cost, and never a secret: no Authorization or Payment values, no API or admin key, no private
key. Our app on loopback with real paid requests on anvil, then `mpp serve` printing the lines on
stderr by default."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import httpx
import pytest
from eth_account.signers.local import LocalAccount

from mpp.chain.devnet import Devnet
from mpp.http import PaymentAuth
from mpp.inference.observe import ACCESS_LOGGER
from tests.cli.serve_process import SECRET as SERVE_SECRET
from tests.inference.servers import chat_body
from tests.inference.test_metrics import (
    ADMIN_KEY,
    API_KEY,
    SECRET,
    paid_app,
    refused_voucher,
    stream_on_new_channel,
)
from tests.inference.test_operator_page import ADMIN_KEY as SERVE_ADMIN_KEY
from tests.inference.test_operator_page import operator_serve, payer_of

CHAT = "/v1/chat/completions"


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]


def _line(lines: list[str], *parts: str) -> str:
    found = [ln for ln in lines if all(p in ln.split() for p in parts)]
    assert len(found) == 1, (parts, lines)
    return found[0]


def _token(authorization: str) -> str:
    return authorization.split(" ", 1)[1]


def test_one_line_per_request_with_outcome_units_and_cost_and_no_secrets(
    devnet_clean: Devnet,
    payee: LocalAccount,
    payer: LocalAccount,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level: nothing may leak anywhere
    with paid_app(devnet_clean, payee, tmp_path) as app:
        url = app.url
        streamed = stream_on_new_channel(url, app.payer(payer, "p"), initial=40, max_tokens=30)
        refused = refused_voucher(url, streamed.channel_id)
        bearer = httpx.post(
            url + CHAT, json=chat_body(max_tokens=3), headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert bearer.status_code == 200
        assert httpx.get(f"{url}/operator?key={ADMIN_KEY}").status_code == 401  # not our flow
        login = httpx.post(url + "/operator/login", data={"key": ADMIN_KEY})
        cookie = login.cookies["mpp_operator"]
        summary = httpx.get(
            url + "/operator/api/summary", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert summary.status_code == 200
        assert httpx.get(url + "/v1/models").status_code == 200

    lines = _lines(caplog)
    final = streamed.final_receipt
    paid = _line(lines, "path=" + CHAT, "status=200", "payment=paid")
    assert f"units={final['units']}" in paid.split() and f"cost={final['spent']}" in paid.split()
    assert "provider=local" in paid.split() and "peer=127.0.0.1" in paid.split()
    assert re.search(r"\bduration_ms=\d+\.\d\b", paid)
    assert len([ln for ln in lines if "payment=402" in ln.split()]) == 2  # the two challenges
    _line(lines, "status=402", "payment=refused:invalid-signature")
    _line(lines, "path=" + CHAT, "status=200", "payment=api-key")
    _line(lines, "method=GET", "path=/operator", "status=401")  # the path, never the query
    _line(lines, "method=POST", "path=/operator/login", "status=303", "payment=unpaid")
    _line(lines, "path=/operator/api/summary", "status=200")
    _line(lines, "path=/v1/models", "status=200", "payment=unpaid")
    assert len(lines) == 9  # one line per request, nothing else on this logger

    secrets = {
        API_KEY,
        ADMIN_KEY,
        cookie,
        SECRET.decode(),
        _token(streamed.authorization),
        _token(refused),
        bytes(payer.key).hex(),
        bytes(payee.key).hex(),
    }
    # Everything the server side logged (the test's own httpx client logs its URLs).
    logged = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if not r.name.startswith(("httpx", "httpcore"))
    )
    assert "mpp.inference.access" in logged
    for secret in secrets:
        assert secret not in logged


def test_mpp_serve_logs_requests_on_stderr_by_default(
    devnet_clean: Devnet, payee: LocalAccount, payer: LocalAccount, tmp_path: Path
) -> None:
    with operator_serve(devnet_clean, payee, tmp_path) as serve:
        assert httpx.post(serve.url + CHAT, json=chat_body()).status_code == 402
        auth = PaymentAuth(payer_of(payer, devnet_clean, tmp_path, "p"), allow_insecure=True)
        with httpx.Client(auth=auth, timeout=60) as client:
            assert client.post(serve.url + CHAT, json=chat_body(max_tokens=5)).status_code == 200
        final = auth.receipts[-1]
        serve.terminate()
        err = serve.stderr()
    assert "INFO mpp.inference.access: method=POST path=/v1/chat/completions status=402" in err
    paid = next(ln for ln in err.splitlines() if "payment=paid" in ln and "cost=" in ln)
    assert f"cost={final['spent']}" in paid
    for secret in (SERVE_ADMIN_KEY, SERVE_SECRET, bytes(payer.key).hex(), bytes(payee.key).hex()):
        assert secret not in err


def test_log_level_warning_silences_the_access_log(
    devnet_clean: Devnet, payee: LocalAccount, tmp_path: Path
) -> None:
    with operator_serve(devnet_clean, payee, tmp_path, extra='log_level = "warning"') as serve:
        assert httpx.post(serve.url + CHAT, json=chat_body()).status_code == 402
        serve.terminate()
        err = serve.stderr()
    assert "mpp.inference.access" not in err
