"""Reservations and their release (SES-27/28/30), and session challenge expiry (AMB-05/06).

Pure `accounting.apply_release` plus the engine's reserve → commit / release cycle on a memory
store with a chain that must not be called. Rows: SES-28 (spent persisted before delivery),
SES-30 (reserve an estimate, give back the rest), SES-33 (receipt `spent`), SES-36/AMB-02 (a
finalized row is left alone), CORE-14/26 + AMB-05/06 (expired challenge types).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpp.core.binding import ChallengeIssuer
from mpp.core.errors import ChallengeExpired, ChallengeNotFound, ChannelNotFound, InvalidChallenge
from mpp.session import accounting as acc
from mpp.session.engine import SessionServer
from mpp.session.ports import Mutation
from mpp.store.memory import MemoryStore
from tests.session._workers import CID, NOW, NoChain, state, terms

SECRET = b"release-test-secret-0123456789abcdef"


def server_with(**kw: Any) -> SessionServer:
    store = MemoryStore()
    store.update(CID, lambda _cur: Mutation(state(**kw)))
    return SessionServer(store, NoChain(), terms(), now=lambda: NOW)


# --- the pure decision ------------------------------------------------------------------------


def test_ses_30_apply_release_lowers_spent_and_keeps_the_rest() -> None:
    cur = state(accepted_cumulative=500, spent=300)
    new = acc.apply_release(cur, 120, now=NOW + 1).state
    assert new is not None and (new.spent, new.updated_at) == (180, NOW + 1)
    assert acc.apply_release(cur, 0, now=NOW).state is None


def test_ses_30_release_has_no_settled_floor() -> None:
    """A row settled by an older version may hold settled > spent: a `settled` floor would keep
    undelivered units billed. 50 delivered, settled 100, 150 reserved then released → 50."""
    cur = state(accepted_cumulative=200, settled=100, spent=50 + 150)
    new = acc.apply_release(cur, 150, now=NOW).state
    assert new is not None and new.spent == 50


def test_ses_36_release_on_a_finalized_row_keeps_the_books_on_what_was_delivered() -> None:
    """A close captures spent minus the undelivered holds; releasing them afterwards leaves
    the row saying exactly what was delivered (and captured)."""
    new = acc.apply_release(state(spent=100, finalized=True), 40, now=NOW).state
    assert new is not None and new.spent == 60 and new.finalized


def test_ses_30_release_refuses_bad_amounts() -> None:
    with pytest.raises(ValueError):
        acc.apply_release(state(spent=10, accepted_cumulative=10), 11, now=NOW)
    with pytest.raises(ValueError):
        acc.apply_release(state(spent=10, accepted_cumulative=10), -1, now=NOW)
    with pytest.raises(ChannelNotFound):
        acc.apply_release(None, 1, now=NOW)


@settings(max_examples=200, deadline=None)
@given(
    delivered=st.integers(0, 10**6),
    reserved=st.integers(0, 10**6),
    settled=st.integers(0, 2 * 10**6),
    used=st.integers(0, 10**6),
)
def test_ses_30_charge_then_release_spends_exactly_what_was_delivered(
    delivered: int, reserved: int, settled: int, used: int
) -> None:
    used = min(used, reserved)
    cur = state(accepted_cumulative=4 * 10**6, settled=settled, spent=delivered)
    charged = acc.apply_charge(cur, reserved, now=NOW).state or cur
    back = acc.apply_release(charged, reserved - used, now=NOW).state or charged
    assert back.spent == delivered + used


# --- the engine: reserve, commit, release ------------------------------------------------------


def test_ses_30_33_reserved_units_stay_out_of_receipts_until_committed() -> None:
    server = server_with(accepted_cumulative=1_000, spent=100)
    reserved = server.charge(CID, 250, challenge_id="ch", reserve=True)
    assert reserved.spent == 350 and server.store.get(CID) == reserved  # SES-28: persisted
    assert server.held(CID) == 250
    assert server.receipt(reserved, challenge_id="ch")["spent"] == "100"
    server.commit(CID, 75)  # delivered
    assert server.receipt(reserved, challenge_id="ch")["spent"] == "175"
    after = server.release(CID, 175, challenge_id="ch")  # the unsent rest goes back
    assert after is not None and after.spent == 175 and server.held(CID) == 0
    assert server.receipt(after, challenge_id="ch")["spent"] == "175"


def test_ses_30_release_never_exceeds_this_process_reservation() -> None:
    """Only reserved, uncommitted units can be released: `spent` never drops below what was
    delivered, whatever the caller asks (a plain charge is delivered by definition)."""
    server = server_with(accepted_cumulative=1_000)
    server.charge(CID, 100)  # not a reservation
    server.charge(CID, 40, reserve=True)
    after = server.release(CID, 500, challenge_id="ch")
    assert after is not None and after.spent == 100
    unchanged = server.release(CID, 10, challenge_id="ch")
    assert unchanged is not None and unchanged.spent == 100


def test_ses_36_release_after_close_froze_the_row_gives_the_units_back() -> None:
    """A close captures spent minus the holds: the undelivered units go back afterwards, so
    the frozen row ends up saying what was delivered (and captured)."""
    server = server_with(accepted_cumulative=1_000)
    server.charge(CID, 300, reserve=True)
    server.store.update(CID, lambda cur: acc.apply_freeze(cur, now=NOW))
    after = server.release(CID, 300, challenge_id="ch")
    assert after is not None and after.spent == 0 and after.finalized
    assert server.held(CID) == 0


# --- challenge expiry: core type, session mapping (AMB-05/06) ----------------------------------


def _expired_challenge() -> tuple[ChallengeIssuer, Any, datetime]:
    issuer = ChallengeIssuer(SECRET, realm="test.local")
    issued = datetime(2026, 1, 1, tzinfo=UTC)
    ch = issuer.issue(method="tempo", intent="session", request=terms().to_request(), now=issued)
    return issuer, ch, issued + issuer.ttl


def test_core_26_amb_06_core_expiry_is_an_invalid_challenge() -> None:
    issuer, ch, later = _expired_challenge()
    with pytest.raises(ChallengeExpired) as err:
        issuer.check_binding(ch, now=later)
    assert isinstance(err.value, InvalidChallenge)
    assert err.value.to_problem()["type"].endswith("/invalid-challenge")
    issuer.check_binding(ch, now=later - timedelta(seconds=1))  # still fresh


def test_amb_05_06_session_maps_expiry_to_challenge_not_found() -> None:
    issuer, ch, later = _expired_challenge()
    with pytest.raises(ChallengeNotFound) as err:
        SessionServer.check_challenge(issuer, ch, now=later)
    assert err.value.to_problem()["type"].endswith("/session/challenge-not-found")
    # Other binding failures keep the core type.
    other = ChallengeIssuer(SECRET[::-1], realm="test.local")
    with pytest.raises(InvalidChallenge) as bad:
        SessionServer.check_challenge(other, ch, now=later - timedelta(seconds=1))
    assert not isinstance(bad.value, ChallengeExpired)
