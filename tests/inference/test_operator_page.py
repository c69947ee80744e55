"""The operator page (mpp.inference.operator): off without an admin key, 401 without the key,
the login flow and its cookie, and, in headless Chromium (Debian's /usr/bin/chromium driven by
playwright), the page of a real `mpp serve` process after real paid requests on anvil.

`operator_serve` (a `mpp serve` child process with an admin key) is shared with
tests/inference/test_access_log.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount

from mpp.chain.devnet import Devnet
from mpp.http import PaymentAuth
from mpp.inference import EmbeddedProvider, InferenceSettings, Price, Registry, create_app
from mpp.inference.operator import format_amount
from mpp.inference.providers import GlassModel
from mpp.inference.settings import settings_from_config
from mpp.session.payer import Payer
from mpp.session.policy import SpendingPolicy
from tests.cli.serve_process import MppServe
from tests.inference.servers import MODEL, chat_body, serve_app
from tests.inference.test_metrics import refused_voucher

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ADMIN_KEY = "operator-test-admin-key-4b8e1f0a"
ADMIN_ENV = "MPP_TEST_ADMIN_KEY"
PATHS = ("/operator", "/operator/api/summary")

SERVE_CONFIG = """
admin_key_env = "{admin_env}"
rpc_url = "{rpc}"
escrow = "{escrow}"
store = "sqlite:{store}"
bind = "127.0.0.1:{port}"
realm = "operator.test"
secret_env = "MPP_TEST_SECRET"
suggested_deposit_units = 500
{extra}

[settlement]
poll_interval = 0.2

[[providers]]
kind = "embedded"
model = "glassllm"
name = "local"
models = ["glassllm-en"]
input_price_per_million = 100
output_price_per_million = 200
"""


@contextmanager
def operator_serve(
    devnet: Devnet, payee: LocalAccount, tmp: Path, *, extra: str = ""
) -> Iterator[MppServe]:
    """`mpp serve --json` with the operator page on (its key in ADMIN_ENV), stopped by its
    handle at the end, also when the test fails."""
    serve = MppServe(
        tmp, rpc_url=devnet.rpc_url, escrow=devnet.escrow, payee_key="0x" + bytes(payee.key).hex()
    )
    serve.config.write_text(
        SERVE_CONFIG.format(
            admin_env=ADMIN_ENV, rpc=devnet.rpc_url, escrow=devnet.escrow, store=serve.store,
            port=serve.port, extra=extra,
        )
    )  # fmt: skip
    serve.env[ADMIN_ENV] = ADMIN_KEY
    with serve:
        serve.start()
        yield serve


def payer_of(account: LocalAccount, devnet: Devnet, tmp: Path, name: str) -> Payer:
    return Payer(
        "0x" + bytes(account.key).hex(),
        records_path=tmp / f"{name}.db",
        chain=devnet.chain(),
        policy=SpendingPolicy(max_amount_per_unit=10, max_deposit=10**7),
    )


def _settings(admin_key: str | None) -> InferenceSettings:
    provider = EmbeddedProvider("local", [MODEL], Price(100, 200), model=GlassModel())
    return InferenceSettings(registry=Registry([provider]), admin_key=admin_key)


# --- without a browser ---------------------------------------------------------------------------


def test_format_amount_is_integer_arithmetic() -> None:
    assert format_amount(1_234_567, 6) == "1.234567"
    assert format_amount(84, 6) == "0.000084"
    assert format_amount(0, 6) == "0.000000"
    assert format_amount(10**30 + 1, 6) == "1000000000000000000000000.000001"  # no float rounding
    assert format_amount(-5, 2) == "-0.05"
    assert format_amount(7, 0) == "7"
    assert format_amount(7, None) is None


def test_page_is_off_without_an_admin_key() -> None:
    with serve_app(create_app(_settings(None))) as url:
        for path in (*PATHS, "/operator/login", "/operator/logout"):
            method = "POST" if path.endswith(("login", "logout")) else "GET"
            assert httpx.request(method, url + path).status_code == 404


def test_admin_key_comes_from_the_variable_admin_key_env_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = {"name": "e", "model": "glassllm", "input_price_per_million": 1,
                "output_price_per_million": 2}  # fmt: skip
    config: dict[str, Any] = {"providers": [provider], "admin_key_env": ADMIN_ENV}
    monkeypatch.delenv(ADMIN_ENV, raising=False)
    assert settings_from_config(config).admin_key is None  # unset: the page is off
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    settings = settings_from_config(config)
    assert settings.admin_key == ADMIN_KEY and ADMIN_KEY not in repr(settings)
    monkeypatch.setenv(ADMIN_ENV, "short")
    with pytest.raises(ValueError, match="16"):
        settings_from_config(config)


def test_401_without_the_key_and_the_login_flow() -> None:
    with serve_app(create_app(_settings(ADMIN_KEY))) as url:
        page = httpx.get(url + "/operator")
        assert page.status_code == 401 and 'name="key"' in page.text  # the login form
        api = httpx.get(url + "/operator/api/summary")
        assert api.status_code == 401 and api.headers["www-authenticate"].startswith("Bearer")
        wrong = {"Authorization": "Bearer " + ADMIN_KEY[:-1] + "x"}
        assert httpx.get(url + "/operator/api/summary", headers=wrong).status_code == 401
        right = {"Authorization": "Bearer " + ADMIN_KEY}
        summary = httpx.get(url + "/operator/api/summary", headers=right)
        assert summary.status_code == 200 and summary.json()["channels"] == []

        with httpx.Client(base_url=url) as client:
            bad = client.post("/operator/login", content=b"\xff", headers=_FORM)
            assert bad.status_code == 400
            too_big = client.post("/operator/login", content=b"key=" + b"a" * 5000, headers=_FORM)
            assert too_big.status_code == 400
            json_body = client.post("/operator/login", json={"key": ADMIN_KEY})
            assert json_body.status_code == 400
            denied = client.post("/operator/login", data={"key": "nope"})
            assert denied.status_code == 401 and "Wrong admin key." in denied.text
            ok = client.post("/operator/login", data={"key": ADMIN_KEY})
            assert ok.status_code == 303 and ok.headers["location"] == "/operator"
            cookie = ok.headers["set-cookie"]
            assert (
                "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/operator" in cookie
            )
            assert ADMIN_KEY not in cookie  # an HMAC, not the key
            shown = client.get("/operator")
            assert shown.status_code == 200 and 'id="channels"' in shown.text
            csp = shown.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "connect-src 'self'" in csp
            assert shown.headers["cache-control"] == "no-store"
            # Self-contained: nothing loaded from elsewhere.
            assert not re.search(r"\bsrc=|href=\"(?!data:|/operator)|@import|url\(", shown.text)
            assert client.get("/operator/api/summary").status_code == 200  # the cookie works
            client.cookies.set("mpp_operator", "0" * 64, path="/operator")
            assert client.get("/operator/api/summary").status_code == 401  # a forged one does not
            client.cookies.clear()
            client.post("/operator/login", data={"key": ADMIN_KEY})
            out = client.post("/operator/logout")
            assert out.status_code == 303 and 'mpp_operator=""' in out.headers["set-cookie"]


_FORM = {"content-type": "application/x-www-form-urlencoded"}


def test_wrong_keys_are_limited_per_peer_but_a_session_keeps_working() -> None:
    with serve_app(create_app(_settings(ADMIN_KEY))) as url, httpx.Client(base_url=url) as operator:
        assert operator.post("/operator/login", data={"key": ADMIN_KEY}).status_code == 303
        codes = [
            httpx.post(url + "/operator/login", data={"key": f"wrong-{i}"}).status_code
            for i in range(7)
        ]
        assert codes[:5] == [401] * 5 and codes[-1] == 429
        limited = httpx.post(url + "/operator/login", data={"key": ADMIN_KEY})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        bearer = {"Authorization": "Bearer " + ADMIN_KEY}
        assert httpx.get(url + "/operator/api/summary", headers=bearer).status_code == 429
        # The same address with a valid session is not locked out (a shared proxy's address).
        assert operator.get("/operator/api/summary").status_code == 200


# --- in Chromium ---------------------------------------------------------------------------------


@pytest.fixture
def chromium() -> Iterator[Any]:
    """Headless Debian Chromium under playwright, closed at the end (also on failure)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt install chromium)")
    from playwright.sync_api import sync_playwright

    driver = sync_playwright().start()
    try:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        driver.stop()


def test_operator_page_in_chromium(
    chromium: Any,
    devnet_clean: Devnet,
    payee: LocalAccount,
    payer: LocalAccount,
    tmp_path: Path,
) -> None:
    with operator_serve(devnet_clean, payee, tmp_path) as serve:
        url = serve.url
        auth = PaymentAuth(payer_of(payer, devnet_clean, tmp_path, "payer"), allow_insecure=True,
                           deposit=2_000)  # fmt: skip
        with httpx.Client(auth=auth, timeout=60) as client:
            for n in (12, 20):  # the second request reuses the channel
                r = client.post(url + "/v1/chat/completions", json=chat_body(max_tokens=n))
                assert r.status_code == 200
        final = auth.receipts[-1]
        cid, spent = str(final["channelId"]), int(final["spent"])
        refused_voucher(url, cid)
        for path in PATHS:
            assert httpx.get(url + path).status_code == 401

        api = httpx.get(
            url + "/operator/api/summary", headers={"Authorization": "Bearer " + ADMIN_KEY}
        )
        summary = api.json()
        (row,) = summary["channels"]
        assert row["channelId"] == cid and row["spent"]["base"] == str(spent)
        assert row["deposit"] == {"base": "2000", "text": "0.002000"}
        assert summary["spend"]["total"]["base"] == str(spent)

        page = chromium.new_page()
        requested: list[str] = []
        errors: list[str] = []
        page.on("request", lambda req: requested.append(req.url))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        first = page.goto(url + "/operator")
        assert first is not None and first.status == 401
        page.fill("input[name=key]", "not-the-key")
        page.click("button[type=submit]")
        assert "Wrong admin key." in page.inner_text("main")
        page.fill("input[name=key]", ADMIN_KEY)
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-loaded='1']")

        shown = page.inner_text(f"#channels tr[data-channel='{cid}']")
        assert f"{spent} base units" in shown and format_amount(spent, 6) in shown
        assert "2000 base units" in shown and "open" in shown
        assert f"{spent} base units" in page.inner_text("#unsettled-total")  # nothing settled
        assert int(page.get_attribute("#chart", "data-points") or 0) >= 2
        points = (page.get_attribute("#spend-line", "points") or "").split()
        assert len(points) >= 2
        refusals = page.inner_text("#refusals tbody")
        assert "invalid-signature" in refusals and cid[:10] in refusals
        page.screenshot(path=str(tmp_path / "operator.png"), full_page=True)
        assert all(u.startswith(url) for u in requested), requested  # no external fetch
        # No CSP violation, no script error (the login form's 401s are expected).
        assert not [e for e in errors if "status of 401" not in e], errors
        page.close()
