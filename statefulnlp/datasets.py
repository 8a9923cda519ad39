"""Small dataset helpers for examples and tests (nothing here downloads anything).

* `digits_split`: scikit-learn's bundled 8×8 digits, split as the examples do
  (`train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)`, pixels / 16).
* `load_mnist`: MNIST from IDX files you downloaded yourself (plain or `.gz`), in a
  local directory; a missing or corrupt file is a clear error.
* `read_idx`: the IDX reader behind it.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from ._errors import DatasetError, DatasetNotFoundError, InvalidArgumentError

__all__ = ["default_data_dir", "digits_split", "load_mnist", "read_idx"]

_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def digits_split(
    *, images: bool = False, test_size: float = 0.2, random_state: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(X_train, X_test, y_train, y_test)` of scikit-learn's digits, pixels scaled to [0, 1].

    With `images=True` the inputs are `(n, 8, 8)` images, else `(n, 64)` vectors.
    Needs scikit-learn (the `[examples]` extra).

    Example:
        ```python
        from statefulnlp.datasets import digits_split

        X_train, X_test, y_train, y_test = digits_split(images=True)
        assert X_train.shape[1:] == (8, 8) and len(X_test) == 360
        ```
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:  # pragma: no cover - only without scikit-learn
        raise ImportError(
            'digits_split needs scikit-learn: pip install "statefulnlp[examples]"'
        ) from err
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    if images:
        X = X.reshape(-1, 8, 8)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, stratify=y, random_state=random_state
    )
    return (
        np.asarray(X_train),
        np.asarray(X_test),
        np.asarray(y_train, np.int32),
        np.asarray(y_test, np.int32),
    )


def default_data_dir() -> Path:
    """`$STATEFULNLP_DATA`, else `~/.cache/statefulnlp`.

    Example:
        ```python
        from statefulnlp.datasets import default_data_dir

        print(default_data_dir() / "mnist")
        ```
    """
    env = os.environ.get("STATEFULNLP_DATA")
    return Path(env) if env else Path.home() / ".cache" / "statefulnlp"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a NumPy array.

    Raises `DatasetNotFoundError` if the file does not exist and `DatasetError` if it
    is not a well-formed IDX file (bad magic number, unknown type, truncated data).

    Example:
        ```python
        import os, struct, tempfile
        from statefulnlp.datasets import read_idx

        path = os.path.join(tempfile.mkdtemp(), "labels.idx")
        with open(path, "wb") as fh:  # type 0x08 (uint8), 1 dimension of 3
            fh.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + bytes([7, 1, 4]))
        assert read_idx(path).tolist() == [7, 1, 4]
        ```
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"path: no IDX file at {str(path)!r}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise DatasetError(f"path: {str(path)!r} could not be read ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"path: {str(path)!r} is not an IDX file (bad magic number)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_TYPES:
        raise DatasetError(f"path: {str(path)!r} has unknown IDX data type 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"path: {str(path)!r} is truncated (incomplete header)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetError(
            f"path: {str(path)!r} should hold {expected} bytes of data for shape {list(shape)}, "
            f"found {len(raw) - header} (truncated or corrupt)"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise DatasetNotFoundError(
        f"directory: MNIST file {stem}[.gz] not found in {str(directory)!r}. Download the four "
        "IDX files of MNIST into that directory yourself (statefulnlp never downloads data), "
        "or pass directory=... / set STATEFULNLP_DATA."
    )


def load_mnist(
    directory: str | os.PathLike | None = None, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """`(images, labels)` of MNIST's `split` ("train" or "test") from local IDX files.

    `directory` defaults to `default_data_dir() / "mnist"`. Images are float32 in
    [0, 1] with shape `(n, 28, 28)` (any IDX image size is accepted); labels int32.

    Example:
        ```python
        from statefulnlp.datasets import load_mnist

        try:
            images, labels = load_mnist("~/data/mnist", "test")
        except FileNotFoundError as err:
            print(err)  # says which file is missing and where it was looked for
        ```
    """
    if split not in MNIST_FILES:
        raise InvalidArgumentError(f"split: expected 'train' or 'test', got {split!r}")
    directory = (
        Path(directory).expanduser() if directory is not None else default_data_dir() / "mnist"
    )
    image_stem, label_stem = MNIST_FILES[split]
    images = read_idx(_find(directory, image_stem))
    labels = read_idx(_find(directory, label_stem))
    if images.ndim != 3:
        raise DatasetError(f"{image_stem}: expected 3-D image data, got shape {list(images.shape)}")
    if labels.ndim != 1:
        raise DatasetError(f"{label_stem}: expected 1-D labels, got shape {list(labels.shape)}")
    if len(images) != len(labels):
        raise DatasetError(
            f"{image_stem} holds {len(images)} images but {label_stem} holds {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{label_stem}: labels must be digits 0-9, found {int(labels.max())}")
    return (images.astype(np.float32) / 255.0), labels.astype(np.int32)
