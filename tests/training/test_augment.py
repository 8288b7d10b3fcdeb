"""Training views (the shop-camera faults, the studio <-> shop pairs of a batch) and the optimiser's learning rates."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from snapmatch.sdk.errors import InvalidArgumentError  # noqa: E402
from snapmatch.training.augment import AugmentConfig, augment, camera_faults  # noqa: E402
from snapmatch.training.train import COLOUR_ORDERS, AugmentedPhotos, TrainConfig, colour_classes  # noqa: E402

PLAIN = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0, brightness=0.0, contrast=0.0, saturation=0.0,
                      hue=0.0, blur=0.0, rotate=0.0)


def photo(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_camera_faults_keep_the_shape_and_change_the_pixels():
    image = photo(0)
    rng = np.random.default_rng(1)
    views = [camera_faults(image, rng) for _ in range(8)]
    assert all(v.shape == image.shape and v.dtype == np.uint8 for v in views)
    assert sum(not np.array_equal(v, image) for v in views) >= 7  # each fault has a one-half chance: 1/16 none


def test_camera_share_is_a_probability_and_seeded():
    image = photo(2)
    off = augment(image, 64, np.random.default_rng(3), PLAIN)
    assert np.array_equal(off, augment(image, 64, np.random.default_rng(3), PLAIN))  # no faults: the plain view
    on = AugmentConfig(**{**PLAIN.__dict__, "camera": 1.0})
    first = augment(image, 64, np.random.default_rng(3), on)
    assert np.array_equal(first, augment(image, 64, np.random.default_rng(3), on))
    assert not np.array_equal(first, off)


@pytest.mark.parametrize("share, studio_views", [(0.0, 0), (1.0, 2)])
def test_catalog_pairs_swap_shop_photos_for_the_catalog_image(share, studio_views):
    shop, studio, other = (np.full((64, 64, 3), value, np.uint8) for value in (10, 200, 90))
    config = TrainConfig(data="", out="", image_size=32, catalog_pairs=share, augment=PLAIN)
    photos = AugmentedPhotos([shop, shop, studio, other], [0, 0, 0, 1], config, [False, False, True, False])
    views = [int(photos[i][0].numpy().mean()) for i in range(4)]
    assert views[2] == 200 and views[3] == 90  # the catalog image itself, and a product without one, unchanged
    assert views[:2].count(200) == studio_views


def test_colour_classes_are_new_products_whose_photos_have_their_channels_permuted():
    labels = [0, 0, 1, 1, 2]
    indexes, classes, orders = colour_classes(labels, 3, 3)
    assert indexes == [0, 1, 2, 3, 4] * 3
    assert classes[:5] == labels and classes[5:10] == [3, 3, 4, 4, 5] and classes[10:] == [6, 6, 7, 7, 8]
    assert orders[:5] == [0] * 5 and all(order > 0 for order in orders[5:])
    by_class = {label: order for label, order in zip(classes, orders)}
    assert len({by_class[c] for c in (3, 4, 5)}) == 3  # products differ in the order they get
    assert all(by_class[c] != by_class[c + 3] for c in (3, 4, 5))  # and a product's classes differ
    assert colour_classes(labels, 3, 1) == (list(range(5)), labels, [0] * 5)  # 1: off
    with pytest.raises(InvalidArgumentError, match="1 to 6"):
        colour_classes(labels, 3, 7)  # a seventh class would repeat a channel order under another label

    config = TrainConfig(data="", out="", image_size=32, augment=PLAIN)
    photos = AugmentedPhotos([photo(4)] * 6, list(range(6)), config, orders=list(range(6)))
    views = [photos[i][0].numpy() for i in range(6)]
    assert COLOUR_ORDERS[0] == (0, 1, 2) and len(set(COLOUR_ORDERS)) == 6
    for order, view in zip(COLOUR_ORDERS, views):
        assert np.array_equal(view, views[0][:, :, order])


@pytest.mark.parametrize("loss, proxies", [("multisimilarity", False), ("proxyanchor", True), ("arcface", True)])
def test_class_proxies_learn_at_their_own_rate(loss, proxies):
    """A proxy loss's class proxies start random: they get proxy_lr, the backbone and new layers their own rates."""
    import torch

    from snapmatch.training.losses import build_criterion
    from snapmatch.training.train import parameter_groups

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = torch.nn.Linear(4, 4)
            self.head = torch.nn.Linear(4, 8)

    config = TrainConfig(data="", out="", lr=3e-4, backbone_lr=1e-4, proxy_lr=1e-2)
    criterion = build_criterion(loss, num_classes=5, dim=8)
    groups = parameter_groups(Net(), criterion, config)
    assert [g["lr"] for g in groups] == [1e-4, 3e-4] + ([1e-2] if proxies else [])
    if proxies:
        assert groups[-1]["params"] == criterion.parameters()
