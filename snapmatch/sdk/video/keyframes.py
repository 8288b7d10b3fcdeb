"""Pick the frames of a short product video worth adding to a catalog: sharp, and unlike each other.

A few seconds of a product turned in the hand is 50-150 frames: many
motion-blurred, most near-copies of their neighbours. Adding them all would
bloat the catalog and weigh one view many times. So:

1. Sharpness is the variance of the Laplacian of a fixed-size grey copy. It
   is judged against the video's own sharp frames nearby (the 90th
   percentile within about a second), since what counts as sharp depends on
   the camera, the light and the side of the product in view (a plain side
   has few edges however steady the hand): a frame below `blur_ratio` of
   its neighbourhood is "blurred" - motion blur is a dip, not a level - and
   so is one below half that share of the whole video's sharp frames.
2. Every frame is embedded with the catalog's model; among the sharp ones,
   greedy farthest-point selection starts from the sharpest frame and keeps
   adding the frame least like those kept, until the next one is within
   `min_distance` (cosine) of a kept one ("near-duplicate") or `max_frames`
   are kept (the distinct rest: "beyond max_frames").

The embeddings computed for the choice are the ones added: nothing is embedded twice.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from snapmatch.sdk.errors import InvalidArgumentError, NoUsableFramesError
from snapmatch.sdk.model.embedder import Embedder
from snapmatch.sdk.video.sources import FileSource

SHARPNESS_WIDTH = 320  # frames are scaled to this width before measuring, so any resolution compares alike
MAX_ANALYSED = 600  # a longer video is sampled evenly down to this many frames
REASONS = ("blurred", "near-duplicate", "beyond max_frames", "not sampled")


@dataclass
class Keyframes:
    """The frames chosen from a video, their embeddings, and why every other frame was left out."""

    video: str
    frames_read: int
    kept: list[int]  # frame indexes, in video order
    vectors: np.ndarray  # embeddings of the kept frames, same order
    rejected: dict[int, str] = field(default_factory=dict)  # frame index -> reason (see REASONS)
    unreadable: int = 0  # damaged frames the decoder skipped
    sharpness: dict[int, float] = field(default_factory=dict)  # kept frame -> sharpness / reference

    def counts(self) -> dict[str, int]:
        counts = {reason: 0 for reason in REASONS}
        for reason in self.rejected.values():
            counts[reason] += 1
        counts["unreadable"] = self.unreadable
        return {reason: count for reason, count in counts.items() if count}

    def __repr__(self) -> str:
        left_out = ", ".join(f"{count} {reason}" for reason, count in self.counts().items()) or "none"
        return f"Keyframes({self.video!r}, kept frames {self.kept} of {self.frames_read}; left out: {left_out})"

    def to_dict(self) -> dict:
        return {"video": self.video, "frames_read": self.frames_read, "kept": len(self.kept),
                "kept_frames": self.kept, "rejected": self.counts(),
                "kept_sharpness": {str(k): round(v, 3) for k, v in self.sharpness.items()}}


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of a grey copy scaled to SHARPNESS_WIDTH: high for crisp edges, low for blur."""
    height, width = image.shape[:2]
    size = (SHARPNESS_WIDTH, max(1, round(height * SHARPNESS_WIDTH / width)))
    gray = cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def select_keyframes(
    video: str | os.PathLike,
    embedder: Embedder,
    *,
    max_frames: int = 8,
    blur_ratio: float = 0.5,
    min_distance: float = 0.08,
) -> Keyframes:
    """Read a video file and choose up to max_frames sharp, mutually different frames."""
    if max_frames < 1:
        raise InvalidArgumentError(f"max_frames must be at least 1, not {max_frames}")
    if not 0.0 <= blur_ratio <= 1.0:
        raise InvalidArgumentError(f"blur_ratio must be in [0, 1], not {blur_ratio}")
    source = FileSource(video)
    source.open()
    step = max(1, -(-source.frame_count // MAX_ANALYSED)) if source.frame_count else 1
    indexes, scores, vectors, rejected = [], [], [], {}
    batch, batch_indexes = [], []
    stop = threading.Event()
    index = 0
    try:
        while (image := source.read(stop)) is not None:
            if index % step:
                rejected[index] = "not sampled"
            else:
                scores.append(sharpness(image))
                batch.append(image)
                batch_indexes.append(index)
                if len(batch) == embedder.batch_size:
                    vectors.append(embedder.embed(batch))
                    indexes += batch_indexes
                    batch, batch_indexes = [], []
            index += 1
        if batch:
            vectors.append(embedder.embed(batch))
            indexes += batch_indexes
    finally:
        source.close()
    matrix = np.concatenate(vectors)
    scores_arr = np.asarray(scores)
    reference = _local_reference(scores_arr, half=max(3, round((source.fps or 30.0) / 2 / step)))
    if not np.any(reference > 0):
        raise NoUsableFramesError(f"video {video}: every frame is blank (no edges at all)")
    # ... and a floor from the whole video, for a stretch that is blurred throughout.
    floor = 0.5 * blur_ratio * float(np.percentile(scores_arr, 90))
    sharp = (scores_arr >= blur_ratio * reference) & (scores_arr >= floor) & (scores_arr > 0)
    for position in np.flatnonzero(~sharp):
        rejected[indexes[position]] = "blurred"
    chosen = _farthest_points(matrix, np.flatnonzero(sharp), scores_arr, max_frames, min_distance, rejected, indexes)
    chosen.sort()
    return Keyframes(
        video=str(video),
        frames_read=index,
        kept=[indexes[p] for p in chosen],
        vectors=matrix[chosen],
        rejected=rejected,
        unreadable=source.corrupt_frames,
        sharpness={indexes[p]: float(scores_arr[p] / reference[p]) for p in chosen},
    )


def _local_reference(scores: np.ndarray, *, half: int) -> np.ndarray:
    """Per frame, the 90th percentile of the sharpness of the frames within `half` of it."""
    return np.array([np.percentile(scores[max(0, i - half):i + half + 1], 90) for i in range(len(scores))])


def _farthest_points(vectors, candidates, scores, max_frames, min_distance, rejected, indexes) -> list[int]:
    """Greedy farthest-point selection among `candidates`, starting from the sharpest; marks the rest in `rejected`."""
    first = int(candidates[np.argmax(scores[candidates])])
    chosen = [first]
    distance = 1.0 - vectors[candidates] @ vectors[first]  # to the nearest chosen frame
    distance[candidates == first] = -1.0
    while len(chosen) < max_frames:
        best = int(np.argmax(distance))
        if distance[best] < min_distance:
            break
        chosen.append(int(candidates[best]))
        distance = np.minimum(distance, 1.0 - vectors[candidates] @ vectors[candidates[best]])
        distance[best] = -1.0
    for position, candidate in enumerate(candidates):
        if candidate not in chosen:
            near = distance[position] < min_distance
            rejected[indexes[candidate]] = "near-duplicate" if near else "beyond max_frames"
    return chosen


@dataclass
class VideoAdd:
    """What adding a product from a video did: the images added, and the frame choice behind them."""

    product_id: str
    new_product: bool
    image_keys: list[int]  # one per kept frame; a frame the product already holds gives the key it has
    keyframes: Keyframes
    duplicates: int = 0  # kept frames the product already held (the same video added again): not stored twice

    def __repr__(self) -> str:
        state = "new" if self.new_product else "existing"
        return f"VideoAdd({self.product_id!r}, {state}, image_keys={self.image_keys}, {self.keyframes!r})"

    def to_dict(self) -> dict:
        return {"product_id": self.product_id, "new_product": self.new_product, "image_keys": self.image_keys,
                "duplicates": self.duplicates,
                **self.keyframes.to_dict()}
