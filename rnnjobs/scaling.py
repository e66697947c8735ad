"""Scaling of features and targets, fitted on training data and stored in the model file."""

import numpy as np


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

    def fit(self, values):
        """Fit on ``values`` whose last axis holds the variables; NaN values are ignored."""
        flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
        n_variables = flat.shape[1]
        if self.method == "none" or flat.size == 0:
            offset, scale = np.zeros(n_variables), np.ones(n_variables)
        elif self.method == "standard":
            offset, scale = np.nanmean(flat, axis=0), np.nanstd(flat, axis=0)
        elif self.method == "minmax":
            offset = np.nanmin(flat, axis=0)
            scale = np.nanmax(flat, axis=0) - offset
        else:
            raise ValueError(f"unknown scaling method {self.method!r}; expected 'standard', 'minmax' or 'none'")
        # A constant variable (or one with no valid value) keeps its values shifted but unscaled.
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        offset = np.where(np.isfinite(offset), offset, 0.0)
        self.offset_ = offset.astype(np.float32)
        self.scale_ = scale.astype(np.float32)
        return self

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
