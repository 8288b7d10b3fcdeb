"""ProductSearch: the public face of the runtime — a catalog plus the model that embeds its images."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from snapmatch.sdk.calibration import DecisionRule
from snapmatch.sdk.catalog import Catalog
from snapmatch.sdk.embedder import Embedder
from snapmatch.sdk.errors import CatalogExistsError, ModelError, ModelMismatchError
from snapmatch.sdk.fsutil import fsync_dir, fsync_file
from snapmatch.sdk.manifest import manifest_path, read_manifest
from snapmatch.sdk.preprocess import ImageInput
from snapmatch.sdk.types import Match, Product

if TYPE_CHECKING:
    from snapmatch.sdk.keyframes import VideoAdd
    from snapmatch.sdk.watch import Watch

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = MODELS_DIR / "default.onnx"
_SINGLE = (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)


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
        scatter, refitted as the catalog changes; snapmatch.sdk.adaptation).

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
        folder.mkdir(parents=True, exist_ok=True)
        _copy_durably(embedder.path, folder / "model.onnx")
        catalog = Catalog.create(
            folder,
            model_id=spec.model_id,
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
    ) -> "ProductSearch":
        """Open a catalog with the model it was built with (its own copy, unless `model` is given)."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        embedder = Embedder(model if model is not None else _catalog_model(folder, manifest.model_id), threads=threads)
        if embedder.model_id != manifest.model_id:
            raise ModelMismatchError(
                f"catalog {folder} was built with model {manifest.model_id}, but {embedder.path} is model "
                f"{embedder.model_id}: embeddings of different models cannot be compared; rebuild the catalog "
                "with this model or open it with its own"
            )
        if embedder.dim != manifest.dim:
            raise ModelMismatchError(f"catalog {folder} holds {manifest.dim}-d vectors, the model makes {embedder.dim}-d")
        catalog = Catalog.open(folder, readonly=readonly, threads=_usearch_threads(threads))
        return cls(catalog, embedder)

    # --- changing the catalog ----------------------------------------------------------

    def add_product(self, product_id: str, images: Sequence[ImageInput], *, name: str | None = None) -> list[int]:
        """Add a new product from one or more photos; searchable and durable when this returns.

        Every image is embedded before anything is written: a bad image raises
        and leaves the catalog unchanged.
        """
        images = _as_list(images)
        vectors = self.embedder.embed(images)
        return self.catalog.add(product_id, vectors, name=name, sources=_sources(images))

    def add_images(self, product_id: str, images: Sequence[ImageInput]) -> list[int]:
        """Add more photos of a product already in the catalog."""
        images = _as_list(images)
        vectors = self.embedder.embed(images)
        return self.catalog.add(product_id, vectors, sources=_sources(images), new_product=False)

    def add_product_from_video(
        self,
        product_id: str,
        video: str | os.PathLike,
        *,
        name: str | None = None,
        max_frames: int = 8,
        blur_ratio: float = 0.5,
        min_distance: float = 0.08,
    ) -> "VideoAdd":
        """Add a product (new, or more views of a known one) from a short video of it turning in the hand.

        Keeps up to max_frames sharp, mutually different frames (see
        snapmatch.sdk.keyframes); the result says which and why the rest were left out.
        """
        from snapmatch.sdk.keyframes import VideoAdd, select_keyframes

        picked = select_keyframes(video, self.embedder, max_frames=max_frames, blur_ratio=blur_ratio,
                                  min_distance=min_distance)
        known = any(product.id == product_id for product in self.catalog.products())
        sources = [f"{os.fspath(video)}#frame={index}" for index in picked.kept]
        keys = self.catalog.add(product_id, picked.vectors, name=name, sources=sources, new_product=not known)
        return VideoAdd(product_id, not known, keys, picked)

    def remove_product(self, product_id: str) -> int:
        """Remove a product and its images; returns how many images were removed."""
        return self.catalog.remove(product_id)

    def compact(self) -> bool:
        """Merge recent additions and removals into a new base index (the writer also does this by itself)."""
        return self.catalog.compact()

    # --- looking up ----------------------------------------------------------------------

    def search(self, image: ImageInput | list[ImageInput], k: int = 5) -> list[Match] | list[list[Match]]:
        """The k best products for an image (a list of images gives a list of results)."""
        if isinstance(image, _SINGLE):
            return self.catalog.search(self.embedder.embed([image]), k)[0]
        return self.catalog.search(self.embedder.embed(list(image)), k)

    def identify(self, image: ImageInput | list[ImageInput]) -> Match | None | list[Match | None]:
        """The product in the image, or None when its best match fails the catalog's decision rule.

        The rule (`self.rule`) weighs the best product's score and its margin
        over the second; the returned Match carries both.
        """
        rule = self.rule
        single = isinstance(image, _SINGLE)
        results = self.catalog.search(self.embedder.embed([image] if single else list(image)), 1)
        answers = [matches[0] if matches and rule.accepts(matches[0].score, matches[0].margin) else None
                   for matches in results]
        return answers[0] if single else answers

    def watch(self, source: int | str | os.PathLike, **options) -> "Watch":
        """Watch a camera (index), video file (path) or stream (URL) for products coming and going.

        Iterate the result for `appeared` / `gone` events; options (pace,
        every, roi, motion_threshold, voting, threshold, backoff) are those of
        snapmatch.sdk.watch.Watch.
        """
        from snapmatch.sdk.watch import Watch

        return Watch(self, source, **options)

    def calibrate(
        self, labelled: Iterable[tuple[ImageInput, str | None]], *, target_precision: float = 0.99
    ) -> float:
        """Choose and store identify()'s rule that reaches `target_precision` on labelled photos; returns its threshold.

        labelled: (image, product_id) pairs; product_id None means "not in the
        catalog": identify should reject it. The rule's margin weight is chosen
        too, and what the rule does on these photos is stored beside it
        (`calibration_report()`). The photos' embeddings are kept, so when the
        catalog refits its metric it recalibrates on them by itself.
        """
        pairs = list(labelled)
        if not pairs:
            raise ValueError("no labelled photos given")
        vectors = self.embedder.embed([image for image, _ in pairs])
        rule, _ = self.catalog.calibrate(vectors, [label for _, label in pairs], target_precision=target_precision)
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


def _as_list(images) -> list:
    if isinstance(images, _SINGLE):
        return [images]
    images = list(images)
    if not images:
        raise ValueError("no images given")
    return images


def _sources(images: list) -> list[str]:
    return [os.fspath(image) if isinstance(image, (str, os.PathLike)) else "" for image in images]


def _usearch_threads(threads: int | None) -> int:
    # usearch's batch search: 0 means all cores, like onnxruntime's default.
    return 0 if threads is None else threads
