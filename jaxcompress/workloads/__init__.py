"""Workloads: data sets (digits embedded; MNIST, Shakespeare when installed) and models."""

from jaxcompress.workloads._cnn import LeNet
from jaxcompress.workloads._data import (
    MNIST_INSTALL,
    SHAKESPEARE_INSTALL,
    DataNotFoundError,
    Dataset,
    batches,
    cache_dir,
    load,
    load_digits,
    load_mnist,
    load_shakespeare,
    shakespeare_text,
)
from jaxcompress.workloads._models import MLP, MLPNNX
from jaxcompress.workloads._transformer import CharTransformer

__all__ = [
    "MLP",
    "MLPNNX",
    "CharTransformer",
    "LeNet",
    "MNIST_INSTALL",
    "SHAKESPEARE_INSTALL",
    "DataNotFoundError",
    "Dataset",
    "batches",
    "cache_dir",
    "load",
    "load_digits",
    "load_mnist",
    "load_shakespeare",
    "shakespeare_text",
]
