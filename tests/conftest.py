"""Shared test helpers. Compiled functions are shared through module-scoped fixtures."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest


def shared_data_dir() -> pathlib.Path:
    """The real fixture data: `$HRNET_FIXTURES` or `../shared/data` beside the checkout."""
    root = pathlib.Path(__file__).resolve().parents[1]
    return pathlib.Path(os.environ.get("HRNET_FIXTURES", root.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    path = shared_data_dir()
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the real fixture data at {path}")
        pytest.skip(f"real fixture data not found at {path} (set HRNET_FIXTURES)")
    return path


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max |expected|: the parity measure of the issues."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())
