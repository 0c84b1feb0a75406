"""Every docstring example in the package runs and prints what it shows (doctest)."""

import doctest
import importlib
import io
import pkgutil

import pytest

import jaxcompress


def _modules():
    yield jaxcompress
    for info in pkgutil.walk_packages(jaxcompress.__path__, "jaxcompress."):
        if not info.name.endswith("__main__"):  # runs the command line on import
            yield importlib.import_module(info.name)


def _doctests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = {}
    for module in _modules():
        for test in finder.find(module, module.__name__):
            if test.examples:
                found.setdefault(test.name, test)
    return [found[name] for name in sorted(found)]


DOCTESTS = _doctests()


def test_examples_are_collected():
    assert len(DOCTESTS) > 100


@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name for t in DOCTESTS])
def test_docstring_example(test):
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=out.write)
    assert runner.failures == 0, out.getvalue()
