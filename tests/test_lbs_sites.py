"""Sites recognised by the hash of their signed key, cached per replica without stampedes:
what the hash answers equals what a signature verification would, revocation still bites,
and definitions are re-signed only when due."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from license_backend.activations import service as activations_service
from license_backend.definitions.cache import LookupCache, SingleFlight
from license_backend.definitions.service import RENEWAL_SPREAD, key_hash, renewal_due
from license_backend.keys import ACTIVATIONS
from tests.helpers import LbsHandle, serve_lbs, site_headers


async def status_of(lbs: LbsHandle, key: str, path: str = "/v1/definitions/current") -> int:
    async with lbs.session.get(lbs.url + path, headers=site_headers(key)) as resp:
        await resp.read()
        return resp.status


async def stored_key(lbs: LbsHandle, number: str) -> Any:
    return await lbs.app_pool().fetchrow(
        "SELECT jti, key_hash, kid FROM license_keys WHERE license_number = $1", number
    )


async def test_an_issued_key_is_stored_as_the_hash_of_issuer_and_token(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    row = await stored_key(lbs, lic["number"])
    expected = hashlib.sha256(f"http://lbs.test\n{lic['key']}".encode()).digest()
    assert bytes(row["key_hash"]) == expected == key_hash("http://lbs.test", lic["key"])
    assert row["kid"] == lbs.app_keyring().current_kid
    issued = await lbs.issue_key(lic["number"], revoke_others=False)
    hashes = await lbs.app_pool().fetchval(
        "SELECT count(DISTINCT key_hash) FROM license_keys WHERE license_number = $1",
        lic["number"],
    )
    assert hashes == 2 and issued["key"] != lic["key"]


async def test_the_hash_alone_recognises_a_key_no_signature_is_checked(lbs: LbsHandle) -> None:
    """A stored hash is taken as proof that the backend issued that exact token: a token
    whose signature is garbage is accepted once its hash is the stored one. (Only the backend
    writes these hashes; this shows the lookup is what answers.)"""
    lic = await lbs.create_license()
    header, payload, _ = lic["key"].split(".")
    unsigned = f"{header}.{payload}.AAAA"
    assert await status_of(lbs, unsigned) == 401
    await lbs.app_pool().execute(
        "UPDATE license_keys SET key_hash = $2 WHERE license_number = $1",
        lic["number"],
        key_hash("http://lbs.test", unsigned),
    )
    await lbs.sites_changed()
    assert await status_of(lbs, unsigned) == 200
    # The genuine token no longer matches a hash; it verifies and is still accepted.
    assert await status_of(lbs, lic["key"]) == 200


async def test_a_key_issued_before_hashes_is_verified_once_then_found_by_hash(
    lbs: LbsHandle,
) -> None:
    lic = await lbs.create_license()
    pool = lbs.app_pool()
    await pool.execute("UPDATE license_keys SET key_hash = NULL, kid = NULL")
    await lbs.sites_changed()
    assert await status_of(lbs, lic["key"]) == 200
    row = await stored_key(lbs, lic["number"])
    assert bytes(row["key_hash"]) == key_hash("http://lbs.test", lic["key"])
    assert row["kid"] == lbs.app_keyring().current_kid
    # A forged token of that license is verified (it has no hash) and refused.
    header, payload, signature = lic["key"].split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    assert await status_of(lbs, forged) == 401
    # A verified legacy key that was revoked is refused, and still refused once it is found
    # by the hash its verification recorded.
    other = await lbs.create_license()
    await pool.execute(
        "UPDATE license_keys SET key_hash = NULL, kid = NULL, revoked_at = now()"
        " WHERE license_number = $1",
        other["number"],
    )
    await lbs.sites_changed()
    assert await status_of(lbs, other["key"]) == 401
    assert (await stored_key(lbs, other["number"]))["key_hash"] is not None
    await lbs.sites_changed()
    assert await status_of(lbs, other["key"]) == 401


async def test_a_key_signed_by_a_retired_signing_key_is_refused(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    assert await status_of(lbs, lic["key"]) == 200
    async with lbs.session.post(
        f"{lbs.url}/v1/admin/signing-keys/rotate", headers=lbs.admin_headers()
    ) as resp:
        assert resp.status == 201
    old_kid = (await stored_key(lbs, lic["number"]))["kid"]
    pool = lbs.app_pool()
    await pool.execute("UPDATE signing_keys SET retired_at = now() WHERE kid = $1", old_kid)
    async with pool.acquire() as conn:
        await lbs.app_keyring().load(conn)
    await lbs.sites_changed()
    async with lbs.session.get(
        f"{lbs.url}/v1/definitions/current", headers=site_headers(lic["key"])
    ) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["details"] == {"reason": "unknown kid"}


async def test_a_backend_with_another_public_url_refuses_the_keys(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    moved = lbs.settings.model_copy(update={"public_url": "http://elsewhere.test"})
    async with serve_lbs(moved, lbs.admin_token) as other:
        assert await status_of(other, lic["key"]) == 401
    assert await status_of(lbs, lic["key"]) == 200


async def test_revocation_and_blacklisting_bite_at_once_on_the_replica_that_made_them(
    lbs: LbsHandle,
) -> None:
    lic = await lbs.create_license()
    assert await status_of(lbs, lic["key"]) == 200  # now cached here
    await lbs.issue_key(lic["number"], revoke_others=True)
    assert await status_of(lbs, lic["key"]) == 401

    other = await lbs.create_license()
    assert await status_of(lbs, other["key"]) == 200
    await lbs.patch(other["number"], {"blacklisted": True})
    assert await status_of(lbs, other["key"]) == 403


async def test_without_the_index_another_replica_sees_a_revocation_when_its_entry_expires(
    lbs: LbsHandle,
) -> None:
    lic = await lbs.create_license()
    no_index = lbs.settings.model_copy(update={"site_index": False})
    uncached = no_index.model_copy(update={"site_cache_seconds": 0})
    async with (
        serve_lbs(no_index, lbs.admin_token) as cached,
        serve_lbs(uncached, lbs.admin_token) as fresh,
    ):
        for replica in (cached, fresh):
            assert await status_of(replica, lic["key"]) == 200
        await lbs.issue_key(lic["number"], revoke_others=True)
        # Within its cache time the other replica still answers from what it read ...
        assert await status_of(cached, lic["key"]) == 200
        # ... and reads again once the entry is gone; without a cache at once.
        cached.app_sites().cache.clear()
        assert await status_of(cached, lic["key"]) == 401
        assert await status_of(fresh, lic["key"]) == 401


async def test_concurrent_first_calls_of_one_site_all_pass_and_activate_once(
    lbs: LbsHandle,
) -> None:
    lic = await lbs.create_license(maxActivations=1)
    results = await asyncio.gather(*(status_of(lbs, lic["key"]) for _ in range(20)))
    assert results == [200] * 20
    count = await lbs.app_pool().fetchval(
        "SELECT count(*) FROM activations WHERE license_number = $1", lic["number"]
    )
    assert count == 1


async def test_last_seen_times_are_written_together_by_the_flush(
    lbs: LbsHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(activations_service, "FLUSH_CHUNK", 2)  # three times: two statements
    lic = await lbs.create_license(maxActivations=3)
    installations = [str(uuid.uuid4()) for _ in range(3)]
    for installation in installations:
        headers = {"Authorization": f"Bearer {lic['key']}", "X-Installation-Id": installation}
        async with lbs.session.get(f"{lbs.url}/v1/definitions/current", headers=headers) as resp:
            assert resp.status == 200
    pool = lbs.app_pool()
    await pool.execute("UPDATE activations SET last_seen_at = now() - interval '2 hours'")
    await lbs.sites_changed()
    for installation in installations:
        headers = {"Authorization": f"Bearer {lic['key']}", "X-Installation-Id": installation}
        async with lbs.session.get(f"{lbs.url}/v1/definitions/current", headers=headers) as resp:
            assert resp.status == 200
    stale = "SELECT count(*) FROM activations WHERE last_seen_at < now() - interval '1 minute'"
    # Nothing written by the requests themselves (unless the once-a-second flush ran) ...
    written = await lbs.app[ACTIVATIONS].flush()
    assert written in (0, 3)
    # ... and after a flush every one is current.
    assert await pool.fetchval(stale) == 0


def test_renewal_is_spread_between_three_eighths_and_half_of_the_ttl() -> None:
    issued = datetime(2026, 1, 1, tzinfo=UTC)
    ttl = 30 * 24 * 3600
    dues = {
        number: renewal_due(number, issued, ttl) - issued
        for number in (f"{n:016d}" for n in range(0, 10**6, 997))
    }
    assert all(
        timedelta(seconds=ttl / 2 * (1 - RENEWAL_SPREAD)) <= due <= timedelta(seconds=ttl / 2)
        for due in dues.values()
    )
    # Spread over the window, not bunched: many distinct due times, both ends reached.
    assert len(set(dues.values())) > 900
    assert max(dues.values()) - min(dues.values()) > timedelta(seconds=ttl / 2 * 0.24)
    # The same license has the same due time on every replica.
    assert renewal_due("1234567812345678", issued, ttl) == renewal_due(
        "1234567812345678", issued, ttl
    )


async def test_a_definition_is_re_signed_at_its_due_time_and_not_before(lbs: LbsHandle) -> None:
    lic = await lbs.create_license()
    number = lic["number"]
    pool = lbs.app_pool()
    ttl = lbs.settings.definition_ttl_seconds
    issued = await pool.fetchval(
        "SELECT issued_at FROM definitions WHERE license_number = $1", number
    )
    due = renewal_due(number, issued, ttl) - issued

    async def aged(by: timedelta) -> str:
        await pool.execute(
            "UPDATE definitions SET issued_at = now() - $2::interval WHERE license_number = $1",
            number,
            by,
        )
        await lbs.sites_changed()
        async with lbs.session.get(
            f"{lbs.url}/v1/definitions/current", headers=site_headers(lic["key"])
        ) as resp:
            assert resp.status == 200
            return resp.headers["ETag"]

    before = await aged(due - timedelta(minutes=5))
    assert await aged(due - timedelta(minutes=5)) == before
    renewed = await aged(due + timedelta(minutes=5))
    assert renewed != before
    # Renewed once: the next call serves the new one as it is.
    async with lbs.session.get(
        f"{lbs.url}/v1/definitions/current",
        headers=site_headers(lic["key"], **{"If-None-Match": renewed}),
    ) as resp:
        assert resp.status == 304


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_loaded_together_expire_spread_over_half_the_ttl() -> None:
    clock = FakeClock()
    draws = iter([i / 100 for i in range(100)])
    cache: LookupCache[int, str] = LookupCache(10.0, 1000, clock=clock, jitter=lambda: next(draws))
    for key in range(100):
        cache.put(key, f"v{key}")
    clock.now += 4.99
    assert len([k for k in range(100) if cache.get(k) is not None]) == 100
    clock.now = 1000.0 + 7.5
    alive = [k for k in range(100) if cache.get(k) is not None]
    assert 40 <= len(alive) <= 60  # about half expired halfway through the window
    clock.now = 1000.0 + 10.0
    assert all(cache.get(k) is None for k in range(100))


def test_the_cache_is_bounded_and_drops_the_oldest() -> None:
    cache: LookupCache[int, int] = LookupCache(60.0, 3, clock=FakeClock())
    for key in range(5):
        cache.put(key, key)
    assert len(cache) == 3
    assert [cache.get(k) for k in range(5)] == [None, None, 2, 3, 4]


def test_a_key_is_kept_from_its_second_ask_within_two_windows() -> None:
    clock = FakeClock()
    cache: LookupCache[str, str] = LookupCache(10.0, 100, clock=clock, jitter=lambda: 1.0)
    cache.put_if_asked_again("once", "v")
    assert cache.get("once") is None and len(cache) == 0  # asked once: nothing kept
    clock.now += 15.0  # the next window: the first ask still counts
    cache.put_if_asked_again("once", "v")
    assert cache.get("once") == "v"
    cache.put_if_asked_again("late", "v")
    clock.now += 20.1  # two windows later: forgotten
    cache.put_if_asked_again("late", "v")
    assert cache.get("late") is None
    cache.clear()  # a change forgets the asks too
    cache.put_if_asked_again("late", "v")
    assert cache.get("late") is None


async def test_concurrent_misses_of_one_key_load_once() -> None:
    cache: LookupCache[str, int] = LookupCache(60.0, 100)
    calls = 0
    release = asyncio.Event()

    async def load() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return 42

    waiting = [asyncio.create_task(cache.load("k", load)) for _ in range(10)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == [42] * 10
    assert calls == 1 and cache.get("k") == 42


async def test_a_failed_load_is_shared_and_not_kept() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    release = asyncio.Event()

    async def load() -> int:
        await release.wait()
        raise LookupError("gone")

    waiting = [asyncio.create_task(flight.run("k", load)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(o, LookupError) for o in outcomes)
    assert len(flight) == 0


async def test_a_load_under_way_when_the_cache_is_cleared_keeps_nothing() -> None:
    cache: LookupCache[str, str] = LookupCache(60.0, 100)
    release = asyncio.Event()
    loads = 0

    async def load() -> str:
        nonlocal loads
        loads += 1
        mine = loads
        await release.wait()
        return f"load #{mine}"

    first = asyncio.create_task(cache.load("k", load))
    await asyncio.sleep(0)
    cache.clear()  # a revocation committed while the load was reading
    # A caller arriving after the clear does not join the old load: it reads again.
    second = asyncio.create_task(cache.load("k", load))
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, second)
    assert loads == 2
    assert cache.get("k") == "load #2"
