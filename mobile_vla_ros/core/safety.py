"""Why the robot is stopped: one reason at a time, with change detection for one log line per change;
and how old features may get for a VLM of a given latency and rate."""

from __future__ import annotations

import enum

from .params import ACTION_NODE_PARAMS, spec_by_name


class StopReason(enum.Enum):
    NONE = "running"
    NO_INSTRUCTION = "no instruction yet"
    NO_FEATURES = "no VL features yet"
    INSTRUCTION_CHANGED = "instruction changed, no features for it yet"
    FEATURES_STALE = "VL features older than max_feature_age"
    WINDOW_INCOMPLETE = "sensor window incomplete"
    SENSOR_GAP = "sensor gap longer than max_sensor_gap"
    FROM_THE_FUTURE = "input stamped ahead of the clock"
    CLOCK_JUMPED = "clock jumped; waiting for fresh data"
    INFERENCE_ERROR = "inference error"
    NON_FINITE_OUTPUT = "non-finite model output"


class SafetyState:
    """Tracks the current stop reason; `update` returns True when it changed."""

    def __init__(self) -> None:
        self.reason = StopReason.NO_INSTRUCTION
        self.detail = ""
        self.stop_events = 0

    @property
    def stopped(self) -> bool:
        return self.reason is not StopReason.NONE

    def update(self, reason: StopReason, detail: str = "") -> bool:
        changed = reason is not self.reason
        if changed and reason is not StopReason.NONE:
            self.stop_events += 1
        self.reason, self.detail = reason, detail
        return changed

    def describe(self) -> str:
        return self.reason.value + (f" ({self.detail})" if self.detail else "")


def feature_age_limit(vlm_latency: float, vlm_hz: float) -> float:
    """max_feature_age for a VLM of this latency and rate (the one rule the benchmarks and the
    in-process closed loop use; never below the node's default): features are up to latency + one period
    old when the next ones arrive; twice the latency plus a period leaves room for one late forward."""
    return max(float(spec_by_name(ACTION_NODE_PARAMS)["max_feature_age"].default), 2 * vlm_latency + 1.0 / vlm_hz)
