"""Finite differences, to hold the models' analytic gradients to."""

from __future__ import annotations

import numpy as np


def central_difference(function, point: np.ndarray, step: float = 1e-6) -> np.ndarray:
    gradient = np.zeros_like(point)
    for i in range(len(point)):
        delta = np.zeros_like(point)
        delta[i] = step * point[i]
        gradient[i] = (function(point + delta) - function(point - delta)) / (2 * delta[i])
    return gradient
