"""The audit trail of the records: who saved, opened, exported and deleted which record, and when, in the
append-only ``audit`` table (triggers of :data:`moleseg.engine.recordsdb.MIGRATIONS` and
:data:`moleseg.engine.recordspg.PG_MIGRATIONS` refuse any change or deletion of its rows). Its column
``"user"`` is quoted: ``user`` is a keyword of PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy

#: What the audit trail records: who saved, opened, exported (ZIP or PDF) and deleted a record.
AUDIT_ACTIONS: tuple[str, ...] = ("saved", "opened", "exported", "deleted")


@dataclass(frozen=True)
class AuditEntry:
    """One line of a record's audit trail: when (ISO timestamp), who, and which of :data:`AUDIT_ACTIONS`."""

    at: str
    user: str
    action: str


def append_audit(connection: sqlalchemy.Connection, user_name: str, action: str, record_id: int,
                 record_uid: str) -> None:
    """Add ``action`` (one of :data:`AUDIT_ACTIONS`) by ``user_name`` on the record ``record_id``
    (``record_uid``) to the trail, now, inside the caller's transaction."""
    if action not in AUDIT_ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; known: {', '.join(AUDIT_ACTIONS)}")
    connection.execute(sqlalchemy.text('INSERT INTO audit (at, "user", action, record_id, record_uid) '
                                       "VALUES (:at, :user, :action, :record_id, :record_uid)"),
                       {"at": datetime.now().astimezone().isoformat(timespec="seconds"), "user": user_name,
                        "action": action, "record_id": record_id, "record_uid": record_uid})


def audit_entries(connection: sqlalchemy.Connection, record_uid: str) -> list[AuditEntry]:
    """The trail of the record ``record_uid``, oldest first."""
    rows = connection.execute(sqlalchemy.text('SELECT at, "user", action FROM audit WHERE record_uid = :uid '
                                              "ORDER BY id"), {"uid": record_uid}).all()
    return [AuditEntry(*row) for row in rows]
