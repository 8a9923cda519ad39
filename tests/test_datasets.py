"""Dataset helpers: the digits split and the MNIST IDX reader (on small files written here)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

import statefulnlp as snlp
from statefulnlp.datasets import digits_split, load_mnist, read_idx


def write_idx(path, array, type_code=0x08, compress=False):
    array = np.asarray(array)
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(">u1" if type_code == 0x08 else array.dtype).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as fh:
        fh.write(payload)


def write_mnist(directory, n_train=40, n_test=20, compress=False, seed=0):
    rng = np.random.default_rng(seed)
    suffix = ".gz" if compress else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            directory / f"{split}-images-idx3-ubyte{suffix}",
            rng.integers(0, 256, (n, 28, 28)),
            compress=compress,
        )
        write_idx(
            directory / f"{split}-labels-idx1-ubyte{suffix}",
            rng.integers(0, 10, n),
            compress=compress,
        )


def test_digits_split_is_the_designed_split():
    X_train, X_test, _, y_test = digits_split()
    assert X_train.shape == (1437, 64) and X_test.shape == (360, 64)
    assert X_train.dtype == np.float32 and X_train.min() >= 0.0 and X_train.max() <= 1.0
    assert np.bincount(y_test).min() >= 35  # stratified
    assert digits_split(images=True)[0].shape == (1437, 8, 8)


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_from_small_idx_files(tmp_path, compress):
    write_mnist(tmp_path, compress=compress)
    images, labels = load_mnist(tmp_path, "train")
    assert images.shape == (40, 28, 28) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert labels.shape == (40,) and labels.dtype == np.int32
    test_images, _ = load_mnist(tmp_path, "test")
    assert test_images.shape == (20, 28, 28)


def test_read_idx_round_trip(tmp_path):
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx", data)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), data)


def test_missing_and_corrupt_files_are_clear_errors(tmp_path):
    with pytest.raises(snlp.DatasetNotFoundError, match="train-images-idx3-ubyte") as info:
        load_mnist(tmp_path, "train")
    assert isinstance(info.value, FileNotFoundError) and "never downloads" in str(info.value)
    write_mnist(tmp_path)
    # Truncated image file.
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(snlp.DatasetError, match="truncated or corrupt"):
        load_mnist(tmp_path, "train")
    # Bad magic number.
    path.write_bytes(b"\x01\x02\x03\x04" + b"\x00" * 20)
    with pytest.raises(snlp.DatasetError, match="magic"):
        load_mnist(tmp_path, "train")
    # Image and label counts disagree.
    write_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(snlp.DatasetError, match="20 images but"):
        load_mnist(tmp_path, "test")
    with pytest.raises(snlp.InvalidArgumentError, match="split"):
        load_mnist(tmp_path, "validation")
    # A corrupt gzip file.
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(snlp.DatasetError, match="could not be read"):
        read_idx(tmp_path / "bad.gz")
