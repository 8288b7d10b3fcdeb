"""ProductSearch: the public face of the runtime — a catalog plus the model that embeds its images."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence, overload

import numpy as np

from snapmatch.sdk.catalog.calibration import DecisionRule
from snapmatch.sdk.catalog.catalog import Catalog, check_product_id
from snapmatch.sdk.catalog.manifest import manifest_path, read_manifest
from snapmatch.sdk.catalog.store import io_error
from snapmatch.sdk.errors import (
    CalibrationWarning,
    CatalogCorruptError,
    CatalogError,
    CatalogExistsError,
    ImageError,
    InvalidArgumentError,
    ModelError,
    ModelMismatchError,
    ProductExistsError,
)
from snapmatch.sdk.fsutil import file_sha256, fsync_dir, fsync_file, make_dir_durably
from snapmatch.sdk.image.preprocess import ImageInput, SingleImage, content_digest, image_batch, image_list
from snapmatch.sdk.model.embedder import Embedder
from snapmatch.sdk.types import Added, Identification, Match, Product

if TYPE_CHECKING:
    from snapmatch.sdk.video.keyframes import VideoAdd
    from snapmatch.sdk.video.watch import Watch

TUNABLE = frozenset({"expansion_search", "connectivity", "expansion_add", "compact_at"})
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = MODELS_DIR / "default.onnx"


def default_model_path() -> Path:
    """The shipped default model; ModelError when this install has none."""
    if not DEFAULT_MODEL.is_file():
        raise ModelError(f"no default model is installed at {DEFAULT_MODEL}: pass model='path/to/model.onnx'")
    return DEFAULT_MODEL


class ProductSearch:
    """Visual product search over one on-disk catalog.

    >>> with ProductSearch.create("my-catalog", model="model.onnx") as search:
    ...     search.add_product("arla-milk-1l", ["a.jpg", "b.jpg"], name="Arla Standard Milk 1 l")
    ...     search.identify("query.jpg")
    Match('arla-milk-1l', score=0.912, image_key=2)
    """

    def __init__(self, catalog: Catalog, embedder: Embedder) -> None:
        self.catalog = catalog
        self.embedder = embedder

    # --- opening -----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        folder: str | os.PathLike,
        model: str | os.PathLike | None = None,
        *,
        threads: int | None = None,
        vector_dtype: str = "f32",
        compact_at: int = 4096,
        connectivity: int | None = None,
        expansion_add: int | None = None,
        expansion_search: int = 64,
        adapt: bool = True,
    ) -> "ProductSearch":
        """Create an empty catalog that uses `model` (default: the shipped model), opened for writing.

        adapt (default on): once the catalog holds a few products with several
        photos, fit its metric to them (a whitening of the within-product
        scatter, refitted as the catalog changes; snapmatch.sdk.catalog.adaptation).

        The catalog keeps its own copy of the model, so it stays usable after
        snapmatch or the model file changes. vector_dtype "i8" (or "f16") makes
        search of a large catalog faster and its base file smaller; scores stay
        exact. connectivity, expansion_add and expansion_search tune the
        search graph of large catalogs (default: snapmatch's; docs/BENCHMARKS.md).
        """
        graph = {name: value for name, value in (("connectivity", connectivity), ("expansion_add", expansion_add))
                 if value is not None}
        folder = Path(folder)
        embedder = Embedder(model if model is not None else default_model_path(), threads=threads)
        spec = embedder.spec
        if manifest_path(folder).exists():
            raise CatalogExistsError(f"a catalog already exists at {folder}")
        _refuse_foreign_files(folder)
        try:
            make_dir_durably(folder)  # a power cut must not take the new folder, and the catalog in it, away
            _copy_durably(embedder.path, folder / "model.onnx")
        except OSError as exc:
            raise io_error(folder, exc) from None
        catalog = Catalog.create(
            folder,
            model_id=spec.model_id,
            model_sha256=file_sha256(folder / "model.onnx"),
            dim=spec.embedding_dim,
            vector_dtype=vector_dtype,
            threshold=spec.default_threshold if spec.default_threshold is not None else 0.5,
            threshold_source="model card" if spec.default_threshold is not None else "default",
            compact_at=compact_at,
            threads=_usearch_threads(threads),
            expansion_search=expansion_search,
            adapt=adapt,
            **graph,
        )
        return cls(catalog, embedder)

    @classmethod
    def open(
        cls,
        folder: str | os.PathLike,
        *,
        model: str | os.PathLike | None = None,
        readonly: bool = False,
        threads: int | None = None,
        wait: float = 0.0,
    ) -> "ProductSearch":
        """Open a catalog with the model it was built with (its own copy, unless `model` is given).

        A writer waits up to `wait` seconds for another writer to close it
        (CatalogLockedError after that); readers never wait.
        """
        folder = Path(folder)
        manifest = read_manifest(folder)
        if model is None:
            _check_model_copy(folder, manifest)
        embedder = Embedder(model if model is not None else _catalog_model(folder, manifest.model_id), threads=threads)
        if embedder.model_id != manifest.model_id:
            raise ModelMismatchError(
                f"catalog {folder} was built with model {manifest.model_id}, but {embedder.path} is model "
                f"{embedder.model_id}: embeddings of different models cannot be compared; rebuild the catalog "
                "with this model or open it with its own"
            )
        if embedder.dim != manifest.dim:
            raise ModelMismatchError(f"catalog {folder} holds {manifest.dim}-d vectors, the model makes {embedder.dim}-d")
        catalog = Catalog.open(folder, readonly=readonly, threads=_usearch_threads(threads), wait=wait)
        return cls(catalog, embedder)

    # --- changing the catalog ----------------------------------------------------------

    # One rule for every add: add_product and add_product_from_video create a product and refuse
    # one that exists unless extend=True; add_images only extends; add() creates or extends and
    # reports what it did. A photo already in the product (same content) is skipped, never stored
    # twice: it returns the key it already has, so the same add twice changes nothing.

    def add(self, product_id: str, images: ImageInput | Sequence[ImageInput], *, name: str | None = None,
            skip_unreadable: bool = False) -> Added:
        """Add photos to a product, creating it when new; durable when this returns.

        name, when given, becomes the product's name. skip_unreadable: photos
        that cannot be read are left out and listed in the result (`skipped`)
        instead of raising; by default every image is embedded before anything
        is written, so a bad image raises and leaves the catalog unchanged.
        """
        return self._add(product_id, images, name=name, skip_unreadable=skip_unreadable)

    def add_product(self, product_id: str, images: ImageInput | Sequence[ImageInput], *, name: str | None = None,
                    extend: bool = False) -> list[int]:
        """Add a new product from one or more photos; its image keys, one per photo.

        Refuses a product already in the catalog (ProductExistsError) unless
        extend=True, which adds the photos to it.
        """
        return self._add(product_id, images, name=name, must_be_new=not extend).keys

    def add_images(self, product_id: str, images: ImageInput | Sequence[ImageInput]) -> list[int]:
        """Add more photos of a product already in the catalog (ProductNotFoundError otherwise)."""
        return self._add(product_id, images, must_exist=True).keys

    def _add(self, product_id: str, images, *, name: str | None = None, skip_unreadable: bool = False,
             must_exist: bool = False, must_be_new: bool = False) -> Added:
        product_id = check_product_id(product_id)
        images = image_list(images, what=f"photos of product {product_id!r}")
        skipped: list[tuple[str, str]] = []
        digests: list[str] = []
        readable = []
        for image in images:
            try:
                digests.append(content_digest(image))
                readable.append(image)
            except ImageError as exc:
                if not skip_unreadable:
                    raise
                skipped.append((_source(image), str(exc)))
        # Embed only photos the product does not have yet: a repeated import costs a hash per photo.
        known = self.catalog.known_digests(product_id, digests)
        if known and must_be_new:
            raise ProductExistsError(f"product {product_id!r} is already in the catalog: use add_images to add "
                                     "photos to it")
        first: dict[str, int] = {}
        todo = [i for i, digest in enumerate(digests)
                if digest not in known and first.setdefault(digest, i) == i]
        vectors, kept = self._embed_readable([readable[i] for i in todo], skipped if skip_unreadable else None)
        todo = [todo[i] for i in kept]
        if not todo:
            if not known:
                raise ImageError(f"no readable photo of product {product_id!r}: {skipped[0][1]}" if skipped
                                 else f"no photos of product {product_id!r} given")
            renamed = self.catalog.rename(product_id, name) if name is not None else False
            held = [known[d] for d in digests if d in known]
            return Added(product_id, False, held, duplicates=len(held), renamed=renamed, skipped=skipped)
        added = self.catalog.put(product_id, vectors, name=name, sources=[_source(readable[i]) for i in todo],
                                 digests=[digests[i] for i in todo], must_exist=must_exist, must_be_new=must_be_new)
        stored = dict(zip((digests[i] for i in todo), added.keys))
        keys = [known.get(d) or stored[d] for d in digests if d in known or d in stored]
        return dataclasses.replace(added, keys=keys, duplicates=len(keys) - len(added.new_keys), skipped=skipped)

    def _embed_readable(self, images: list, skipped: list | None) -> tuple[np.ndarray, list[int]]:
        """Embeddings of the images; with `skipped` given, unreadable ones are listed there and left out."""
        if skipped is None:
            return self.embedder.embed(images), list(range(len(images)))
        inputs, kept = [], []
        for i, (image, prepared) in enumerate(zip(images, self.embedder.preprocess_many(images))):
            if isinstance(prepared, ImageError):
                skipped.append((_source(image), str(prepared)))
            else:
                inputs.append(prepared)
                kept.append(i)
        if not inputs:
            return np.zeros((0, self.catalog.dim), dtype=np.float32), []
        return self.embedder.embed_preprocessed(inputs), kept

    def add_product_from_video(
        self,
        product_id: str,
        video: str | os.PathLike,
        *,
        name: str | None = None,
        extend: bool = False,
        max_frames: int = 8,
        blur_ratio: float = 0.5,
        min_distance: float = 0.08,
    ) -> "VideoAdd":
        """Add a product from a short video of it turning in the hand (extend=True: or more views of a known one).

        Keeps up to max_frames sharp, mutually different frames (see
        snapmatch.sdk.video.keyframes); the result says which and why the rest were left out.
        """
        from snapmatch.sdk.video.keyframes import VideoAdd, select_keyframes

        product_id = check_product_id(product_id)
        if not extend and any(product.id == product_id for product in self.catalog.products()):
            raise ProductExistsError(f"product {product_id!r} is already in the catalog: pass extend=True to add "
                                     "the video's frames to it")
        picked = select_keyframes(video, self.embedder, max_frames=max_frames, blur_ratio=blur_ratio,
                                  min_distance=min_distance)
        sources = [f"{os.fspath(video)}#frame={index}" for index in picked.kept]
        added = self.catalog.put(product_id, picked.vectors, name=name, sources=sources,
                                 digests=_frame_digests(video, picked.kept),
                                 must_be_new=not extend)
        return VideoAdd(product_id, added.created, added.keys, picked, duplicates=added.duplicates)

    def remove_product(self, product_id: str) -> int:
        """Remove a product and its images; returns how many images were removed."""
        return self.catalog.remove(product_id)

    def compact(self, *, rebuild: bool = False, refit: bool | None = None,
                progress: Callable[[str, int, int], None] | None = None) -> bool:
        """Merge recent additions and removals into a new base index (the writer also does this by itself).

        rebuild: the whole graph anew; refit: the catalog's metric now (True),
        never (False) or when due (None). False when there was nothing to do.
        progress(step, done, total): how far a full graph build is (see Catalog.compact).
        """
        return self.catalog.compact(rebuild=rebuild, refit=refit, progress=progress)

    def tune(self, *, adapt: bool | None = None, **settings) -> dict:
        """Change search and rebuild settings durably (expansion_search, connectivity, expansion_add,
        compact_at) and turn adaptation on or off (applied at once); returns the settings now in force."""
        unknown = set(settings) - TUNABLE
        if unknown:
            raise InvalidArgumentError(f"cannot tune {', '.join(sorted(unknown))}; tunable: {', '.join(sorted(TUNABLE))}")
        changes = {name: value for name, value in settings.items() if value is not None}
        if changes:
            self.catalog.update_manifest(**changes)
        if adapt is not None:
            self.catalog.set_adapt(adapt)
        manifest = self.catalog.manifest
        return {**{name: getattr(manifest, name) for name in sorted(TUNABLE)}, "adapt": manifest.adapt,
                "adaptation_in_force": self.catalog.adaptation_status()["in_force"]}

    def info(self) -> dict:
        """What `snapmatch catalog info` shows: model, rule, calibration, graph settings and counts."""
        manifest = self.catalog.manifest
        return {
            "catalog": str(self.folder),
            "model_id": manifest.model_id,
            "dim": manifest.dim,
            "vector_dtype": manifest.vector_dtype,
            "threshold": self.catalog.threshold,
            "threshold_source": manifest.threshold_source,
            "rule": self.rule.describe(),
            "margin_weight": manifest.margin_weight,
            # False: the threshold was fitted under another metric, or on products scored another way than
            # search scores them now (the next writer refits it; or recalibrate with `catalog calibrate`)
            "threshold_current": self.catalog.threshold_current(),
            "calibration": manifest.calibration,
            "connectivity": manifest.connectivity,
            "expansion_add": manifest.expansion_add,
            "expansion_search": manifest.expansion_search,
            **self.catalog.stats(),
        }

    # --- looking up ----------------------------------------------------------------------

    @overload
    def search(self, image: SingleImage, k: int = 5) -> list[Match]: ...  # type: ignore[overload-overlap]
    @overload
    def search(self, image: Sequence[ImageInput], k: int = 5) -> list[list[Match]]: ...

    def search(self, image, k=5):
        """The k best products for an image, best first (a list or a 4-D array of images gives a list of results)."""
        k = _check_k(k)
        images, single = image_batch(image)
        results = self.catalog.search(self.embedder.embed(images), k)
        return results[0] if single else results

    @overload
    def identify(self, image: SingleImage) -> Match | None: ...  # type: ignore[overload-overlap]
    @overload
    def identify(self, image: Sequence[ImageInput]) -> list[Match | None]: ...

    def identify(self, image):
        """The product in the image, or None when its best match fails the catalog's decision rule.

        The rule (`self.rule`) weighs the best product's score and its margin
        over the second; the returned Match carries both. `identification()`
        gives the best guess and the rule's verdict too.
        """
        answers = self.identification(image)
        if isinstance(answers, Identification):
            return answers.match
        return [answer.match for answer in answers]

    @overload
    def identification(self, image: SingleImage) -> Identification: ...  # type: ignore[overload-overlap]
    @overload
    def identification(self, image: Sequence[ImageInput]) -> list[Identification]: ...

    def identification(self, image):
        """identify()'s whole answer: the product named (or None), the best candidate, and the rule's value."""
        rule = self.rule
        images, single = image_batch(image)
        results = self.catalog.search(self.embedder.embed(images), 1)
        answers = [Identification.judge(matches[0] if matches else None, rule) for matches in results]
        return answers[0] if single else answers

    def watch(self, source: int | str | os.PathLike, **options) -> "Watch":
        """Watch a camera (index), video file (path) or stream (URL) for products coming and going.

        Iterate the result for `appeared` / `gone` events; options (pace,
        every, roi, motion_threshold, voting, threshold, backoff) are those of
        snapmatch.sdk.video.watch.Watch.
        """
        from snapmatch.sdk.video.watch import Watch

        return Watch(self, source, **options)

    def calibrate(
        self, labelled: Iterable[tuple[ImageInput, str | None]], *, target_precision: float = 0.99,
        force: bool = False, on_progress: Callable[[int], None] | None = None,
    ) -> float:
        """Choose and store identify()'s rule that reaches `target_precision` on labelled photos; returns its threshold.

        labelled: (image, product_id) pairs; product_id None means "not in the
        catalog": identify should reject it. The rule's margin weight is chosen
        too, and what the rule does on these photos is stored beside it
        (`calibration_report()`). The photos' embeddings are kept, so when the
        catalog refits its metric it recalibrates on them by itself.

        Refuses (CalibrationError) a rule that would mean nothing: fewer than
        10 photos, the catalog's own photos, or a rule that names almost no
        known photo right; force=True stores it anyway. Milder doubts (under 50
        photos, no unknown photos) are warned about (CalibrationWarning) and
        kept in the report. on_progress(n) is called as photos are embedded.
        """
        pairs = list(labelled)
        if not pairs:
            raise InvalidArgumentError("no labelled photos given")
        vectors = self.embedder.embed([image for image, _ in pairs], on_progress=on_progress)
        rule, result = self.catalog.calibrate(vectors, [label for _, label in pairs],
                                              target_precision=target_precision, force=force)
        for warning in result.warnings:
            warnings.warn(warning, CalibrationWarning, stacklevel=2)
        return rule.threshold

    def calibration_report(self) -> dict:
        """What the stored rule did on the photos it was fitted on (empty before any calibration)."""
        return dict(self.catalog.manifest.calibration)

    # --- reading state ---------------------------------------------------------------------

    @property
    def folder(self) -> Path:
        return self.catalog.folder

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def threshold(self) -> float:
        return self.catalog.threshold

    @property
    def rule(self) -> DecisionRule:
        """identify()'s decision rule: threshold and margin weight."""
        return self.catalog.rule

    def products(self) -> list[Product]:
        return self.catalog.products()

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> "ProductSearch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ProductSearch({str(self.folder)!r}, model_id={self.model_id!r})"


def _check_model_copy(folder: Path, manifest) -> None:
    """The catalog's model copy is the one it was built with, bit for bit (a flipped bit changes every answer)."""
    own = folder / manifest.model_file
    if not manifest.model_sha256 or not own.is_file():
        return  # a catalog written before the hash was recorded, or one that uses an installed model
    try:
        digest = file_sha256(own)
    except OSError as exc:
        raise CatalogError(f"{own} could not be read ({exc.strerror or exc})") from None
    if digest != manifest.model_sha256:
        try:
            if Embedder(own, threads=1).model_id != manifest.model_id:
                return  # another model put in its place: open() says which two differ
        except ModelError:
            pass
        raise CatalogCorruptError(f"{own} is damaged: its SHA-256 is not the one the catalog recorded; copy the "
                                  "model the catalog was built with back (catalog info shows its id)")


def _catalog_model(folder: Path, model_id: str) -> Path:
    """The catalog's own model copy, else a shipped model with the same id."""
    own = folder / "model.onnx"
    if own.is_file():
        return own
    for candidate in sorted(MODELS_DIR.glob("*.onnx")):
        try:
            if Embedder(candidate, threads=1).model_id == model_id:
                return candidate
        except ModelError:
            continue
    raise ModelError(f"catalog {folder} has no model.onnx and no installed model has id {model_id}: pass model=")


def _copy_durably(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, tmp)
    fsync_file(tmp)
    os.replace(tmp, target)
    fsync_dir(target.parent)


# What a catalog folder may hold before its manifest exists: what a create interrupted at any point
# may have left (the rollback journal of the schema's first commit included).
_CATALOG_FILES = ("catalog.sqlite", "catalog.sqlite-journal", "catalog.sqlite-wal", "catalog.sqlite-shm", "model.onnx",
                  "writer.lock")


def _refuse_foreign_files(folder: Path) -> None:
    """A new catalog goes in a new or empty folder, never among someone's photos."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise CatalogExistsError(f"{folder} is a file, not a folder: choose a new folder for the catalog")
    foreign = sorted(entry.name for entry in folder.iterdir()
                     if entry.name not in _CATALOG_FILES and not entry.name.endswith(".tmp"))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise CatalogExistsError(f"{folder} is not empty ({shown}) and is not a catalog: create the catalog in a "
                                 "new or empty folder")


def _source(image) -> str:
    return os.fspath(image) if isinstance(image, (str, os.PathLike)) else ""


def _unit(dim: int) -> np.ndarray:
    vector = np.zeros(dim, dtype=np.float32)
    vector[0] = 1.0
    return vector


def _frame_digests(video, frames: list[int]) -> list[str | None]:
    """A kept frame's identity: the video file's content and the frame's index (a stream has none)."""
    try:
        whole = file_sha256(video)
    except (OSError, TypeError):
        return [None] * len(frames)
    return [hashlib.sha256(f"{whole}#frame={index}".encode()).hexdigest() for index in frames]


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidArgumentError(f"k must be a whole number of at least 1, not {k!r}")
    return int(k)


def _usearch_threads(threads: int | None) -> int:
    # usearch's batch search: 0 means all cores, like onnxruntime's default.
    return 0 if threads is None else threads
