"""A snapshot's data checksum: exact to the byte, and one stored by an older version (md5) is
still checked with the hash it was taken with."""

from __future__ import annotations

from uuid_migrate.verification import snapshot


def _table(cur) -> None:
    cur.execute(
        'CREATE TABLE "T x" (id text PRIMARY KEY, name text COLLATE "C", n int);'
        "INSERT INTO \"T x\" SELECT 'k' || i, 'Name ' || i, i FROM generate_series(1, 500) i"
    )


def _snap(cur, method: str) -> dict:
    shape = snapshot.definition(cur, "public", "T x")
    columns = [c[0] for c in shape["columns"]]
    return {"definition": shape, "checksum": snapshot.data_checksum(cur, "public", "T x", columns, method)}


def test_a_change_of_one_byte_or_case_is_seen_under_either_hash(conn):
    with conn.cursor() as cur:
        _table(cur)
        for method in ("md5", "hashtextextended"):
            snap = _snap(cur, method)
            assert ("hash" in snap["checksum"]) == (method != "md5")  # older snapshots: no name
            assert snapshot.differences(cur, "public", "T x", snap) == []
            cur.execute("UPDATE \"T x\" SET name = 'name 7' WHERE id = 'k7'")
            assert snapshot.differences(cur, "public", "T x", snap) == [
                "data differs: 500 rows before, 500 now, checksum differs"
            ]
            cur.execute("UPDATE \"T x\" SET name = 'Name 7' WHERE id = 'k7'")
            assert snapshot.differences(cur, "public", "T x", snap) == []


def test_the_two_hashes_disagree_so_the_stored_name_matters(conn):
    with conn.cursor() as cur:
        _table(cur)
        assert _snap(cur, "md5")["checksum"]["sum"] != _snap(cur, "hashtextextended")["checksum"]["sum"]


def test_a_sum_stored_by_an_older_version_as_numerics_is_the_same_text(conn):
    """Older versions summed each hash cast to numeric; the sum of bigints is that same exact
    numeric, so their snapshots still compare equal (also past the 64-bit range, and empty)."""
    with conn.cursor() as cur:
        _table(cur)
        cur.execute("CREATE TABLE \"E\" (id text PRIMARY KEY)")
        for table in ("T x", "E"):
            columns = [c[0] for c in snapshot.definition(cur, "public", table)["columns"]]
            for method, row_hash in snapshot.ROW_HASHES.items():
                row = "ROW(" + ", ".join(f'c."{c}"' for c in columns) + ")::text"
                cur.execute(
                    f"SELECT coalesce(sum(({row_hash.format(row=row)})::numeric), 0)::text "
                    f'FROM "{table}" AS c'
                )
                older = cur.fetchone()[0]
                now = snapshot.data_checksum(cur, "public", table, columns, method)["sum"]
                assert now == older, (table, method)
        cur.execute("SELECT sum(x)::text FROM (VALUES (9223372036854775807::bigint), "
                    "(9223372036854775807), (-5)) AS v(x)")  # fmt: skip
        assert cur.fetchone()[0] == "18446744073709551609"
