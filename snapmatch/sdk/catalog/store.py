"""catalog.sqlite: the durable log of products, images (with their vectors) and tombstones.

Every image row keeps its vector, so the base index can always be rebuilt from
here (after corruption, or a usearch upgrade that changes the file format).
Keys come from AUTOINCREMENT and are never reused: the base holds keys up to
its `max_key`; rows above it are the delta. Removing a product deletes its
rows at once and leaves tombstones for the keys the base still holds.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from snapmatch.sdk.errors import CatalogCorruptError, CatalogError, CatalogNotFoundError

log = logging.getLogger("snapmatch.catalog")

DATABASE = "catalog.sqlite"
SCHEMA_VERSION = 1
_LOOKUP_CHUNK = 900  # stay under SQLite's bound-parameter limit on old builds

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS products (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id TEXT NOT NULL REFERENCES products(id),
    source TEXT NOT NULL DEFAULT '',
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS images_by_product ON images(product_id);
CREATE TABLE IF NOT EXISTS tombstones (
    key INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL  -- the base generation the key was removed from
);
"""
# Created by every writer, so catalogs made before it gain it on their next write.
_CALIBRATION_SCHEMA = """
CREATE TABLE IF NOT EXISTS calibration (
    id INTEGER PRIMARY KEY,
    label TEXT,  -- the product in the photo; NULL: a product identify() should reject
    vector BLOB NOT NULL  -- the photo's raw embedding, so a refitted metric can be recalibrated
);
"""


# Created by every writer too. A photo's content digest, so that adding the same photo
# to a product again (a repeated or resumed import) skips it instead of duplicating it.
_DIGEST_SCHEMA = """
CREATE TABLE IF NOT EXISTS image_digests (
    key INTEGER PRIMARY KEY,  -- images.key
    product_id TEXT NOT NULL,
    digest TEXT NOT NULL  -- SHA-256 of the photo's file bytes, encoded bytes or pixels
);
CREATE INDEX IF NOT EXISTS image_digests_by_product ON image_digests(product_id, digest);
"""


@dataclass(frozen=True)
class ImageRow:
    key: int
    product_id: str
    name: str
    vector: bytes | None = None  # float32 bytes, when asked for


def connect(folder: Path, *, readonly: bool, create: bool = False) -> sqlite3.Connection:
    path = folder / DATABASE
    if not create and not path.exists():
        raise CatalogNotFoundError(f"catalog {folder} has no {DATABASE}")
    conn = None
    try:
        if readonly:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False, timeout=30)
        else:
            conn = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
            if create:
                # A 576-d float32 row is 2.3 KB: with 4 KiB pages each fills a page
                # alone (1.8x the vector bytes on disk); 16 KiB pages store 1.03x.
                conn.execute("PRAGMA page_size=16384")
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk when add_product returns, power loss included.
            conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        if create:
            conn.executescript(_SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        if not readonly:
            conn.executescript(_CALIBRATION_SCHEMA + _DIGEST_SCHEMA)
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()  # a connection left to the garbage collector keeps the WAL index open
        raise database_error(folder, exc, opening=True) from None
    if version is None or int(version[0]) > SCHEMA_VERSION:
        conn.close()
        raise CatalogCorruptError(f"{path} has an unknown schema version")
    return conn


@contextmanager
def translate_errors(folder: Path):
    """sqlite3's and the file system's errors as snapmatch's.

    Only what SQLite calls damage (SQLITE_CORRUPT, SQLITE_NOTADB) is CatalogCorruptError: an
    I/O error (a failing or full disk, a device that went away) is CatalogError, with advice
    to retry, never to restore a catalog that may be sound.
    """
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise database_error(folder, exc) from None
    except OSError as exc:
        raise io_error(folder, exc) from None


SQLITE_ERROR, SQLITE_CORRUPT, SQLITE_NOTADB = 1, 11, 26


def database_error(folder: Path, exc: sqlite3.DatabaseError, *, opening: bool = False) -> CatalogError:
    """A sqlite3 error as snapmatch's: damage only when SQLite says so and the disk reads.

    A disk that fails mid-read can make SQLite see a malformed page: before calling the
    catalog damaged, read its database files once; if that fails, it is an I/O error.
    """
    path = folder / DATABASE
    if _sqlite_says_damaged(exc) or (opening and _schema_missing(exc)):
        failing = _read_failure(folder)
        if failing is not None:
            return io_error(folder, failing)
        if opening:
            return CatalogCorruptError(f"{path} is not a readable catalog database ({exc})")
        return CatalogCorruptError(f"catalog database {path} is damaged ({exc}); restore it from a backup")
    if opening:
        return CatalogError(f"catalog database {path} could not be opened ({exc}); the catalog is not known to be "
                            "damaged: retry once the disk works")
    return CatalogError(f"catalog database {path}: {exc}")


def _sqlite_says_damaged(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # an OperationalError without a code is never damage
        return not isinstance(exc, sqlite3.OperationalError)
    return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)


def _schema_missing(exc: sqlite3.DatabaseError) -> bool:
    """SQLite read the file but found no catalog tables in it (an emptied or foreign database)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == SQLITE_ERROR


def _read_failure(folder: Path) -> OSError | None:
    """The OSError that reading the database files raises now, if any."""
    for name in (DATABASE, f"{DATABASE}-wal"):
        try:
            with open(folder / name, "rb") as file:
                while file.read(1 << 20):
                    pass
        except FileNotFoundError:
            continue
        except OSError as exc:
            return exc
    return None


_IO_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space and retry",
    errno.EDQUOT: "the disk quota is used up: free some space and retry",
    errno.EIO: "the device failed to read or write; the catalog is not known to be damaged: retry once it works",
}


def io_error(folder: Path, exc: OSError) -> CatalogError:
    """An I/O error as the catalog reports it: never as damage (a sound catalog must not be thrown away)."""
    where = f" ({exc.filename})" if exc.filename else ""
    advice = _IO_ADVICE.get(exc.errno or 0, "the catalog is not known to be damaged")
    return CatalogError(f"I/O error in catalog {folder}{where}: {exc.strerror or exc}; {advice}")


class Transaction:
    """`with Transaction(conn):` runs BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        if exc_type is None:
            # Copy what the WAL holds into the database file now, so a damaged or deleted
            # catalog.sqlite-wal loses only what a reader's snapshot kept from being copied.
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def product_exists(conn: sqlite3.Connection, product_id: str) -> bool:
    return conn.execute("SELECT 1 FROM products WHERE id = ?", (product_id,)).fetchone() is not None


def insert_product(conn: sqlite3.Connection, product_id: str, name: str) -> None:
    conn.execute("INSERT INTO products (id, name, created) VALUES (?, ?, ?)", (product_id, name, time.time()))


def insert_images(conn: sqlite3.Connection, product_id: str, vectors: np.ndarray, sources: list[str],
                  digests: Sequence[str | None] | None = None) -> list[int]:
    keys = []
    for i, (vector, source) in enumerate(zip(vectors, sources)):
        cursor = conn.execute(
            "INSERT INTO images (product_id, source, vector) VALUES (?, ?, ?)",
            (product_id, source, np.ascontiguousarray(vector, dtype=np.float32).tobytes()),
        )
        key = int(cursor.lastrowid)  # type: ignore[arg-type]  # an INSERT always sets it
        keys.append(key)
        if digests is not None and digests[i]:
            conn.execute("INSERT INTO image_digests (key, product_id, digest) VALUES (?, ?, ?)",
                         (key, product_id, digests[i]))
    _count_changes(conn, len(keys))
    return keys


def bulk_load(conn: sqlite3.Connection, products: Iterable[tuple[str, str]],
              images: Iterable[tuple[str, np.ndarray]]) -> None:
    """Insert many new products and their image rows in the caller's transaction (synthetic catalogs, bulk loads).

    The rows are those Catalog.add writes; products must be new.
    """
    now = time.time()
    conn.executemany("INSERT INTO products (id, name, created) VALUES (?, ?, ?)",
                     ((pid, name, now) for pid, name in products))
    cursor = conn.executemany("INSERT INTO images (product_id, source, vector) VALUES (?, '', ?)",
                              ((pid, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for pid, v in images))
    _count_changes(conn, cursor.rowcount)


def known_digests(conn: sqlite3.Connection, product_id: str, digests: Iterable[str | None]) -> dict[str, int]:
    """Of `digests`, those already stored for the product, each with its image's key."""
    wanted = sorted({d for d in digests if d})
    found: dict[str, int] = {}
    for start in range(0, len(wanted), _LOOKUP_CHUNK):
        chunk = wanted[start:start + _LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        for digest, key in conn.execute(
            f"SELECT digest, key FROM image_digests WHERE product_id = ? AND digest IN ({marks})", (product_id, *chunk)
        ):
            found.setdefault(digest, int(key))
    return found


def rename_product(conn: sqlite3.Connection, product_id: str, name: str) -> bool:
    """Set a product's name; True when it changed."""
    return conn.execute("UPDATE products SET name = ? WHERE id = ? AND name != ?", (name, product_id, name)).rowcount > 0


def _count_changes(conn: sqlite3.Connection, count: int) -> None:
    # Images added plus images removed, ever: how far the catalog has moved since its metric was fitted.
    conn.execute(
        "INSERT INTO meta VALUES ('changes', ?) ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + ?",
        (str(count), count),
    )


def changes(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'changes'").fetchone()
    return int(row[0]) if row else 0


def delete_product(conn: sqlite3.Connection, product_id: str, *, base_max_key: int, generation: int) -> int:
    """Delete a product and its images; tombstone the keys the base still holds. Returns images removed."""
    conn.execute(
        "INSERT OR IGNORE INTO tombstones (key, generation) SELECT key, ? FROM images WHERE product_id = ? AND key <= ?",
        (generation, product_id, base_max_key),
    )
    removed = conn.execute("DELETE FROM images WHERE product_id = ?", (product_id,)).rowcount
    conn.execute("DELETE FROM image_digests WHERE product_id = ?", (product_id,))
    conn.execute("DELETE FROM products WHERE id = ?", (product_id,))
    _count_changes(conn, removed)
    return removed


def iter_product_rows(conn: sqlite3.Connection, dim: int, chunk: int = 16384) -> Iterator[tuple[np.ndarray, list[str], np.ndarray]]:
    """Every live image as (keys, product ids, vectors), in key-ordered chunks (for fitting the metric)."""
    last = 0
    while True:
        rows = conn.execute(
            "SELECT key, vector, product_id FROM images WHERE key > ? ORDER BY key LIMIT ?", (last, chunk)
        ).fetchall()
        if not rows:
            return
        keys, vectors = _unpack(rows, dim)
        last = int(keys[-1])
        yield keys, [row[2] for row in rows], vectors


def replace_calibration(conn: sqlite3.Connection, labels: list[str | None], vectors: np.ndarray) -> None:
    """Keep the labelled photos a threshold was calibrated on (only their embeddings)."""
    conn.execute("DELETE FROM calibration")
    conn.executemany(
        "INSERT INTO calibration (label, vector) VALUES (?, ?)",
        [(label, np.ascontiguousarray(vector, dtype=np.float32).tobytes()) for label, vector in zip(labels, vectors)],
    )


def calibration_set(conn: sqlite3.Connection, dim: int) -> tuple[list[str | None], np.ndarray]:
    rows = conn.execute("SELECT id, vector, label FROM calibration ORDER BY id").fetchall()
    _, vectors = _unpack(rows, dim)
    return [row[2] for row in rows], vectors


def rows_after(conn: sqlite3.Connection, key: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys and vectors of the images with a key above `key` (the delta), in key order."""
    rows = conn.execute("SELECT key, vector FROM images WHERE key > ? ORDER BY key", (key,)).fetchall()
    return _unpack(rows, dim)


def count_upto(conn: sqlite3.Connection, key: int) -> int:
    """Images with a key up to `key` (what iter_rows_upto yields, damaged rows included)."""
    return int(conn.execute("SELECT count(*) FROM images WHERE key <= ?", (key,)).fetchone()[0])


def iter_rows_upto(conn: sqlite3.Connection, key: int, dim: int, chunk: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """All live images with a key up to `key`, in chunks (for rebuilding a base)."""
    last = 0
    while True:
        rows = conn.execute(
            "SELECT key, vector FROM images WHERE key > ? AND key <= ? ORDER BY key LIMIT ?", (last, key, chunk)
        ).fetchall()
        if not rows:
            return
        keys, vectors = _unpack(rows, dim)
        last = int(keys[-1])
        yield keys, vectors


def labelled_rows_after(conn: sqlite3.Connection, key: int, dim: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Keys, product ids and vectors of the live images with a key above `key`, in key order."""
    rows = conn.execute("SELECT key, vector, product_id FROM images WHERE key > ? ORDER BY key", (key,)).fetchall()
    keys, vectors = _unpack(rows, dim)
    product_of = {row[0]: row[2] for row in rows}
    return keys, [product_of[int(key)] for key in keys], vectors


def damaged_keys(conn: sqlite3.Connection, dim: int, chunk: int = 16384) -> list[int]:
    """Image keys whose stored vector is not a finite unit vector of `dim` float32 (for verify)."""
    found: list[int] = []
    last = 0
    while True:
        rows = conn.execute("SELECT key, vector FROM images WHERE key > ? ORDER BY key LIMIT ?", (last, chunk)).fetchall()
        if not rows:
            return found
        last = rows[-1][0]
        sound = [row for row in rows if isinstance(row[1], bytes) and len(row[1]) == dim * 4]
        found.extend(row[0] for row in rows if not (isinstance(row[1], bytes) and len(row[1]) == dim * 4))
        if sound:
            vectors = np.frombuffer(b"".join(row[1] for row in sound), dtype=np.float32).reshape(len(sound), dim)
            found.extend(int(row[0]) for row, bad in zip(sound, damaged(vectors)) if bad)


def live_keys(conn: sqlite3.Connection) -> np.ndarray:
    """Every live image key, ascending."""
    rows = conn.execute("SELECT key FROM images ORDER BY key").fetchall()
    return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))


def product_names(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT id, name FROM products").fetchall())


# The catalog stores only L2-normalised vectors; anything else in a row is damage (a flipped exponent
# bit makes a vector score 1e34 against every query). Such rows are left out of search, never served.
NORM_TOLERANCE = 1e-2


def damaged(vectors: np.ndarray) -> np.ndarray:
    """Per row: not finite, or not of unit length."""
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    return ~np.isfinite(norms) | (np.abs(norms - 1.0) > NORM_TOLERANCE)


def _unpack(rows: list, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys and vectors of image rows; rows whose vector is damaged are left out (and logged)."""
    keys = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    if not rows:
        return keys, np.zeros((0, dim), dtype=np.float32)
    if not all(isinstance(row[1], bytes) and len(row[1]) == dim * 4 for row in rows):
        bad = next(row[0] for row in rows if not isinstance(row[1], bytes) or len(row[1]) != dim * 4)
        raise CatalogCorruptError(f"catalog database image {bad} holds no {dim}-dimensional float32 vector: the "
                                  "database is damaged (catalog verify; remove and re-add that product)")
    vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), dim).copy()
    bad = damaged(vectors)
    if bad.any():
        log.warning("catalog database: image key(s) %s hold damaged vectors; left out of search (catalog verify "
                    "reports them)", ", ".join(map(str, keys[bad][:10])))
        return keys[~bad], vectors[~bad]
    return keys, vectors


def max_key(conn: sqlite3.Connection) -> int:
    """The largest key ever handed out (AUTOINCREMENT's high-water mark), 0 for none."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'images'").fetchone()
    return int(row[0]) if row else 0


def tombstone_keys(conn: sqlite3.Connection) -> np.ndarray:
    return np.fromiter((row[0] for row in conn.execute("SELECT key FROM tombstones")), dtype=np.int64)


def tombstone_count(conn: sqlite3.Connection, generation: int = 0) -> int:
    """Tombstones the base of `generation` still holds (older ones it already applied)."""
    return int(conn.execute("SELECT count(*) FROM tombstones WHERE generation >= ?", (generation,)).fetchone()[0])


def retire_tombstones(conn: sqlite3.Connection, *, below_generation: int) -> None:
    """Drop tombstones already applied by a base of generation >= below_generation."""
    conn.execute("DELETE FROM tombstones WHERE generation < ?", (below_generation,))


def lookup(conn: sqlite3.Connection, keys: Iterable[int], *, vectors: bool = False) -> dict[int, ImageRow]:
    """Product and name (and with `vectors`, the stored vector) of each live image key; removed keys are absent."""
    keys = list(dict.fromkeys(int(k) for k in keys))
    found: dict[int, ImageRow] = {}
    column = "i.vector" if vectors else "NULL"
    for start in range(0, len(keys), _LOOKUP_CHUNK):
        chunk = keys[start:start + _LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        for key, product_id, name, vector in conn.execute(
            f"SELECT i.key, i.product_id, p.name, {column} FROM images i JOIN products p ON p.id = i.product_id "
            f"WHERE i.key IN ({marks})",
            chunk,
        ):
            found[key] = ImageRow(key, product_id, name, vector)
    return found


def list_products(conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
    return conn.execute(
        "SELECT p.id, p.name, count(i.key) FROM products p LEFT JOIN images i ON i.product_id = p.id "
        "GROUP BY p.id ORDER BY p.id"
    ).fetchall()


def counts(conn: sqlite3.Connection) -> tuple[int, int]:
    """(products, images)."""
    products = conn.execute("SELECT count(*) FROM products").fetchone()[0]
    images = conn.execute("SELECT count(*) FROM images").fetchone()[0]
    return int(products), int(images)


def data_version(conn: sqlite3.Connection) -> int:
    """Changes whenever another connection commits: a cheap "has anything changed?"."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])
