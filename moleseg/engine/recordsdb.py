"""The SQLite records database file: opening it, checking it (a file, not empty, our tables, a known schema
version, its pages), creating it, migrating its schema, and every ``sqlite3`` error as one sentence. The
records reach it through SQLAlchemy Core connections (:meth:`RecordsDatabase.connection`), as they reach the
PostgreSQL database of :mod:`moleseg.engine.recordspg`.

* A new database is built beside its place and linked there only when complete. An existing file is
  checked (and, when asked, page by page with ``PRAGMA quick_check``): a damaged, empty (0 bytes), foreign or
  newer file, or a folder in its place, is refused with :class:`RecordsError` naming the file, the cause
  and what to do; it is never reused or overwritten.
* Every ``sqlite3`` error becomes a :class:`RecordsError` naming the database and the cause (disk full,
  read-only, not a database, damaged, ...).
* The schema version is SQLite's ``PRAGMA user_version``; :data:`MIGRATIONS` lists the SQL that takes
  the database from each version to the next, applied in one ``BEGIN IMMEDIATE`` transaction by
  whichever connection finds the database behind (others wait for it).
* WAL journal and a busy timeout of :data:`BUSY_TIMEOUT_S`: several app sessions, threads or processes
  can write at once; each write is one transaction.
* ``PRAGMA secure_delete`` on every connection: a deleted record's text (lesion identifier, notes) is
  overwritten in the file, not left in a free page, on SQLite builds whose default is off too; and after a
  deletion the write-ahead log, whose older frames still hold it, is checkpointed into the file and emptied
  (:meth:`RecordsDatabase.erase_deleted`).

The records themselves (who may reach which, saving, listing, opening) are :mod:`moleseg.engine.records`.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import sqlalchemy
from sqlalchemy.pool import NullPool

#: Seconds a writer waits for another's transaction before giving up.
BUSY_TIMEOUT_S: float = 30.0
#: Permissions of a new database file: the server's account only (it holds lesion identifiers and notes).
DATABASE_FILE_MODE: int = 0o600
#: SQL taking the schema from version ``i`` to ``i + 1`` (``PRAGMA user_version``).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE analyses (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uid TEXT NOT NULL UNIQUE,
        saved_at TEXT NOT NULL,
        lesion TEXT NOT NULL DEFAULT '',
        visit_date TEXT NOT NULL,
        body_site TEXT NOT NULL DEFAULT '',
        notes TEXT NOT NULL DEFAULT '',
        image_name TEXT NOT NULL DEFAULT '',
        measurements TEXT NOT NULL,
        model_name TEXT NOT NULL DEFAULT '',
        model_version TEXT NOT NULL DEFAULT '',
        cleanup TEXT NOT NULL DEFAULT '{}',
        lesion_threshold REAL,
        pixel_size_mm REAL,
        corrected INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX analyses_lesion ON analyses (lesion, visit_date);
    """,
    """
    ALTER TABLE analyses ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    CREATE INDEX analyses_owner ON analyses (owner, lesion, visit_date);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        "user" TEXT NOT NULL,
        action TEXT NOT NULL,
        record_id INTEGER NOT NULL,
        record_uid TEXT NOT NULL
    );
    CREATE INDEX audit_record ON audit (record_id, id);
    CREATE TRIGGER audit_rows_are_never_changed BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    CREATE TRIGGER audit_rows_are_never_deleted BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    """,
    """
    ALTER TABLE audit ADD COLUMN from_owner TEXT;
    ALTER TABLE audit ADD COLUMN to_owner TEXT;
    """,
)
#: The tables each schema version has (a database without them is not a records database).
SCHEMA_TABLES: tuple[frozenset[str], ...] = (frozenset(), frozenset({"analyses"}), frozenset({"analyses", "audit"}),
                                              frozenset({"analyses", "audit"}))


#: What to say for SQLite's primary result codes (``sqlite3.Error.sqlite_errorcode & 0xFF``).
_CAUSES: dict[int, str] = {
    sqlite3.SQLITE_FULL: "the disk is full: free some space, then save again",
    sqlite3.SQLITE_READONLY: "it is read-only: let the server's user write the file and its folder",
    sqlite3.SQLITE_PERM: "permission denied: let the server's user write the file and its folder",
    sqlite3.SQLITE_CANTOPEN: "it cannot be opened: check that its folder exists and the server's user may "
                             "write it",
    sqlite3.SQLITE_NOTADB: "it is not a database: move it away to start a new one",
    sqlite3.SQLITE_CORRUPT: "it is damaged: restore it from a backup, or move it away to start a new one",
    sqlite3.SQLITE_BUSY: f"another program kept it locked for over {BUSY_TIMEOUT_S:.0f} s: try again",
    sqlite3.SQLITE_LOCKED: "it is locked: try again",
    sqlite3.SQLITE_IOERR: "the disk reported an input/output error: check the disk",
}

class RecordsError(ValueError):
    """The records database cannot be used; the message names the file, the cause and what to do."""


#: How the refusal of a database at start-up ends.
REFUSED: str = "; analysis works, saving is refused until then."


def refusal(name: str, cause: str) -> RecordsError:
    """The error saying that the database ``name`` (a file, or a URL with its password masked) ``cause``
    (e.g. "is a folder, ..."), and that analysis works."""
    return RecordsError(f"The records database {name} {cause}{REFUSED}")


def unusable(name: str, cause: str, detail: str | None = None) -> str:
    """The sentence saying that the database ``name`` (a file, or a URL with its password masked) cannot be
    used, its ``cause`` and what to do, and the driver's own words ``detail`` in brackets when they add to it."""
    said = f" ({detail})" if detail and detail != cause else ""
    return f"The records database {name} cannot be used: {cause}{said}."


def newer_schema(version: int) -> str:
    """The cause of a refusal of a database of schema ``version``, newer than this moleseg's
    (:data:`MIGRATIONS`)."""
    return f"is from a newer moleseg (schema {version}, this one knows {len(MIGRATIONS)}): update moleseg to open it"


def refused(error: RecordsError) -> RecordsError:
    """``error`` (a database error met at start-up) ending with :data:`REFUSED`."""
    message = str(error)
    return error if message.endswith(REFUSED) else RecordsError(f"{message.rstrip('.')}{REFUSED}")


def describe_sqlite_error(path: Path, error: sqlite3.Error) -> str:
    """One sentence naming the database and the cause of ``error``."""
    code = getattr(error, "sqlite_errorcode", None)
    cause = _CAUSES.get(code & 0xFF) if isinstance(code, int) else None
    detail = str(error).strip() or type(error).__name__
    return unusable(str(path), cause or detail, detail)


def split_statements(script: str) -> list[str]:
    """The SQL statements of ``script`` (a trigger's ``BEGIN ... END`` body stays in one)."""
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip())
            pending = ""
    return statements


def migrate(connection: sqlite3.Connection) -> None:
    """Bring the schema to the last version of :data:`MIGRATIONS` in one transaction."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        for step in range(version, len(MIGRATIONS)):
            for statement in split_statements(MIGRATIONS[step]):
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


class RecordsDatabase:
    """The database file ``path`` of a records folder (created beside it when missing). Every method opens its
    own connection, so one ``RecordsDatabase`` may be shared by threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.folder = path.parent
        self.name = str(path)
        self._engine = sqlalchemy.create_engine("sqlite://", creator=self._connect, poolclass=NullPool)

    def _connect(self) -> sqlite3.Connection:
        """A configured ``sqlite3`` connection to the existing file (SQLAlchemy's creator; autocommit)."""
        connection = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S,
                                     isolation_level=None, check_same_thread=False)
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("PRAGMA secure_delete = ON")  # a deleted visit's text is overwritten, whatever the build
        except BaseException:
            connection.close()
            raise
        return connection

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Every ``sqlite3`` error inside (raw or wrapped by SQLAlchemy) as a :class:`RecordsError`."""
        try:
            yield
        except sqlalchemy.exc.DBAPIError as error:
            if isinstance(error.orig, sqlite3.Error):
                raise RecordsError(describe_sqlite_error(self.path, error.orig)) from error
            raise
        except sqlite3.Error as error:
            raise RecordsError(describe_sqlite_error(self.path, error)) from error

    @contextmanager
    def connection(self) -> Iterator[sqlalchemy.Connection]:
        """A SQLAlchemy connection to the existing database (never creates one; reads in autocommit), closed
        when the ``with`` ends; a ``sqlite3`` error inside becomes a :class:`RecordsError`."""
        with self._errors(), self._engine.connect() as connection:
            yield connection

    @contextmanager
    def transaction(self) -> Iterator[sqlalchemy.Connection]:
        """A SQLAlchemy connection inside ``BEGIN IMMEDIATE``: committed when the ``with`` succeeds, else rolled
        back (when SQLite has not already rolled it back itself, as after a full disk)."""
        with self._errors(), self._engine.connect() as connection:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                with suppress(sqlalchemy.exc.DBAPIError):  # the error that stopped the transaction is the one to report
                    connection.rollback()
                raise
            connection.commit()

    def refuse(self, cause: str) -> RecordsError:
        """The error saying that the database ``cause`` (e.g. "is a folder, ..."), and that analysis works."""
        return refusal(self.name, cause)

    def erase_deleted(self) -> None:
        """Take what a deletion left in the write-ahead log out of it: ``PRAGMA wal_checkpoint(TRUNCATE)`` copies
        the log into the file (where ``secure_delete`` has zeroed the freed pages) and empties it. The log's
        older frames still hold what the deleted rows said when they were written, and SQLite keeps them until the
        last connection closes, which on a shared server with other sessions open may be much later. Best
        effort, never an error (the deletion is done): a reader in the middle of a transaction keeps its frames
        until the next checkpoint, and a database busy past the timeout keeps them until the last connection
        closes."""
        with suppress(RecordsError), self.raw_connection() as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    @contextmanager
    def raw_connection(self, configure: bool = True) -> Iterator[sqlite3.Connection]:
        """A ``sqlite3`` connection to the existing database (never creates one; autocommit, transactions
        explicit) for the file's checks and migrations, closed when the ``with`` ends; a ``sqlite3`` error
        inside becomes a :class:`RecordsError`. ``configure`` sets the WAL journal, which writes to the file
        (False: a file not yet checked)."""
        target = self.path.absolute()
        try:
            connection = sqlite3.connect(f"{target.as_uri()}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S,
                                         isolation_level=None)
            try:
                connection.row_factory = sqlite3.Row
                connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                if configure:
                    connection.execute("PRAGMA journal_mode = WAL")
                    connection.execute("PRAGMA synchronous = NORMAL")
                yield connection
            finally:
                connection.close()
        except sqlite3.Error as error:
            raise RecordsError(describe_sqlite_error(self.path, error)) from error

    def create_or_check(self, integrity: bool = True) -> None:
        """Create the database when there is none (built beside it, linked in place only when complete), or
        check the one there: a file, not empty, our schema at a known version (migrated when behind), and with
        ``integrity`` its pages (``PRAGMA quick_check``, which reads the whole file)."""
        if not os.path.lexists(self.path):
            self._create(integrity)
            return
        if self.path.is_dir():
            raise self.refuse("is a folder, not a database file: move it away to start a new database")
        try:
            size = self.path.stat().st_size
        except OSError as error:
            raise self.refuse(f"cannot be read ({error.strerror or error})") from None
        if size == 0:
            raise self.refuse("is empty (0 bytes), not a records database: restore it from a backup, or move "
                               "it away to start a new one")
        try:
            with self.raw_connection(configure=False) as connection:  # a foreign file is left exactly as it is
                problems = ([row[0] for row in connection.execute("PRAGMA quick_check").fetchall()] if integrity
                            else ["ok"])
                version = int(connection.execute("PRAGMA user_version").fetchone()[0])
                tables = {row[0] for row in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
            if problems == ["ok"] and 0 < version < len(MIGRATIONS) and SCHEMA_TABLES[version] <= tables:
                with self.raw_connection() as connection:
                    migrate(connection)
        except RecordsError as error:
            raise refused(error) from None
        if problems != ["ok"]:
            raise self.refuse(f"is damaged ({problems[0]}): restore it from a backup, or move it away to start "
                               f"a new one")
        if version > len(MIGRATIONS):
            raise self.refuse(newer_schema(version))
        if version == 0 or not SCHEMA_TABLES[min(version, len(MIGRATIONS))] <= tables:
            found = ", ".join(sorted(tables)) or "no tables"
            raise self.refuse(f"is not a moleseg records database (it holds {found}): move it away to start a "
                               f"new one")

    def _create(self, integrity: bool) -> None:
        """Build a new database beside its place and link it there; when another process linked one first,
        keep theirs."""
        building = self.folder / f".{self.path.name}.{uuid.uuid4().hex}.new"
        try:
            try:
                # the server's account only; SQLite gives its -wal and -shm files the database file's mode
                os.close(os.open(building, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DATABASE_FILE_MODE))
                connection = sqlite3.connect(building, isolation_level=None)
                try:
                    migrate(connection)
                    connection.execute("PRAGMA journal_mode = WAL")
                finally:
                    connection.close()
            except sqlite3.Error as error:
                raise RecordsError(describe_sqlite_error(self.path, error)) from error
            try:
                os.link(building, self.path)
            except FileExistsError:
                self.create_or_check(integrity)
            except OSError as error:
                raise self.refuse(f"cannot be created ({error.strerror or error})") from None
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{building}{suffix}").unlink(missing_ok=True)

    @property
    def schema_version(self) -> int:
        """The schema version of the database (``PRAGMA user_version``)."""
        with self.raw_connection() as connection:
            return int(connection.execute("PRAGMA user_version").fetchone()[0])
