"""manifest.json: the catalog's small, atomically replaced root record."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from snapmatch.sdk.errors import (
    CatalogCorruptError,
    CatalogError,
    CatalogNotFoundError,
    InvalidArgumentError,
)
from snapmatch.sdk.fsutil import atomic_write_bytes

FORMAT = "snapmatch-catalog"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_BASE_NAME = re.compile(r"^base-\d{6}\.usearch$")
_ADAPT_NAME = re.compile(r"^adapt-\d{6}\.npz$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
THRESHOLD_SOURCES = ("default", "model card", "calibrated", "self-calibrated")
# "prototypes": a product scores the higher of its best photo and its photos' mean (exact search);
# "photos": its best photo alone (the graph of a larger catalog).
THRESHOLD_SCORINGS = ("photos", "prototypes")


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
class AdaptationInfo:
    """The catalog's fitted metric transform (snapmatch.sdk.catalog.adaptation); the base was built under it."""

    file: str  # adapt-000007.npz, written with the base of the same generation
    sha256: str  # of the whole file; checked at every open (it is about 1 MB)
    size: int
    products: int  # products with two or more photos the fit rests on
    images: int  # images the fit used
    shrinkage: float
    changes: int  # the database's change counter when fitted: how stale it is, is counted from here


@dataclass(frozen=True)
class Manifest:
    model_id: str
    dim: int
    metric: str = "cos"
    vector_dtype: str = "f32"  # usearch scalar kind of the base: f32, f16 or i8
    expansion_search: int = 64  # usearch does not save it in the file
    # How the next full rebuild of the base builds its graph. The defaults are what catalogs written before
    # these fields existed were built with; new catalogs record base_index's current defaults.
    connectivity: int = 16
    expansion_add: int = 128
    threshold: float = 0.5  # identify() accepts a best match whose rule value (below) is at least this
    threshold_source: str = "default"  # one of THRESHOLD_SOURCES
    # identify()'s rule: score + margin_weight * (score - second product's score); 0 is the plain cosine.
    margin_weight: float = 0.0
    target_precision: float | None = None  # what calibration aimed at; refits recalibrate to it
    threshold_adaptation: str = ""  # sha256 of the transform the threshold was fitted under ("": none)
    # How the products' scores that rule was fitted on were made: one of THRESHOLD_SCORINGS ("": a rule
    # not fitted on the catalog, or one fitted before this field, when lookups scored photos alone).
    threshold_scoring: str = ""
    calibration: dict = field(default_factory=dict)  # what the stored rule does on the photos it was fitted on
    # Adapt the metric to the catalog's own photos. Manifests written before this read as False (their
    # vectors were never adapted); new catalogs write True.
    adapt: bool = False
    adaptation: AdaptationInfo | None = None  # the transform in force; None: plain cosine
    compact_at: int = 4096  # the writer compacts once the delta holds this many vectors
    model_file: str = "model.onnx"  # the catalog's own copy of its model
    model_sha256: str = ""  # of that copy: checked at every open ("": a catalog written before this)
    generation: int = 0  # bumped by every compaction; names the base file
    base: BaseInfo | None = None  # None until the first compaction, or when all products are gone
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)  # free-form, kept as written

    def replace(self, **changes) -> "Manifest":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        return json.dumps({**fields, "checksum": _checksum(fields)}, indent=2, sort_keys=True) + "\n"


def _checksum(fields: dict) -> str:
    """SHA-256 of the manifest's fields: a damaged field (a flipped digit in max_key) is found at open."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def manifest_path(folder: str | Path) -> Path:
    return Path(folder) / MANIFEST


def read_manifest(folder: str | Path) -> Manifest:
    if "\0" in str(folder):
        raise InvalidArgumentError(f"a catalog path cannot contain a NUL byte: {str(folder)!r}")
    path = manifest_path(folder)
    if not Path(folder).is_dir():
        raise CatalogNotFoundError(f"no catalog at {folder}: the folder does not exist")
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise CatalogNotFoundError(f"no catalog at {folder}: {MANIFEST} is missing") from None
    except IsADirectoryError:
        raise CatalogCorruptError(f"{path} is a directory, not a catalog manifest") from None
    except OSError as exc:  # an I/O error is not damage: the file may read fine once the device recovers
        raise CatalogError(f"{path} could not be read ({exc.strerror or exc}): an I/O error, not a damaged "
                           "catalog; try again") from None
    try:
        raw = json.loads(text.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogCorruptError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CatalogCorruptError(f"{path} is not a snapmatch catalog manifest")
    version = raw.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CatalogCorruptError(f"{path} has a malformed format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CatalogCorruptError(f"{path} has catalog format {version}; this snapmatch reads up to {FORMAT_VERSION}")
    stored = raw.pop("checksum", None)
    if stored is not None and stored != _checksum(raw):
        raise CatalogCorruptError(f"{path} is damaged: its fields do not match its checksum (restore the catalog "
                                  "from a backup, or rebuild it)")
    try:
        base = raw.pop("base", None)
        adaptation = raw.pop("adaptation", None)
        known = {f.name for f in dataclasses.fields(Manifest)}
        manifest = Manifest(**{k: v for k, v in raw.items() if k in known})
        if base is not None:
            manifest = manifest.replace(base=BaseInfo(**base))
        if adaptation is not None:
            manifest = manifest.replace(adaptation=AdaptationInfo(**adaptation))
        _validate(manifest)
    except (TypeError, ValueError) as exc:
        raise CatalogCorruptError(f"{path} has missing or malformed fields ({exc})") from None
    return manifest


def _validate(manifest: Manifest) -> None:
    """Every field of the right type and range: a damaged manifest must not open as a wrong catalog."""

    def is_int(value, low=0):
        return isinstance(value, int) and not isinstance(value, bool) and value >= low

    def is_number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    checks = {
        "model_id": isinstance(manifest.model_id, str) and bool(manifest.model_id),
        "dim": is_int(manifest.dim, 1),
        "metric": manifest.metric == "cos",
        "vector_dtype": manifest.vector_dtype in ("f32", "f16", "i8"),
        "expansion_search": is_int(manifest.expansion_search, 1),
        "connectivity": is_int(manifest.connectivity, 2),
        "expansion_add": is_int(manifest.expansion_add, 1),
        # A margin rule's value reaches past 1: score + w * margin is at most 1 + 2w.
        "threshold": is_number(manifest.threshold)
        and -1.0 - 2 * abs(manifest.margin_weight) <= manifest.threshold <= 1.0 + 2 * abs(manifest.margin_weight)
        or manifest.threshold == float("inf"),
        "threshold_source": manifest.threshold_source in THRESHOLD_SOURCES,
        "margin_weight": is_number(manifest.margin_weight) and 0.0 <= manifest.margin_weight <= 100.0,
        "target_precision": manifest.target_precision is None
        or is_number(manifest.target_precision) and 0.0 < manifest.target_precision <= 1.0,
        "threshold_adaptation": isinstance(manifest.threshold_adaptation, str),
        "threshold_scoring": manifest.threshold_scoring in ("", *THRESHOLD_SCORINGS),
        "calibration": isinstance(manifest.calibration, dict),
        "adapt": isinstance(manifest.adapt, bool),
        "compact_at": is_int(manifest.compact_at, 1),
        "model_file": isinstance(manifest.model_file, str) and _SAFE_NAME.match(manifest.model_file) is not None,
        "generation": is_int(manifest.generation),
        "extra": isinstance(manifest.extra, dict),
    }
    base = manifest.base
    if base is not None:
        checks.update({
            "base.generation": is_int(base.generation, 1) and base.generation == manifest.generation,
            "base.file": isinstance(base.file, str) and _BASE_NAME.match(base.file) is not None,
            "base.count": is_int(base.count, 1),
            "base.max_key": is_int(base.max_key, 1),
            "base.size": is_int(base.size, 1),
            "base.sha256": isinstance(base.sha256, str) and len(base.sha256) == 64,
            "base.usearch_version": isinstance(base.usearch_version, str),
            "base.connectivity": is_int(base.connectivity, 1),
            "base.expansion_add": is_int(base.expansion_add, 1),
        })
    adaptation = manifest.adaptation
    if adaptation is not None:
        checks.update({
            "adaptation.file": isinstance(adaptation.file, str) and _ADAPT_NAME.match(adaptation.file) is not None,
            "adaptation.sha256": isinstance(adaptation.sha256, str) and len(adaptation.sha256) == 64,
            "adaptation.size": is_int(adaptation.size, 1),
            "adaptation.products": is_int(adaptation.products, 1),
            "adaptation.images": is_int(adaptation.images, 1),
            "adaptation.shrinkage": is_number(adaptation.shrinkage) and 0.0 <= adaptation.shrinkage <= 1.0,
            "adaptation.changes": is_int(adaptation.changes),
        })
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise InvalidArgumentError("bad " + ", ".join(bad))


def write_manifest(folder: str | Path, manifest: Manifest) -> None:
    """Atomically replace the manifest (write aside, fsync, rename, fsync the folder)."""
    atomic_write_bytes(manifest_path(folder), manifest.to_json().encode())
