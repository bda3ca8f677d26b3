"""Summaries of repeated measurements: median and spread (min-max)."""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float
    n: int

    def scaled(self, factor: float) -> Summary:
        return Summary(self.median * factor, self.low * factor, self.high * factor, self.n)

    def pct(self, digits: int = 1) -> str:
        """'97.1% (96.8-97.4)' for a fraction."""
        s = self.scaled(100)
        if s.n == 1:
            return "%.*f%%" % (digits, s.median)
        return "%.*f%% (%.*f–%.*f)" % (digits, s.median, digits, s.low, digits, s.high)

    def num(self, digits: int = 2, unit: str = "") -> str:
        """'0.93 (0.91-0.95)'."""
        if self.n == 1:
            return "%.*f%s" % (digits, self.median, unit)
        return "%.*f%s (%.*f–%.*f)" % (digits, self.median, unit, digits, self.low, digits, self.high)


def summarize(samples: Sequence[float]) -> Summary:
    if not samples:
        raise ValueError("no samples")
    return Summary(float(statistics.median(samples)), float(min(samples)), float(max(samples)), len(samples))


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """a[i] / b[i]: measurements taken next to each other in the same round,
    so that a machine busy with something else slows both alike. A pair with
    a 0 (not measurable) is left out."""
    if len(numerators) != len(denominators):
        raise ValueError("unpaired samples: %d vs %d" % (len(numerators), len(denominators)))
    return [a / b for a, b in zip(numerators, denominators) if a and b]


def integer_weights(rates: Sequence[float]) -> list[int]:
    """Smallest integer weights proportional to link rates: 40, 20, 10 -> 4, 2, 1."""
    lowest = min(rates)
    weights = [r / lowest for r in rates]
    for scale in range(1, 101):
        if all(abs(w * scale - round(w * scale)) < 1e-6 for w in weights):
            return [int(round(w * scale)) for w in weights]
    return [max(1, int(round(r))) for r in rates]


def median_ci(samples: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free ~95% confidence interval of the median: the order
    statistics n/2 -+ z*sqrt(n)/2 (binomial approximation). With few
    samples it is the whole range."""
    ordered = sorted(samples)
    n = len(ordered)
    half = z * math.sqrt(n) / 2
    low = max(0, int(math.floor(n / 2 - half)))
    high = min(n - 1, int(math.ceil(n / 2 + half)) - 1)
    return ordered[low], ordered[high]


def quartiles(samples: Sequence[float]) -> tuple[float, float]:
    if len(samples) < 2:
        return samples[0], samples[0]
    q = statistics.quantiles(samples, n=4)
    return q[0], q[2]
