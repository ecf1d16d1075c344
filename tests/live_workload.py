"""The application of the live-writes tests: threads that write to the clinic schema as an
application does while a run goes on, and the check, in our own SQL, that every row it left
is migrated and in step with its parent."""

from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

from uuid_migrate import db

from .helpers import CLINIC_TABLES, rows, scalar

#: (child, column, parent, translated column) of the clinic plan.
REFERENCES = (
    ("dashboards", "user_id", "users", "user_uuid_id"),
    ("providers", "clinic_id", "clinics", "clinic_uuid_id"),
)


def assert_in_step(conn: Any) -> None:
    """Every row has exactly one uuid_id, unique, and one mapping that agrees; every
    reference equals its parent's uuid_id (NULL only where no parent row exists)."""
    for table in CLINIC_TABLES:
        assert scalar(conn, f"SELECT count(*) FROM {table} WHERE uuid_id IS NULL") == 0, table
        assert scalar(
            conn, f"SELECT count(*) - count(DISTINCT uuid_id) FROM {table}"
        ) == 0, table
        disagree = scalar(
            conn,
            f"SELECT count(*) FROM {table} t WHERE (SELECT count(*) FROM id_mappings m "
            "WHERE m.table_name = %s AND m.old_id = t.id AND m.new_id = t.uuid_id) <> 1",
            (table,),
        )
        assert disagree == 0, table
    for child, column, parent, target in REFERENCES:
        stale = scalar(
            conn,
            f"SELECT count(*) FROM {child} c LEFT JOIN {parent} p ON p.id = c.{column} "
            f"WHERE c.{target} IS DISTINCT FROM p.uuid_id",
        )
        assert stale == 0, child


#: The email of the users the application inserts to delete them later, unreferenced.
LONELY = "gone@example.com"


class Application:
    """Threads writing as an application does, each on its own connection: users inserted
    in every key range (md5 keys), dashboards inserted for them and moved to other users,
    providers moved between clinics, unreferenced users and some dashboards deleted, reads."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url = url
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.counts = {"insert": 0, "update": 0, "delete": 0, "read": 0}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._work, args=(i,)) for i in range(threads)]

    def start(self) -> Application:
        for thread in self.threads:
            thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _count(self, kind: str) -> None:
        with self.lock:
            self.counts[kind] += 1

    def _work(self, n: int) -> None:
        rng = random.Random(n)
        try:
            conn = db.connect(self.url, autocommit=True)
        except Exception as exc:  # the test reports it
            self.errors.append(repr(exc))
            return
        # not another thread's users nobody references: it may delete them at any time
        referenced = "SELECT id FROM users WHERE email IS DISTINCT FROM %s ORDER BY id"
        users = [r[0] for r in rows(conn, referenced, (LONELY,))]
        clinics = [r[0] for r in rows(conn, "SELECT id FROM clinics ORDER BY id")]
        dashboards = [r[0] for r in rows(conn, "SELECT id FROM dashboards ORDER BY id")][n::3]
        providers = [r[0] for r in rows(conn, "SELECT id FROM providers ORDER BY id")][n::3]
        lonely: list[str] = []
        try:
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    self._step(cur, rng, users, clinics, dashboards, providers, lonely)
        except Exception as exc:  # the test reports it
            self.errors.append(repr(exc))
        finally:
            conn.close()

    def _step(self, cur: Any, rng: random.Random, users: list[str], clinics: list[str],
              dashboards: list[str], providers: list[str], lonely: list[str]) -> None:  # fmt: skip
        key = uuid.uuid4().hex
        action = rng.randrange(8)
        if action == 0:  # a user others may reference
            cur.execute("INSERT INTO users (id, email) VALUES (%s, 'app@example.com')", (f"usr_{key}",))
            users.append(f"usr_{key}")
            self._count("insert")
        elif action == 1:  # a dashboard of some user, old or new
            cur.execute(
                "INSERT INTO dashboards (id, user_id, title) VALUES (%s, %s, 'app')",
                (f"dsh_{key}", rng.choice(users)),
            )
            dashboards.append(f"dsh_{key}")
            self._count("insert")
        elif action == 2 and dashboards:  # moved to another user
            cur.execute(
                "UPDATE dashboards SET user_id = %s WHERE id = %s",
                (rng.choice(users), rng.choice(dashboards)),
            )
            self._count("update")
        elif action == 3 and providers:
            cur.execute(
                "UPDATE providers SET clinic_id = %s WHERE id = %s",
                (rng.choice(clinics), rng.choice(providers)),
            )
            self._count("update")
        elif action == 4:  # a user nobody references, deleted later
            cur.execute("INSERT INTO users (id, email) VALUES (%s, %s)", (f"usr_{key}", LONELY))
            lonely.append(f"usr_{key}")
            self._count("insert")
        elif action == 5 and lonely:
            cur.execute("DELETE FROM users WHERE id = %s", (lonely.pop(rng.randrange(len(lonely))),))
            self._count("delete")
        elif action == 6 and len(dashboards) > 10:
            cur.execute("DELETE FROM dashboards WHERE id = %s", (dashboards.pop(rng.randrange(len(dashboards))),))
            self._count("delete")
        else:
            cur.execute("SELECT count(*), max(title) FROM dashboards WHERE user_id IS NOT NULL")
            cur.fetchone()
            self._count("read")
        time.sleep(0.002)
