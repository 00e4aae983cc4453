"""The audit trail of the records: who saved, opened, exported, deleted and adopted which record, and when, in
the append-only ``audit`` table (triggers of :data:`moleseg.engine.recordsdb.MIGRATIONS` and
:data:`moleseg.engine.recordspg.PG_MIGRATIONS` refuse any change or deletion of its rows). Its column
``"user"`` is quoted: ``user`` is a keyword of PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy

#: What the audit trail records: who saved, opened, exported (ZIP or PDF) and deleted a record, and which
#: operator handed it from one owner to another ("adopted": ``moleseg adopt --records``).
AUDIT_ACTIONS: tuple[str, ...] = ("saved", "opened", "exported", "deleted", "adopted")
#: The action that changes a record's owner: its entries name the owner before and after.
ADOPTED: str = "adopted"


@dataclass(frozen=True)
class AuditEntry:
    """One line of a record's audit trail: when (ISO timestamp), who, which of :data:`AUDIT_ACTIONS`, and for
    :data:`ADOPTED` the owner before (``''``: none) and after (None for the other actions)."""

    at: str
    user: str
    action: str
    from_owner: str | None = None
    to_owner: str | None = None


def append_audit(connection: sqlalchemy.Connection, user_name: str, action: str, record_id: int,
                 record_uid: str, owners: tuple[str, str] | None = None) -> None:
    """Add ``action`` (one of :data:`AUDIT_ACTIONS`) by ``user_name`` on the record ``record_id``
    (``record_uid``) to the trail, now, inside the caller's transaction; ``owners`` (before, after) is given
    with :data:`ADOPTED` only."""
    if action not in AUDIT_ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; known: {', '.join(AUDIT_ACTIONS)}")
    if (action == ADOPTED) != (owners is not None):
        raise ValueError(f"the audit action {action!r} names the owners before and after if and only if it is "
                         f"{ADOPTED!r}")
    from_owner, to_owner = owners or (None, None)
    connection.execute(sqlalchemy.text('INSERT INTO audit (at, "user", action, record_id, record_uid, from_owner, '
                                       "to_owner) VALUES (:at, :user, :action, :record_id, :record_uid, "
                                       ":from_owner, :to_owner)"),
                       {"at": datetime.now().astimezone().isoformat(timespec="seconds"), "user": user_name,
                        "action": action, "record_id": record_id, "record_uid": record_uid,
                        "from_owner": from_owner, "to_owner": to_owner})


def audit_entries(connection: sqlalchemy.Connection, record_uid: str) -> list[AuditEntry]:
    """The trail of the record ``record_uid``, oldest first."""
    rows = connection.execute(sqlalchemy.text('SELECT at, "user", action, from_owner, to_owner FROM audit '
                                              "WHERE record_uid = :uid ORDER BY id"), {"uid": record_uid}).all()
    return [AuditEntry(*row) for row in rows]
