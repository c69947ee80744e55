"""The Store port contract (mpp/session/ports.py), run against memory, SQLite and PostgreSQL.

Rows: SES-05 (lowercase ids), SES-25 (persist highest voucher + challenge→voucher audit),
SES-26 (linearizable per-channel accounting), SES-28 (nothing half-written), SES-29
(idempotency), AMB-01 (state keyed by channel id only; challenge id recorded per voucher).
"""

from __future__ import annotations

import dataclasses
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpp.session.ports import ChannelState, Mutation, Store, VoucherRecord
from tests.store._support import MAX_U128, accept, channel_id, create, new_state

CID = channel_id(0xC0FFEE)


class Boom(Exception):
    pass


def test_get_missing_is_none(store: Store) -> None:
    assert store.get(CID) is None
    assert store.vouchers(CID) == []
    assert store.channels() == []


def test_ses26_create_get_update(store: Store) -> None:
    seen: list[ChannelState | None] = []

    def first(cur: ChannelState | None) -> Mutation:
        seen.append(cur)
        return create(CID)

    created = store.update(CID, first)
    assert seen == [None]
    assert created == new_state(CID)
    assert store.get(CID) == created

    def charge(cur: ChannelState | None) -> Mutation:
        assert cur is not None
        return Mutation(dataclasses.replace(cur, accepted_cumulative=100, spent=40, settled=10))

    after = store.update(CID, charge)
    assert after is not None and (after.accepted_cumulative, after.spent, after.settled) == (
        100,
        40,
        10,
    )
    assert after.available == 60
    assert store.get(CID) == after


def test_ses28_decide_raising_writes_nothing(store: Store) -> None:
    def bad_create(cur: ChannelState | None) -> Mutation:
        raise Boom

    with pytest.raises(Boom):
        store.update(CID, bad_create)
    assert store.get(CID) is None

    store.update(CID, lambda cur: create(CID))
    before = store.get(CID)

    def half_decided(cur: ChannelState | None) -> Mutation:
        assert cur is not None
        accept(cur, 5, "ch-1")  # builds a mutation, then fails before returning it
        raise Boom

    with pytest.raises(Boom):
        store.update(CID, half_decided)
    assert store.get(CID) == before
    assert store.vouchers(CID) == []
    # The store is still usable after the rollback.
    assert store.update(CID, lambda cur: accept(cur, 5, "ch-1") if cur else create(CID))


def test_ses28_invalid_mutation_rolls_back(store: Store) -> None:
    store.update(CID, lambda cur: create(CID))
    other = channel_id(2)
    with pytest.raises(ValueError):
        store.update(CID, lambda cur: create(other))  # state for another channel
    with pytest.raises(ValueError):
        store.update(
            CID, lambda cur: Mutation(None, (VoucherRecord(other, 1, "0x", "c", 0),))
        )  # audit row for another channel
    with pytest.raises(ValueError):
        store.update(CID, lambda cur: create(CID, spent=MAX_U128 + 1))  # beyond uint128
    with pytest.raises(TypeError):
        store.update(CID, lambda cur: cur)  # type: ignore[arg-type, return-value]
    assert store.get(CID) == new_state(CID)
    assert store.vouchers(CID) == []
    assert store.get(other) is None


def test_ses25_state_none_keeps_state_but_appends_audit(store: Store) -> None:
    store.update(CID, lambda cur: create(CID, accepted_cumulative=9))
    row = VoucherRecord(CID, 9, "0x" + "11" * 65, "challenge-a", 1700)
    result = store.update(CID, lambda cur: Mutation(None, (row,)))
    assert result == store.get(CID) == new_state(CID, accepted_cumulative=9)
    assert store.vouchers(CID) == [row]
    # Mutation(None) on a missing channel stays missing.
    assert store.update(channel_id(3), lambda cur: Mutation(None)) is None
    assert store.get(channel_id(3)) is None


def test_ses25_amb01_audit_trail_in_insertion_order(store: Store) -> None:
    other = channel_id(7)
    store.update(CID, lambda cur: create(CID))
    store.update(other, lambda cur: create(other))
    for i, challenge in enumerate(["ch-a", "ch-b", "ch-a", "ch-c", "ch-b"]):
        store.update(CID, lambda cur, c=challenge, i=i: accept(cur, 10 + i, c, at=1000 - i))  # type: ignore[misc]
        store.update(other, lambda cur, i=i: accept(cur, 1, f"x{i}"))  # type: ignore[misc]

    def two_rows(cur: ChannelState | None) -> Mutation:
        assert cur is not None
        m1 = accept(cur, 1, "ch-d")
        assert m1.state is not None
        m2 = accept(m1.state, 1, "ch-e")
        return Mutation(m2.state, m1.vouchers + m2.vouchers)

    store.update(CID, two_rows)
    trail = store.vouchers(CID)
    assert [v.challenge_id for v in trail] == [
        "ch-a",
        "ch-b",
        "ch-a",
        "ch-c",
        "ch-b",
        "ch-d",
        "ch-e",
    ]
    assert [v.cumulative_amount for v in trail] == [10, 21, 33, 46, 60, 61, 62]
    # Insertion order, not received_at order (received_at decreases here on purpose).
    assert [v.received_at for v in trail][:5] == [1000, 999, 998, 997, 996]
    state = store.get(CID)
    assert state is not None
    assert state.accepted_cumulative == 62 and state.voucher_signature == trail[-1].signature
    assert [v.challenge_id for v in store.vouchers(other)] == [f"x{i}" for i in range(5)]


def test_ses05_amb01_ids_normalized_to_lowercase(store: Store) -> None:
    mixed = "0x" + "AbCdEf" * 10 + "ABCD"
    lower = mixed.lower()
    result = store.update(mixed, lambda cur: create(mixed.upper().replace("0X", "0x")))
    assert result is not None and result.channel_id == lower
    store.update(
        mixed.upper().replace("0X", "0x"), lambda cur: accept(cur, 3, "c") if cur else create(lower)
    )
    state = store.get(lower)
    assert state is not None and state.channel_id == lower and state.accepted_cumulative == 3
    assert store.get(mixed) == state
    assert [v.channel_id for v in store.vouchers(mixed)] == [lower]
    assert [s.channel_id for s in store.channels()] == [lower]


def test_uint128_amounts_round_trip_exactly(store: Store) -> None:
    big = MAX_U128
    state = new_state(CID, deposit=big, settled=big - 3, spent=big - 2, accepted_cumulative=big - 1)
    row = VoucherRecord(CID, big, "0x" + "ab" * 65, "c", 2**40)
    store.update(CID, lambda cur: Mutation(state, (row,)))
    got = store.get(CID)
    assert got == state
    assert got is not None and type(got.deposit) is int and got.deposit == 2**128 - 1
    assert store.vouchers(CID) == [row]
    assert type(store.vouchers(CID)[0].cumulative_amount) is int
    assert store.channels() == [state]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(amounts=st.lists(st.integers(0, MAX_U128), min_size=4, max_size=4), n=st.integers(0, 2**32))
def test_any_uint128_round_trips(store: Store, amounts: list[int], n: int) -> None:
    settled, spent, accepted, deposit = sorted(amounts)
    cid = channel_id(n)
    state = new_state(
        cid, deposit=deposit, settled=settled, spent=spent, accepted_cumulative=accepted
    )
    store.update(cid, lambda cur: Mutation(state))
    assert store.get(cid) == state


def test_channels_lists_every_state(store: Store) -> None:
    ids = [channel_id(n) for n in (5, 1, 3)]
    for cid in ids:
        store.update(cid, lambda cur, cid=cid: create(cid))  # type: ignore[misc]
    assert sorted(s.channel_id for s in store.channels()) == sorted(ids)
    assert all(s == new_state(s.channel_id) for s in store.channels())


def test_ses29_idempotency_first_writer_wins(store: Store) -> None:
    assert store.get_idempotent("challenge-1", "key-1") is None
    assert store.put_idempotent("challenge-1", "key-1", b"first") is True
    assert store.put_idempotent("challenge-1", "key-1", b"second") is False
    assert store.get_idempotent("challenge-1", "key-1") == b"first"
    # Scoped by challenge (AMB-01): the same key under another challenge is another record.
    assert store.get_idempotent("challenge-2", "key-1") is None
    assert store.put_idempotent("challenge-2", "key-1", b"\x00\xff" * 100) is True
    assert store.get_idempotent("challenge-2", "key-1") == b"\x00\xff" * 100


def test_ses29_idempotency_reserve_then_replace(store: Store) -> None:
    """SES-29: a request reserves its key (pending marker), then replaces it with its response."""
    assert store.put_idempotent("c", "k", b"pending") is True
    assert store.put_idempotent("c", "k", b"duplicate") is False
    store.replace_idempotent("c", "k", b"final response")
    assert store.get_idempotent("c", "k") == b"final response"
    store.replace_idempotent("c", "new", b"direct")
    assert store.get_idempotent("c", "new") == b"direct"


def test_ses29_idempotency_compare_and_delete(store: Store) -> None:
    """SES-29: a request frees only its own pending marker, so a failed request lets the
    client retry with the same key, and never erases another request's record."""
    assert store.put_idempotent("c", "k", b"pending-A") is True
    assert store.delete_idempotent("c", "k", b"pending-B") is False
    assert store.get_idempotent("c", "k") == b"pending-A"
    assert store.delete_idempotent("c", "k", b"pending-A") is True
    assert store.get_idempotent("c", "k") is None
    assert store.delete_idempotent("c", "k", b"pending-A") is False
    assert store.put_idempotent("c", "k", b"pending-B") is True  # the key is free again


def test_ses29_idempotency_concurrent_put_has_one_winner(store: Store) -> None:
    barrier = threading.Barrier(8)
    results: dict[int, bool] = {}

    def put(i: int) -> None:
        barrier.wait()
        results[i] = store.put_idempotent("c", "k", f"resp-{i}".encode())

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, won in results.items() if won]
    assert len(results) == 8 and len(winners) == 1
    assert store.get_idempotent("c", "k") == f"resp-{winners[0]}".encode()


def test_ses26_threads_never_lose_an_update(store: Store) -> None:
    """SES-26: 8 threads x 50 read-modify-write updates on one channel → exact final value."""
    store.update(CID, lambda cur: create(CID))
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait()
            for i in range(50):
                store.update(CID, lambda cur, i=i: accept(cur, 1, f"t{t}-{i}"))  # type: ignore[misc]
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    state = store.get(CID)
    assert state is not None and state.accepted_cumulative == 400
    trail = store.vouchers(CID)
    # Every update saw its predecessor's result: the audit trail counts 1..400 in order.
    assert [v.cumulative_amount for v in trail] == list(range(1, 401))
    assert len({v.challenge_id for v in trail}) == 400


def test_ses26_concurrent_creators_serialize(store: Store) -> None:
    """Two creators of a channel that does not exist yet: exactly one sees None."""
    barrier = threading.Barrier(6)
    saw_none: list[int] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        def decide(cur: ChannelState | None) -> Mutation:
            if cur is None:
                with lock:
                    saw_none.append(t)
                return create(CID, accepted_cumulative=1)
            return accept(cur, 1, f"t{t}")

        barrier.wait()
        store.update(CID, decide)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(saw_none) == 1
    state = store.get(CID)
    assert state is not None and state.accepted_cumulative == 6


def test_close_then_use_fails(store_dsn: str) -> None:
    from mpp.store.open import open_store

    s = open_store(store_dsn)
    s.close()
    with pytest.raises(Exception):  # noqa: B017 - adapters raise their own "closed" errors
        s.update(CID, lambda cur: create(CID))


def test_meta_settings_are_durable_and_overwritten(store: Store) -> None:
    """The chain watcher keeps its block cursor here (SES-43: catch up after downtime)."""
    assert store.get_meta("watcher:cursor") is None
    store.put_meta("watcher:cursor", "41")
    store.put_meta("watcher:cursor", "42")
    store.put_meta("other", "x")
    assert store.get_meta("watcher:cursor") == "42"
    assert store.get_meta("other") == "x"
