"""Loss meters made on the fly (a new loss term needs no logger edit) and the training log line.

    Iter:19940| dist_rel: 1.16826 1.33665| total: 2.07187 2.29696| lr: 0.000996| 812.4 img/s

Each loss shows its current value and its mean over the last `window` iterations.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping


class SmoothedValue:
    def __init__(self, window: int = 100) -> None:
        self.values: deque[float] = deque(maxlen=window)
        self.current = float("nan")

    def update(self, value: float) -> None:
        self.current = value
        self.values.append(value)

    @property
    def smoothed(self) -> float:
        return sum(self.values) / len(self.values) if self.values else float("nan")


class Meters:
    """One SmoothedValue per key seen, in first-seen order ("total" always last)."""

    def __init__(self, window: int = 100) -> None:
        self.window = window
        self.meters: dict[str, SmoothedValue] = {}

    def update(self, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self.meters.setdefault(key, SmoothedValue(self.window)).update(float(value))

    def state_dict(self) -> dict[str, list[float]]:
        return {key: list(m.values) for key, m in self.meters.items()}

    def load_state_dict(self, state: Mapping[str, list[float]]) -> None:
        for key, values in state.items():
            meter = self.meters.setdefault(key, SmoothedValue(self.window))
            meter.values.extend(values)
            meter.current = values[-1] if values else float("nan")

    def line(self, iteration: int, lr: float, images_per_s: float | None = None) -> str:
        keys = [k for k in self.meters if k != "total"] + (["total"] if "total" in self.meters else [])
        parts = [f"Iter:{iteration}"]
        parts += [f"{k}: {self.meters[k].current:.5f} {self.meters[k].smoothed:.5f}" for k in keys]
        parts.append(f"lr: {lr:.6f}")
        if images_per_s is not None:
            parts.append(f"{images_per_s:.1f} img/s")
        return "| ".join(parts)
