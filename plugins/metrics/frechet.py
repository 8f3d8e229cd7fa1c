"""The Frechet distance between two Gaussians fitted to feature sets (Heusel et al. 2017, "GANs Trained by a
Two Time-Scale Update Rule...", eq. 6): ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))."""

from __future__ import annotations

import logging
import warnings

import numpy as np
from scipy import linalg

log = logging.getLogger(__name__)

# The safeguards of the reference implementation (TTUR's fid.py): a small ridge when the square root is not
# finite (a singular product), and an imaginary part from round-off is dropped only while it is negligible.
EPS = 1e-6
IMAGINARY_TOLERANCE = 1e-3


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D]; N < 2 has no covariance."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"the Frechet distance needs at least 2 images per set, got {features.shape[0]}")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, eps: float = EPS
) -> float:
    """The squared Frechet distance of N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature sizes differ: {mu1.shape[0]} and {mu2.shape[0]}")
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        log.warning("fid: the covariance product is singular; adding %g to the diagonals", eps)
        ridge = eps * np.eye(sigma1.shape[0])
        covmean = _sqrtm((sigma1 + ridge) @ (sigma2 + ridge))
    if np.iscomplexobj(covmean):
        imaginary = np.max(np.abs(np.diagonal(covmean).imag))
        if imaginary > IMAGINARY_TOLERANCE:
            raise ValueError(
                f"the square root of the covariance product has an imaginary part of {imaginary:.3g}: "
                "too few images for the feature size, or features that are not finite"
            )
        covmean = covmean.real
    diff = mu1 - mu2
    distance = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
    return max(distance, 0.0)  # a distance; below 0 only by round-off (a set against itself)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # a singular product is handled above, and reported once by the caller
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(matrix)


def frechet_distance_of(features1: np.ndarray, features2: np.ndarray) -> float:
    """The Frechet distance of two feature sets [N1, D] and [N2, D]."""
    smaller = min(len(features1), len(features2))
    if smaller <= np.shape(features1)[1]:
        log.warning(
            "fid: %d pictures for %d features: the covariances are singular and the distance is a rough estimate",
            smaller,
            np.shape(features1)[1],
        )
    return frechet_distance(*feature_stats(features1), *feature_stats(features2))
