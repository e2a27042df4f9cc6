"""What the node reports on ``/diagnostics``: one status for the model, one per camera, one for
the frame buffer (``diagnostic_msgs`` glue), and the per-camera fault counts behind them."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header


@dataclass
class CameraStats:
    received: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason kind -> frames
    incompatible_qos: int = 0
    last_drop: str = ""


class CameraHealth:
    """Per camera: frames received and dropped by kind of fault, each (camera, kind) logged once
    (a bad camera at 30 Hz must not flood the log; /diagnostics counts every one)."""

    def __init__(self, warn):
        self._warn, self._cameras, self._logged = warn, {}, set()
        self._lock = threading.Lock()

    def __getitem__(self, camera: str) -> CameraStats:
        with self._lock:
            return self._cameras.setdefault(camera, CameraStats())

    def drop(self, camera: str, kind: str, reason: str) -> None:
        stats = self[camera]
        stats.dropped[kind] += 1
        stats.last_drop = reason
        if (camera, kind) not in self._logged:
            self._logged.add((camera, kind))
            self._warn(f"dropping frames from {camera}: {reason} (logged once for this camera and fault; "
                       "counted in /diagnostics)")

    def snapshot(self) -> dict[str, CameraStats]:
        with self._lock:
            return dict(self._cameras)


def _status(level, name: str, message: str, hardware_id: str, values: dict) -> DiagnosticStatus:
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def diagnostic_array(node_name: str, stamp, model: dict, cameras: dict[str, CameraStats], buffered: dict,
                     budget_bytes: int) -> DiagnosticArray:
    """``model``: the model's key values (``model_state`` "failed..." makes it an ERROR);
    ``buffered``: ``KeyFrameBuffer.stats()``, per camera and "*" for all."""
    failed = model["model_state"].startswith("failed")
    statuses = [_status(DiagnosticStatus.ERROR if failed else DiagnosticStatus.OK, f"{node_name}: model",
                        model["model_state"], model["model"], model)]
    for camera, stats in cameras.items():
        dropped = sum(stats.dropped.values())
        values = {"received": stats.received, "dropped": dropped,
                  **{f"dropped_{k}": v for k, v in sorted(stats.dropped.items())},
                  "keyframes": buffered.get(camera, {}).get("keyframes", 0),
                  "buffer_bytes": buffered.get(camera, {}).get("bytes", 0),
                  "incompatible_qos": stats.incompatible_qos, "last_drop_reason": stats.last_drop}
        message = (f"{dropped} frames dropped" if dropped else "incompatible QoS" if stats.incompatible_qos else "ok")
        level = DiagnosticStatus.WARN if dropped or stats.incompatible_qos else DiagnosticStatus.OK
        statuses.append(_status(level, f"{node_name}: camera {camera}", message, camera, values))
    total = buffered["*"]
    statuses.append(_status(DiagnosticStatus.OK, f"{node_name}: frame buffer",
                            f"{total['bytes'] / 2**20:.1f} of {budget_bytes / 2**20:.1f} MB", "",
                            {"bytes": total["bytes"], "budget_bytes": budget_bytes, "keyframes": total["keyframes"]}))
    return DiagnosticArray(header=Header(stamp=stamp), status=statuses)
