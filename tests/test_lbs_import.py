"""`license-backend license import`: JSON lines in, licenses with working keys out; bad lines
refused with their number and reason while the good ones are imported; batches all or none."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from license_backend.settings import LbsSettings
from tests.conftest import ADMIN_TOKEN, DatabaseFactory
from tests.helpers import serve_lbs, site_headers


@pytest.fixture
async def database(databases: DatabaseFactory) -> str:
    return await databases.clone("lbs")


def env_for(database: str, encryption_key: str) -> dict[str, str]:
    return {
        **os.environ,
        "LBS_DATABASE_URL": database,
        "LBS_KEY_ENCRYPTION_KEY": encryption_key,
        "LBS_CONTROL_SECRET": "test-control-secret",
        "LBS_PUBLIC_URL": "http://lbs.test",
        "LBS_LOG_FORMAT": "json",
    }


async def run_import(env: dict[str, str], *args: str, stdin: bytes | None = None) -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "license_backend.cli",
        "license",
        "import",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await proc.communicate(stdin)
    return proc.returncode, out.decode(), err.decode()


def body(owner: str, **fields: Any) -> dict[str, Any]:
    return {
        "owner": owner,
        "organization": "Imported AB",
        "professional": 3,
        "analyzer": 4,
        **fields,
    }


async def test_good_lines_are_imported_and_bad_ones_refused_by_number(
    database: str, encryption_key: str, lbs_settings: LbsSettings, tmp_path: Path
) -> None:
    lines: list[bytes] = [
        json.dumps(body("Ada", tokens=5, validTo="2031-12-31", maxActivations=3)).encode(),
        b"{not json",
        json.dumps(body("Bo", professional="ten")).encode(),
        b"",
        b"   ",
        json.dumps([body("In a list")]).encode(),
        b'{"owner": "' + b"x" * 200_000 + b'"}',
        json.dumps(body("Cy", validFrom="2030-01-01", validTo="2029-01-01")).encode(),
        b"\xff\xfe not text",
        json.dumps(body("Nul\u0000")).encode(),
        b"[" * 30_000 + b"]" * 30_000,
        json.dumps(body("Di", bogus=1)).encode(),
        json.dumps(body("Eve", overage=True)).encode(),
    ]
    path = tmp_path / "catalog.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    code, out, err = await run_import(env_for(database, encryption_key), str(path), "--json")
    assert code == 1, err
    results = [json.loads(line) for line in out.splitlines()]
    summary = results.pop()
    assert summary == {"imported": 2, "refused": 9}
    refused = {r["line"]: r["error"] for r in results if "error" in r}
    assert sorted(refused) == [2, 3, 6, 7, 8, 9, 10, 11, 12]
    assert refused[2].startswith("not valid JSON")
    assert refused[3].startswith("professional: ")
    assert refused[6] == "expected a JSON object, got list"
    assert refused[7] == "line longer than 65536 bytes"
    assert refused[8] == "validTo: before validFrom"
    assert refused[9].startswith("not UTF-8 text")
    assert "NUL" in refused[10]
    assert refused[11].startswith("not valid JSON")
    assert refused[12].startswith("bogus: ")
    imported = {r["line"]: r for r in results if "key" in r}
    assert sorted(imported) == [1, 13]  # lines 4 and 5 are blank: skipped
    assert all(len(r["number"]) == 16 and len(r["control"]) == 5 for r in imported.values())

    settings = lbs_settings.model_copy(update={"database_url": database})
    async with serve_lbs(settings, ADMIN_TOKEN) as lbs:
        async with lbs.session.get(
            f"{lbs.url}/v1/definitions/current", headers=site_headers(imported[1]["key"])
        ) as resp:
            assert resp.status == 200
        async with lbs.session.get(
            f"{lbs.url}/v1/admin/licenses/{imported[1]['number']}", headers=lbs.admin_headers()
        ) as resp:
            ada = await resp.json()
        assert (ada["owner"], ada["tokens"], ada["validTo"], ada["maxActivations"]) == (
            "Ada",
            5,
            "2031-12-31",
            3,
        )
        assert ada["control"] == imported[1]["control"]
        async with lbs.session.get(
            f"{lbs.url}/v1/admin/licenses/{imported[13]['number']}", headers=lbs.admin_headers()
        ) as resp:
            assert (await resp.json())["overage"]["analyzer"] is True


async def test_text_output_from_stdin_and_exit_zero_when_all_lines_are_imported(
    database: str, encryption_key: str
) -> None:
    text = "\n".join(json.dumps(body(f"Owner {i}")) for i in range(5)).encode()
    code, out, err = await run_import(env_for(database, encryption_key), "-", stdin=text)
    assert code == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5]
    assert all(len(r) == 4 and r[3].count(".") == 2 for r in rows)
    assert "imported 5 license(s), refused 0 line(s)" in err
    assert '"migrations_applied"' not in out  # log lines stay off the keys


async def test_a_batch_is_written_whole_or_not_at_all(
    database: str, encryption_key: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(database)
    try:
        # The database refuses the key of one license, after its license row went in.
        await conn.execute(
            """
            CREATE FUNCTION refuse_key() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF (SELECT owner FROM licenses WHERE number = NEW.license_number) = 'Refused'
                THEN RAISE EXCEPTION 'no key for this one';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_key BEFORE INSERT ON license_keys
            FOR EACH ROW EXECUTE FUNCTION refuse_key();
            """
        )
        owners = ["A", "B", "C", "Refused", "E"]
        path = tmp_path / "catalog.jsonl"
        path.write_text("\n".join(json.dumps(body(o)) for o in owners) + "\n")
        code, out, err = await run_import(
            env_for(database, encryption_key), str(path), "--json", "--batch-size", "2"
        )
        assert code == 1, err
        results = [json.loads(line) for line in out.splitlines()]
        assert results[-1] == {"imported": 4, "refused": 1}
        [refused] = [r for r in results if "error" in r]
        assert refused["line"] == 4
        assert "no key for this one" in refused["error"]
        assert await conn.fetchval("SELECT count(*) FROM licenses WHERE owner = 'Refused'") == 0
        assert sorted(r["owner"] for r in await conn.fetch("SELECT owner FROM licenses")) == [
            "A",
            "B",
            "C",
            "E",
        ]
        # No license without its key and its definition.
        orphans = await conn.fetchval(
            "SELECT count(*) FROM licenses l WHERE NOT EXISTS"
            " (SELECT 1 FROM license_keys k WHERE k.license_number = l.number)"
            " OR NOT EXISTS (SELECT 1 FROM definitions d WHERE d.license_number = l.number)"
        )
        assert orphans == 0
    finally:
        await conn.close()


async def test_from_line_resumes_and_bad_arguments_are_refused(
    database: str, encryption_key: str, tmp_path: Path
) -> None:
    env = env_for(database, encryption_key)
    path = tmp_path / "catalog.jsonl"
    path.write_text("\n".join(json.dumps(body(f"Owner {i}")) for i in range(1, 5)) + "\n")
    code, out, _ = await run_import(env, str(path), "--json", "--from-line", "3")
    assert code == 0
    assert [json.loads(line).get("line") for line in out.splitlines()] == [3, 4, None]

    code, _, err = await run_import(env, str(tmp_path / "missing.jsonl"))
    assert code == 1 and "No such file" in err
    code, _, err = await run_import(env, str(path), "--batch-size", "0")
    assert code == 2 and "--batch-size" in err
