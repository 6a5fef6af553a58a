"""The site index: every site in memory, no query per lookup, and another replica's changes
seen within moments because Postgres announces them; without its connection the backend
reads Postgres again, and the index comes back by itself."""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest

from license_backend.definitions import index as site_index
from license_backend.definitions.index import INDEX_APPLICATION_NAME
from tests.helpers import LbsHandle, eventually, serve_lbs, site_headers

DEFINITIONS = "/v1/definitions/current"
# Announcements arrive in milliseconds; the bound leaves room for a loaded machine.
WITHIN = 5.0


async def poll(lbs: LbsHandle, key: str, installation: str | None = None, etag: str = "") -> int:
    headers = site_headers(key)
    if installation is not None:
        headers["X-Installation-Id"] = installation
    if etag:
        headers["If-None-Match"] = etag
    async with lbs.session.get(lbs.url + DEFINITIONS, headers=headers) as resp:
        await resp.read()
        return resp.status


async def until_live(lbs: LbsHandle) -> None:
    index = lbs.app_sites().index
    assert index is not None

    async def live() -> bool:
        return index.live

    await eventually(live, WITHIN, step=0.02)


@asynccontextmanager
async def other_replica(lbs: LbsHandle) -> AsyncIterator[LbsHandle]:
    """A second backend on the same database, its index live. Its cache keeps entries for
    an hour: only the index's announcements can make it see a change within moments."""
    settings = lbs.settings.model_copy(update={"site_cache_seconds": 3600})
    async with serve_lbs(settings, lbs.admin_token) as replica:
        await until_live(replica)
        yield replica


@asynccontextmanager
async def a_site_on_another_replica(
    lbs: LbsHandle,
) -> AsyncIterator[tuple[dict[str, Any], LbsHandle]]:
    """A new license, polled once (and so activated) through a second backend."""
    lic = await lbs.create_license()
    async with other_replica(lbs) as replica:
        assert await poll(replica, lic["key"]) == 200
        yield lic, replica


async def refused_within(replica: LbsHandle, key: str, status: int) -> None:
    async def refused() -> bool:
        return await poll(replica, key) == status

    await eventually(refused, WITHIN, step=0.02)


async def revoke_unannounced(lbs: LbsHandle, number: str) -> None:
    """Revoke the license's keys with the triggers off: a change nobody is told about."""
    async with lbs.app_pool().acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "UPDATE license_keys SET revoked_at = now() WHERE license_number = $1", number
        )


async def kill_index_connections(lbs: LbsHandle) -> int:
    """Terminate every replica's index connection; return how many there were."""
    killed: int = await lbs.app_pool().fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
        INDEX_APPLICATION_NAME,
    )
    return killed


async def until_down(index: site_index.SiteIndex) -> None:
    async def down() -> bool:
        return not index.live

    await eventually(down, WITHIN, step=0.01)


async def test_a_site_the_cache_does_not_hold_is_answered_without_a_query(
    lbs: LbsHandle,
) -> None:
    await until_live(lbs)
    lic = await lbs.create_license()
    assert await poll(lbs, lic["key"]) == 200  # activates the installation
    sites = lbs.app_sites()
    await lbs.sites_changed()
    read_before = sites.lookups_read
    for _ in range(3):
        sites.invalidate()  # every poll misses the cache
        assert await poll(lbs, lic["key"]) == 200
    assert sites.lookups_read == read_before
    assert sites.index is not None and len(sites.index) == 1
    # The same with the index off: each miss is a lookup read from Postgres.
    sites.index.live = False
    sites.invalidate()
    assert await poll(lbs, lic["key"]) == 200
    assert sites.lookups_read == read_before + 1


async def test_another_replicas_revocation_and_blacklisting_bite_within_moments(
    lbs: LbsHandle,
) -> None:
    revoked, blacklisted = await lbs.create_license(), await lbs.create_license()
    async with other_replica(lbs) as replica:
        for lic in (revoked, blacklisted):
            assert await poll(replica, lic["key"]) == 200  # now cached there
        await lbs.issue_key(revoked["number"], revoke_others=True)
        await lbs.patch(blacklisted["number"], {"blacklisted": True})
        await refused_within(replica, revoked["key"], 401)
        await refused_within(replica, blacklisted["key"], 403)
        # All of it answered by the index: the replica never read a lookup from Postgres.
        assert replica.app_sites().lookups_read == 0


async def test_another_replica_serves_a_new_version_and_a_new_key_within_moments(
    lbs: LbsHandle,
) -> None:
    lic = await lbs.create_license()
    async with other_replica(lbs) as replica:
        async with replica.session.get(
            replica.url + DEFINITIONS, headers=site_headers(lic["key"])
        ) as resp:
            assert resp.status == 200
            etag = resp.headers["ETag"]
        assert await poll(replica, lic["key"], etag=etag) == 304
        await lbs.patch(lic["number"], {"professional": 11})

        async def changed() -> bool:
            return await poll(replica, lic["key"], etag=etag) == 200

        await eventually(changed, WITHIN, step=0.02)
        issued = await lbs.issue_key(lic["number"], revoke_others=False)
        assert await poll(replica, issued["key"]) == 200


async def test_a_slot_freed_through_another_replica_is_free_there_within_moments(
    lbs: LbsHandle,
) -> None:
    lic = await lbs.create_license(maxActivations=1)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    async with other_replica(lbs) as replica:
        assert await poll(replica, lic["key"], first) == 200
        assert await poll(replica, lic["key"], second) == 403  # the one slot is taken
        async with lbs.session.delete(
            f"{lbs.url}/v1/admin/licenses/{lic['number']}/activations/{first}",
            headers=lbs.admin_headers(),
        ) as resp:
            assert resp.status == 204

        async def freed() -> bool:
            return await poll(replica, lic["key"], second) == 200

        await eventually(freed, WITHIN, step=0.02)
        # And the first installation, no longer active, holds no slot there either.
        assert await poll(replica, lic["key"], first) == 403
        assert replica.app_sites().lookups_read == 0


async def test_a_truncate_is_announced_and_every_replica_reads_everything_again(
    lbs: LbsHandle,
) -> None:
    async with a_site_on_another_replica(lbs) as (lic, replica):
        # Without the announcement the replica's index would hold the key for good.
        await lbs.app_pool().execute("TRUNCATE license_keys")
        await refused_within(replica, lic["key"], 401)


async def test_an_operator_can_announce_everything_after_changes_with_triggers_off(
    lbs: LbsHandle,
) -> None:
    async with a_site_on_another_replica(lbs) as (lic, replica):
        await revoke_unannounced(lbs, lic["number"])
        replica.app_sites().invalidate()
        assert await poll(replica, lic["key"]) == 200  # not announced: still valid there
        await lbs.app_pool().execute("SELECT pg_notify('lbs_site_changes', '*')")
        await refused_within(replica, lic["key"], 401)
        index = replica.app_sites().index
        assert index is not None and index.live
        assert replica.app_sites().lookups_read == 0


async def test_losing_its_connection_the_index_falls_back_then_comes_back(
    lbs: LbsHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long enough a pause before reconnecting to see the fallback answer in between.
    monkeypatch.setattr(site_index, "RETRY_SECONDS", (2.0,))
    async with a_site_on_another_replica(lbs) as (lic, replica):
        index = replica.app_sites().index
        assert index is not None
        assert await kill_index_connections(lbs) == 2  # one per replica
        await until_down(index)
        # Still answered, from Postgres, while the index is rebuilt.
        read_before = replica.app_sites().lookups_read
        replica.app_sites().invalidate()
        assert await poll(replica, lic["key"]) == 200
        assert not index.live and replica.app_sites().lookups_read == read_before + 1
        await until_live(replica)
        # Live again, it follows changes again.
        await lbs.issue_key(lic["number"], revoke_others=True)
        await refused_within(replica, lic["key"], 401)


async def test_a_change_committed_while_the_index_was_down_is_in_the_rebuilt_index(
    lbs: LbsHandle,
) -> None:
    async with a_site_on_another_replica(lbs) as (lic, replica):
        index = replica.app_sites().index
        assert index is not None
        # Revoked with no announcement, as a change made while nobody listened.
        await revoke_unannounced(lbs, lic["number"])
        replica.app_sites().invalidate()
        # Unannounced, the index still holds the key as valid: it answers from memory.
        assert await poll(replica, lic["key"]) == 200
        await kill_index_connections(lbs)
        await until_down(index)
        await until_live(replica)
        replica.app_sites().invalidate()
        assert await poll(replica, lic["key"]) == 401


async def test_a_refresh_that_signs_nothing_new_leaves_every_site_cached(lbs: LbsHandle) -> None:
    """A site calling refresh in a loop must not make the replica forget every other site."""
    sites = [await lbs.create_license(), await lbs.create_license()]
    sites_cache = lbs.app_sites().cache

    async def both_cached() -> bool:
        # Polled until the announcements of the first polls (activations) are behind us.
        for lic in sites:
            assert await poll(lbs, lic["key"]) == 200
        return len(sites_cache) == 2

    await eventually(both_cached, WITHIN, step=0.05)
    for _ in range(3):
        async with lbs.session.post(
            lbs.url + "/v1/definitions/refresh", headers=site_headers(sites[0]["key"])
        ) as resp:
            assert resp.status == 202
    assert len(sites_cache) == 2


async def test_last_seen_notes_are_answered_and_give_the_collector_nothing_to_track(
    lbs: LbsHandle,
) -> None:
    from license_backend.keys import ACTIVATIONS

    await until_live(lbs)
    lic = await lbs.create_license()
    active, stranger = uuid.uuid4(), uuid.uuid4()
    assert await poll(lbs, lic["key"], str(active)) == 200  # activates it
    sites = lbs.app_sites()
    index = sites.index
    assert index is not None

    def seen_at(installation: uuid.UUID) -> Any:
        found = sites.recognise_now(("test", str(installation)), lic["key"], installation.hex)
        assert found is not None
        return found[1]

    async def activation_in_index() -> bool:
        return seen_at(active) is not None

    await eventually(activation_in_index, WITHIN, step=0.02)
    later = seen_at(active) + timedelta(hours=1)
    index.seen(lic["number"], active.hex, later)
    index.seen(lic["number"], stranger.hex, later)
    assert seen_at(active) == later  # the note, until the write of it is read back
    assert seen_at(stranger) is None  # a note activates nothing
    index.seen(lic["number"], active.hex, later - timedelta(hours=2))
    assert seen_at(active) == later  # never moved back

    # A poll of a site last seen long ago is noted in both places; neither keeps an object
    # the garbage collector would have to walk.
    activations = lbs.app[ACTIVATIONS]
    assert activations.note_seen(lic["number"], active.hex, "127.0.0.1", later - timedelta(days=1))
    gc.collect()
    assert not gc.is_tracked(index._notes) and not gc.is_tracked(activations._pending_at)
    assert not gc.is_tracked(activations._pending_from)
