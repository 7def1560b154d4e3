"""Data sources: determinism, resume, sharding, bad files, TFDS round trip without download."""

import io
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxviz.common.errors import JaxvizError, UsageError
from jaxviz.common.images import ImageError, decode_image_bytes
from jaxviz.data import DataError, build_tfds_from_folder, open_source

SIZE = 24


def _cat(batches):
    return np.concatenate(list(batches))


def _noise(seed, shape):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _jpeg_bytes(image):
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=90)
    return out.getvalue()


@pytest.fixture
def photos_src():
    return open_source("photos", size=SIZE, max_images=23, seed=3)


@pytest.fixture
def mixed_folder(tmp_path, photos):
    """2 good RGB images, a grayscale PNG, a truncated JPEG and a text file."""
    jpeg = _jpeg_bytes(photos["chelsea"])
    (tmp_path / "b_good.jpg").write_bytes(jpeg)
    (tmp_path / "c_broken.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "sub").mkdir()
    Image.fromarray(photos["coffee"]).save(tmp_path / "sub" / "a_good.png")
    Image.fromarray(photos["astronaut"].mean(-1).astype(np.uint8)).save(tmp_path / "d_gray.png")
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / ".hidden.png").write_bytes(b"ignored: hidden files are not listed")
    return tmp_path


@pytest.fixture
def png_folder(tmp_path):
    folder = tmp_path / "pngs"
    (folder / "nested").mkdir(parents=True)
    for i in range(6):
        where = folder / "nested" if i % 2 else folder
        Image.fromarray(_noise(i, (30 + 5 * i, 40, 3))).save(where / f"img{i}.png")
    return folder


def test_photos_deterministic_per_seed(photos_src):
    again = open_source("photos", size=SIZE, max_images=23, seed=3)
    other = open_source("photos", size=SIZE, max_images=23, seed=4)
    first = _cat(photos_src.batches(8))
    assert first.shape == (23, SIZE, SIZE, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, _cat(again.batches(8)))
    np.testing.assert_array_equal(first, _cat(photos_src.batches(5)))  # batch size is irrelevant
    assert not np.array_equal(first, _cat(other.batches(8)))
    assert len(photos_src) == 23 and len(photos_src.describe()) < 80
    assert len(open_source("photos", size=SIZE)) == 256


def test_photo_samples_vary_within_a_photo(photos_src):
    # Samples 0 and 10 both crop photo 0 but with different RNG streams.
    assert not np.array_equal(photos_src.sample(0), photos_src.sample(10))
    with pytest.raises(IndexError):
        photos_src.sample(23)


@pytest.mark.parametrize("start", [0, 4, 7, 22])
def test_resume_equals_tail(photos_src, start):
    full = _cat(photos_src.batches(5))
    np.testing.assert_array_equal(_cat(photos_src.batches(5, start=start)), full[start:])
    assert list(photos_src.batches(5, start=23)) == []


@pytest.mark.parametrize("shards,start", [(2, 0), (3, 0), (2, 5), (3, 7)])
def test_shards_partition_the_indices(photos_src, shards, start):
    full = _cat(photos_src.batches(4))
    index_of = {img.tobytes(): i for i, img in enumerate(full)}
    assert len(index_of) == len(full)  # all samples distinct, so images identify indices
    seen = []
    for shard in range(shards):
        got = [index_of[img.tobytes()]
               for img in _cat(photos_src.batches(4, start=start, shard_index=shard,
                                                  shard_count=shards))]
        assert got == list(range(start + (shard - start) % shards, len(full), shards))
        seen += got
    assert sorted(seen) == list(range(start, len(full)))  # disjoint and complete


def test_batches_bad_arguments_fail_at_the_call(photos_src):
    for kwargs in [dict(batch_size=0), dict(batch_size=2, shard_index=2, shard_count=2),
                   dict(batch_size=2, start=-1)]:
        with pytest.raises(UsageError):
            photos_src.batches(**kwargs)


def test_folder_skips_and_converts(mixed_folder):
    src = open_source(f"folder:{mixed_folder}", size=SIZE)
    assert (len(src), src.skipped, src.converted, src.ignored) == (3, 1, 1, 1)  # broken JPEG skipped, text ignored
    assert [os.path.relpath(f, mixed_folder) for f in src.files] == [
        "b_good.jpg", "d_gray.png", os.path.join("sub", "a_good.png")]
    images = _cat(src.batches(2))
    assert images.shape == (3, SIZE, SIZE, 3) and images.dtype == np.uint8
    gray = images[1].astype(int)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    assert "3 images, 1 skipped, 1 converted, 1 non-image files ignored" in src.describe()
    first_two = open_source(f"folder:{mixed_folder}", size=SIZE, max_images=2)
    assert len(first_two) == 2 and first_two.files == src.files[:2]


def test_folder_missing_or_empty(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_source(f"folder:{tmp_path / 'nope'}", size=SIZE)
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(DataError, match="no readable image.*1 other files"):
        open_source(f"folder:{tmp_path}", size=SIZE)


def test_decode_errors_are_image_errors(photos):
    jpeg = _jpeg_bytes(photos["chelsea"])
    image, converted = decode_image_bytes(jpeg, draft_size=64)
    assert image.ndim == 3 and min(image.shape[:2]) >= 64 and not converted
    with pytest.raises(ImageError, match="truncated"):
        decode_image_bytes(jpeg[:-200], label="cut.jpg")
    with pytest.raises(ImageError, match="not an image"):
        decode_image_bytes(b"hello", label="x")


def test_tfds_round_trip(png_folder, tmp_path, capfd):
    data_dir = tmp_path / "tfds"
    built = build_tfds_from_folder(png_folder, "tiny_pngs", data_dir)
    assert (built.images, built.skipped) == (6, 0)
    src = open_source("tfds:tiny_pngs/train", size=SIZE, data_dir=str(data_dir))
    assert len(src) == 6 and "tfds:tiny_pngs/train" in src.describe()
    got = _cat(src.batches(4))
    np.testing.assert_array_equal(_cat(src.batches(4, start=3)), got[3:])
    # Same pixels as reading the folder directly (records are stored in TFDS's hashed order).
    direct = _cat(open_source(f"folder:{png_folder}", size=SIZE).batches(6))
    assert sorted(x.tobytes() for x in got) == sorted(x.tobytes() for x in direct)
    default_split = open_source("tfds:tiny_pngs", size=SIZE, data_dir=str(data_dir), max_images=2)
    np.testing.assert_array_equal(_cat(default_split.batches(2)), got[:2])
    assert "Failed to import TensorFlow" not in "".join(capfd.readouterr())
    assert "tensorflow" not in sys.modules

    with pytest.raises(DataError, match="already exists"):
        build_tfds_from_folder(png_folder, "tiny_pngs", data_dir)
    build_tfds_from_folder(png_folder, "tiny_pngs", data_dir, overwrite=True)
    with pytest.raises(DataError, match="no split 'test'.*train"):
        open_source("tfds:tiny_pngs/test", size=SIZE, data_dir=str(data_dir))
    with pytest.raises(UsageError, match="dataset name"):
        build_tfds_from_folder(png_folder, "Tiny-PNGs", data_dir)


@pytest.mark.parametrize("spec", ["tfds:mnist", "tfds:imagenet2012/validation",
                                  "tfds:my_dataset:1.0.0/train"])
def test_unprepared_tfds_errors_without_network(tmp_path, monkeypatch, spec):
    import tensorflow_datasets as tfds

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", refuse)
    with pytest.raises(DataError) as err:
        open_source(spec, size=SIZE, data_dir=str(tmp_path))
    message = str(err.value)
    assert "not prepared" in message and "array_record" in message and "\n" not in message
    assert attempts == []
    assert list(tmp_path.iterdir()) == []  # nothing written either


@pytest.mark.parametrize("spec", ["foo:bar", "folder:", "tfds:", "photo", "", "PHOTOS"])
def test_bad_spec_lists_accepted_forms(spec):
    with pytest.raises(UsageError, match="'photos', 'folder:PATH' or 'tfds:NAME"):
        open_source(spec, size=SIZE)


@pytest.mark.parametrize("spec,kwargs", [
    ("tfds:Bad_Name", {}), ("tfds:a/b/c/d", {}), ("tfds:mnist:1.0/train", {}),
    ("photos", dict(data_dir="/tmp")), ("photos", dict(max_images=0)), ("photos", dict(seed=-1)),
])
def test_bad_arguments_are_usage_errors(spec, kwargs):
    with pytest.raises(UsageError):
        open_source(spec, size=SIZE, **kwargs)
    with pytest.raises(JaxvizError):
        open_source("photos", size=0)


def test_importing_data_does_not_import_tfds():
    code = ("import sys, jaxviz.data; "
            "sys.exit('tensorflow_datasets' in sys.modules or 'jaxviz.data.tfds' in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
