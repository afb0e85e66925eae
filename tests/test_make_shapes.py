"""scripts/make_shapes.py: the generated dataset the pruning benchmark judges the defaults on."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from ml_framework.data.folder import scan_image_folder

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shapes():
    spec = importlib.util.spec_from_file_location("make_shapes", REPO / "scripts" / "make_shapes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_images_are_seeded_balanced_and_differ_by_class(shapes) -> None:
    images, labels = shapes.shape_images(per_class=40, size=16, seed=3, noise=0.0)
    again, _ = shapes.shape_images(per_class=40, size=16, seed=3, noise=0.0)
    other, _ = shapes.shape_images(per_class=40, size=16, seed=4, noise=0.0)
    assert images.shape == (40 * len(shapes.CLASSES), 16, 16) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [40] * len(shapes.CLASSES)
    assert np.array_equal(images, again) and not np.array_equal(images, other)
    # Classes differ by shape: a filled disk or square departs from the background grey over more
    # pixels than the ring or frame of the same size.
    contrast = np.abs(images.astype(float) - np.median(images, axis=(1, 2), keepdims=True)).mean(axis=(1, 2))
    by_class = {c: contrast[labels == i].mean() for i, c in enumerate(shapes.CLASSES)}
    assert by_class["disk"] > by_class["ring"] * 1.2
    assert by_class["square"] > by_class["frame"] * 1.1


def test_main_writes_a_folder_the_framework_reads(shapes, tmp_path: Path) -> None:
    assert shapes.main(["--out", str(tmp_path), "--per-class", "2", "--size", "8"]) == 0
    folder = scan_image_folder(tmp_path)
    assert folder.classes == tuple(sorted(shapes.CLASSES))
    assert len(folder.files) == 2 * len(shapes.CLASSES)
    with pytest.raises(SystemExit):
        shapes.main(["--out", str(tmp_path), "--per-class", "0"])
