"""The model card's commands remake the shipped recipe: every training option off its default is named."""

from __future__ import annotations

import dataclasses
import json

import pytest

pytest.importorskip("torch")

from snapmatch.export.pipeline import train_arguments  # noqa: E402
from snapmatch.training.augment import AugmentConfig  # noqa: E402
from snapmatch.training.train import TrainConfig  # noqa: E402


def recipe(**changes) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(TrainConfig(**changes))))  # as a checkpoint stores it


def test_a_default_recipe_names_only_the_fixed_flags():
    args = train_arguments(recipe(backbone="large_minimalistic", pretrained="/weights/imagenet.pt", epochs=5))
    assert args == ("--loss multisimilarity --epochs 5 --seed 0 --backbone large_minimalistic --head pooled "
                    "--pretrained imagenet.pt")


def test_options_off_their_defaults_are_named_so_the_command_remakes_the_model():
    args = train_arguments(recipe(catalog_pairs=0.25, colour_classes=2, image_size=256, l2sp=0.2,
                                  augment=AugmentConfig(camera=0.3)))
    assert args.endswith(" --pretrained default --catalog-pairs 0.25 --colour-classes 2 --l2sp 0.2 "
                         "--image-size 256 --camera 0.3")
    assert "--pooling" not in args and "--batch-size" not in args  # left at their defaults
