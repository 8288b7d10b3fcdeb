"""manifest.json: the catalog's small, atomically replaced root record."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from snapmatch.sdk.errors import CatalogCorruptError, CatalogNotFoundError
from snapmatch.sdk.fsutil import atomic_write_bytes

FORMAT = "snapmatch-catalog"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class BaseInfo:
    """The immutable usearch snapshot the manifest points at."""

    generation: int
    file: str  # base-000007.usearch, relative to the catalog folder
    count: int  # vectors in the file
    max_key: int  # every image key up to this one was merged; larger keys are the delta
    size: int  # bytes; checked at every open
    sha256: str  # of the whole file; checked by verify()
    usearch_version: str  # the version that wrote it: other versions rebuild from SQLite
    connectivity: int
    expansion_add: int


@dataclass(frozen=True)
class Manifest:
    model_id: str
    dim: int
    metric: str = "cos"
    vector_dtype: str = "f32"  # usearch scalar kind of the base: f32, f16 or i8
    expansion_search: int = 64  # usearch does not save it in the file
    threshold: float = 0.5  # identify() accepts a best match scoring at least this
    threshold_source: str = "default"  # "model card", "calibrated" or "default"
    compact_at: int = 4096  # the writer compacts once the delta holds this many vectors
    model_file: str = "model.onnx"  # the catalog's own copy of its model
    generation: int = 0  # bumped by every compaction; names the base file
    base: BaseInfo | None = None  # None until the first compaction, or when all products are gone
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)  # free-form, kept as written

    def replace(self, **changes) -> "Manifest":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"


def manifest_path(folder: str | Path) -> Path:
    return Path(folder) / MANIFEST


def read_manifest(folder: str | Path) -> Manifest:
    path = manifest_path(folder)
    if not Path(folder).is_dir():
        raise CatalogNotFoundError(f"no catalog at {folder}: the folder does not exist")
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise CatalogNotFoundError(f"no catalog at {folder}: {MANIFEST} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogCorruptError(f"{path} is unreadable or not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CatalogCorruptError(f"{path} is not a snapmatch catalog manifest")
    if int(raw.get("format_version", 0)) > FORMAT_VERSION:
        raise CatalogCorruptError(
            f"{path} has catalog format {raw['format_version']}; this snapmatch reads up to {FORMAT_VERSION}"
        )
    try:
        base = raw.pop("base", None)
        known = {f.name for f in dataclasses.fields(Manifest)}
        manifest = Manifest(**{k: v for k, v in raw.items() if k in known})
        if base is not None:
            manifest = manifest.replace(base=BaseInfo(**base))
        if not isinstance(manifest.dim, int) or manifest.dim <= 0 or not manifest.model_id:
            raise ValueError("dim and model_id are required")
    except (TypeError, ValueError) as exc:
        raise CatalogCorruptError(f"{path} has missing or malformed fields ({exc})") from None
    return manifest


def write_manifest(folder: str | Path, manifest: Manifest) -> None:
    """Atomically replace the manifest (write aside, fsync, rename, fsync the folder)."""
    atomic_write_bytes(manifest_path(folder), manifest.to_json().encode())
