"""Scalers fitted block by block equal scalers fitted on all data at once."""

import numpy as np
import pytest

from rnnjobs.scaling import Scaler


def sample_values():
    values = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 40, 3)).astype(np.float32)
    values[values > 5.5] = np.nan
    values[..., 2] = 7.0
    return values


@pytest.mark.parametrize("method", ["standard", "minmax", "none"])
def test_partial_fit_equals_fit(method):
    values = sample_values()
    whole = Scaler(method).fit(values)
    blocks = Scaler(method)

    for first in range(0, 50, 7):
        blocks.partial_fit(values[first : first + 7])

    assert np.allclose(blocks.offset_, whole.offset_, rtol=1e-6, atol=1e-6)
    assert np.allclose(blocks.scale_, whole.scale_, rtol=1e-6)


def test_standard_fit_ignores_nan():
    values = sample_values()
    flat = values.reshape(-1, 3).astype(np.float64)

    scaler = Scaler("standard").fit(values)

    assert np.allclose(scaler.offset_[:2], np.nanmean(flat[:, :2], axis=0), rtol=1e-6)
    assert np.allclose(scaler.scale_[:2], np.nanstd(flat[:, :2], axis=0), rtol=1e-6)


def test_constant_and_empty_variables_unscaled():
    values = sample_values()
    values[..., 1] = np.nan

    scaler = Scaler("standard").fit(values)

    assert scaler.scale_[2] == 1.0
    assert scaler.offset_[2] == 7.0
    assert scaler.scale_[1] == 1.0
    assert scaler.offset_[1] == 0.0


def test_fit_restarts_partial_fit():
    values = sample_values()
    scaler = Scaler("minmax").partial_fit(values * 10)

    scaler.fit(values)

    assert np.allclose(scaler.offset_, Scaler("minmax").fit(values).offset_)


def test_partial_fit_in_small_pieces(monkeypatch):
    values = sample_values()
    whole = Scaler("standard").fit(values)
    monkeypatch.setattr("rnnjobs.scaling.PIECE_ROWS", 13)

    pieces = Scaler("standard").fit(values)

    assert np.allclose(pieces.offset_, whole.offset_, rtol=1e-6)
    assert np.allclose(pieces.scale_, whole.scale_, rtol=1e-6)


def test_unknown_method_rejected():
    with pytest.raises(ValueError, match="unknown scaling method 'robust'"):
        Scaler("robust").fit(np.zeros((2, 1)))
