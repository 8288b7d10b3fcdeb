"""Training-time augmentation that looks like store photos: framing, scale, lighting, blur, camera faults.

Works on RGB uint8 arrays with OpenCV and numpy (torchvision does not install
beside this torch). The output is the model's input size, uint8: the network
normalises inside its graph, exactly as at serving time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    scale: tuple[float, float] = (0.35, 1.0)  # share of the image area a random crop keeps
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio range
    flip: float = 0.5  # probability of a horizontal flip
    brightness: float = 0.3  # +- relative change
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.03  # +- share of the hue circle
    blur: float = 0.2  # probability of a Gaussian blur (camera shake, focus)
    rotate: float = 10.0  # +- degrees
    camera: float = 0.0  # probability of a shop camera's faults: low resolution, JPEG, perspective, glare


def random_resized_crop(image: np.ndarray, size: int, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    height, width = image.shape[:2]
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*config.scale)
        aspect = math.exp(rng.uniform(math.log(config.ratio[0]), math.log(config.ratio[1])))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            crop = image[top:top + h, left:left + w]
            break
    else:  # fall back to a centre crop
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        crop = image[top:top + side, left:left + side]
    interpolation = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interpolation)


def colour_jitter(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-config.hue, config.hue) * 180.0) % 180.0
    hsv[..., 1] *= rng.uniform(1 - config.saturation, 1 + config.saturation)
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    out *= rng.uniform(1 - config.brightness, 1 + config.brightness)
    mean = out.mean()
    out = (out - mean) * rng.uniform(1 - config.contrast, 1 + config.contrast) + mean
    return np.clip(out, 0, 255).astype(np.uint8)


def camera_faults(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a cheap shop camera does to a product: each fault with probability one half."""
    size = image.shape[0]
    if rng.random() < 0.5:  # seen from the side: a perspective warp of up to 8% a corner
        corners = np.float32([[0, 0], [size, 0], [size, size], [0, size]])
        moved = corners + rng.uniform(-0.08, 0.08, corners.shape).astype(np.float32) * size
        matrix = cv2.getPerspectiveTransform(corners, moved)
        image = cv2.warpPerspective(image, matrix, (size, size), borderMode=cv2.BORDER_REFLECT101)
    if rng.random() < 0.5:  # far away or a low-resolution sensor: down to 30-70% and back
        small = max(8, int(size * rng.uniform(0.3, 0.7)))
        image = cv2.resize(cv2.resize(image, (small, small), interpolation=cv2.INTER_AREA), (size, size),
                           interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:  # glare on a glossy pack: a bright soft spot
        y, x = np.ogrid[:size, :size]
        cy, cx = rng.uniform(0, size, 2)
        radius = rng.uniform(0.1, 0.35) * size
        spot = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius**2)) * rng.uniform(60, 160)
        image = np.clip(image.astype(np.float32) + spot[..., None], 0, 255).astype(np.uint8)
    if rng.random() < 0.5:  # a video stream's compression
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 80))])
        if ok:
            image = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    return image


def augment(image: np.ndarray, size: int, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """One random training view of an RGB uint8 image, shape (size, size, 3)."""
    if config.rotate:
        angle = rng.uniform(-config.rotate, config.rotate)
        h, w = image.shape[:2]
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        image = cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT101)
    out = random_resized_crop(image, size, rng, config)
    if rng.random() < config.flip:
        out = out[:, ::-1]
    out = colour_jitter(out, rng, config)
    if rng.random() < config.blur:
        sigma = rng.uniform(0.5, 1.8)
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    if config.camera and rng.random() < config.camera:
        out = camera_faults(np.ascontiguousarray(out), rng)
    return np.ascontiguousarray(out)
