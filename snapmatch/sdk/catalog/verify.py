"""Deep checks of a catalog on disk (checksums, counts, database integrity), and repair.

`Catalog.open` checks only what is cheap (base size and header); a flipped bit
inside the graph passes those checks and can crash usearch, so `verify` reads
the whole base file and compares its SHA-256 with the manifest's. Repair
rebuilds the base from the vectors SQLite keeps for every image (and refits
a damaged adaptation transform from them).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from snapmatch.sdk.catalog import adaptation, base_index, store
from snapmatch.sdk.catalog.catalog import Catalog
from snapmatch.sdk.catalog.manifest import read_manifest
from snapmatch.sdk.errors import SnapmatchError
from snapmatch.sdk.fsutil import file_sha256
from snapmatch.sdk.model.embedder import Embedder


@dataclass
class VerifyReport:
    folder: str
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # problems that repair fixed
    unrepairable: bool = False  # the database itself is damaged: restore it from a backup

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"folder": self.folder, "ok": self.ok, "problems": self.problems, "repaired": self.repaired}


def verify_catalog(folder: str | os.PathLike, *, repair: bool = False) -> VerifyReport:
    """Check every part of a catalog; with repair, rebuild a damaged base from the database."""
    folder = Path(folder)
    report = VerifyReport(str(folder))
    manifest = read_manifest(folder)  # an unreadable manifest is an error, not a report line
    base_damaged = False
    try:
        conn = store.connect(folder, readonly=True)
        try:
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                report.problems.append(f"catalog.sqlite fails its integrity check: {check}")
                report.unrepairable = True
            else:
                bad = store.damaged_keys(conn, manifest.dim)
                if bad:
                    report.problems.append(
                        f"catalog.sqlite holds {len(bad)} damaged vector(s) (image keys {', '.join(map(str, bad[:10]))}): "
                        "they are left out of search; remove and re-add their products"
                    )
                    report.unrepairable = True
            if check == "ok" and manifest.base is not None:
                in_base = conn.execute("SELECT count(*) FROM images WHERE key <= ?", (manifest.base.max_key,)).fetchone()[0]
                removed = conn.execute(
                    "SELECT count(*) FROM tombstones WHERE generation = ?", (manifest.generation,)
                ).fetchone()[0]
                if in_base + removed != manifest.base.count:
                    report.problems.append(
                        f"base holds {manifest.base.count} vectors but the database accounts for {in_base + removed}"
                    )
                    base_damaged = True
        finally:
            conn.close()
    except (SnapmatchError, sqlite3.DatabaseError) as exc:
        report.problems.append(str(exc))
        report.unrepairable = True
    if manifest.base is not None:
        try:
            base_index.check_base(folder, manifest.base, dim=manifest.dim, dtype=manifest.vector_dtype)
            digest = file_sha256(folder / manifest.base.file)
            if digest != manifest.base.sha256:
                report.problems.append(f"{manifest.base.file} checksum differs from the manifest: the file is damaged")
                base_damaged = True
        except SnapmatchError as exc:
            report.problems.append(str(exc))
            base_damaged = True
    if manifest.adaptation is not None:
        try:
            adaptation.load(folder, manifest.adaptation, dim=manifest.dim)
        except SnapmatchError as exc:
            report.problems.append(str(exc))
            base_damaged = True  # repair refits it, and rebuilds the base under the new fit
    model = folder / manifest.model_file
    if manifest.model_sha256 and model.is_file() and file_sha256(model) != manifest.model_sha256:
        report.problems.append(f"{model} is damaged: its SHA-256 differs from the one the catalog recorded")
        report.unrepairable = True
    try:
        if Embedder(model, threads=1).model_id != manifest.model_id:
            report.problems.append(f"{model} is not the model this catalog was built with ({manifest.model_id})")
    except SnapmatchError as exc:
        report.problems.append(f"{model}: {exc}")
    if repair and base_damaged and not report.unrepairable:
        Catalog.open(folder, rebuild_base=True).close()
        after = verify_catalog(folder)
        after.repaired = report.problems
        return after
    return report
