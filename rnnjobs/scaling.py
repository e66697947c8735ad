"""Scaling of features and targets, fitted on training data and stored in the model file."""

import numpy as np

# Rows of a block fitted at once by Scaler.partial_fit; each float64 copy of a piece is at most a few MB.
PIECE_ROWS = 1 << 16


class Scaler:
    """Per-variable affine scaling ``(x - offset) / scale``.

    Parameters
    ----------
    method : {"standard", "minmax", "none"}
        ``standard`` removes the mean and divides by the standard deviation,
        ``minmax`` maps the training range to [0, 1], ``none`` leaves values as they are.
    """

    def __init__(self, method="standard"):
        self.method = method
        self.offset_ = None
        self.scale_ = None
        self._count = None

    def fit(self, values):
        """Fit on ``values`` whose last axis indexes the variables; NaN values are ignored."""
        self._count = None
        return self.partial_fit(values)

    def partial_fit(self, values):
        """Update the fit with one more block of ``values``, so that data can be fitted block by block.

        Fitting blocks one after another gives the parameters of one fit on
        all of them, up to floating-point rounding: counts, means and sums of
        squared deviations are merged by the pairwise update of Chan, Golub
        and LeVeque (1979) in float64. NaN values are ignored. The block is
        processed in pieces of :data:`PIECE_ROWS` rows to bound the float64
        copies.
        """
        if self.method not in ("standard", "minmax", "none"):
            raise ValueError(f"unknown scaling method {self.method!r}; expected 'standard', 'minmax' or 'none'")
        flat = values.reshape(-1, values.shape[-1])
        for first in range(0, max(len(flat), 1), PIECE_ROWS):
            self._merge(flat[first : first + PIECE_ROWS].astype(np.float64))
        self._set_parameters()
        return self

    def _merge(self, piece):
        valid = ~np.isnan(piece)
        count = valid.sum(axis=0)
        mean = np.where(valid, piece, 0.0).sum(axis=0) / np.maximum(count, 1)
        deviations = np.where(valid, piece - mean, 0.0)
        m2 = (deviations * deviations).sum(axis=0)
        low = np.where(valid, piece, np.inf).min(axis=0, initial=np.inf)
        high = np.where(valid, piece, -np.inf).max(axis=0, initial=-np.inf)

        if self._count is None:
            self._count, self._mean, self._m2, self._min, self._max = count, mean, m2, low, high
            return
        total = self._count + count
        delta = mean - self._mean
        share = np.divide(count, total, out=np.zeros_like(delta), where=total > 0)
        self._m2 = self._m2 + m2 + delta * delta * self._count * share
        self._mean = self._mean + delta * share
        self._count = total
        self._min = np.minimum(self._min, low)
        self._max = np.maximum(self._max, high)

    def _set_parameters(self):
        n_variables = len(self._count)
        has_values = self._count > 0
        if self.method == "none" or not has_values.any():
            offset, scale = np.zeros(n_variables), np.ones(n_variables)
        elif self.method == "standard":
            offset = np.where(has_values, self._mean, np.nan)
            scale = np.sqrt(np.divide(self._m2, self._count, out=np.full(n_variables, np.nan), where=has_values))
        else:
            offset = np.where(has_values, self._min, np.nan)
            scale = np.where(has_values, self._max - self._min, np.nan)
        # A constant variable (or one with no valid value) keeps its values shifted but unscaled.
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        offset = np.where(np.isfinite(offset), offset, 0.0)
        self.offset_ = offset.astype(np.float32)
        self.scale_ = scale.astype(np.float32)

    def transform(self, values):
        """Return ``values`` scaled, as float32."""
        return ((values - self.offset_) / self.scale_).astype(np.float32)

    def inverse_transform(self, values):
        """Return scaled ``values`` in the original units, as float32."""
        return (values * self.scale_ + self.offset_).astype(np.float32)

    def to_dict(self):
        """Return the fitted parameters as JSON data."""
        return {"method": self.method, "offset": self.offset_.tolist(), "scale": self.scale_.tolist()}

    @classmethod
    def from_dict(cls, params):
        """Rebuild a fitted scaler from :meth:`to_dict` output."""
        scaler = cls(params["method"])
        scaler.offset_ = np.asarray(params["offset"], dtype=np.float32)
        scaler.scale_ = np.asarray(params["scale"], dtype=np.float32)
        return scaler
