"""The node's camera inputs: colour subscriptions (raw or compressed), validated and buffered on
the executor and nothing else, plus each camera's optional aligned depth (``depth.DepthInputs``).
A new key frame is reported (standing questions are asked again on it)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from rclpy.event_handler import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_policy_name_from_kind, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from .conversions import FrameError, compressed_payload, raw_payload
from .depth import DepthInputs
from .diagnostics import CameraHealth
from .keyframes import FrameTooLarge, KeyFrameBuffer
from .support import MALLOC_TRIM


class CameraInputs:
    def __init__(self, node, buffer: KeyFrameBuffer, health: CameraHealth, enabled: Callable[[], bool],
                 on_key_frame: Callable[[str], None]):
        self.node, self.buffer, self.health = node, buffer, health
        self.enabled, self.on_key_frame = enabled, on_key_frame
        self.depth = DepthInputs()
        self._subscriptions = []
        self._reliability = ""

    def subscribe(self, values: dict, group) -> None:
        """Colour (and depth) subscriptions of the parameters ``values`` (image_topics, ...)."""
        topics, self._reliability = values["image_topics"], values["image_reliability"]
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=qos_profile_sensor_data.depth,
                         durability=qos_profile_sensor_data.durability,
                         reliability=(ReliabilityPolicy.RELIABLE if self._reliability == "reliable"
                                      else ReliabilityPolicy.BEST_EFFORT))
        for topic in topics:
            compressed = topic.rstrip("/").endswith("/compressed")
            events = SubscriptionEventCallbacks(incompatible_qos=functools.partial(self._on_incompatible_qos, topic))
            self._subscriptions.append(self.node.create_subscription(
                CompressedImage if compressed else Image, topic, functools.partial(self._on_frame, topic, compressed),
                qos, callback_group=group, event_callbacks=events))
            self.health[topic]  # listed in /diagnostics from now on
        self.node.get_logger().info(f"subscribed to {', '.join(topics)} ({self._reliability})")
        self.depth.subscribe(self.node, topics, values["depth_topics"], values["camera_info_topics"],
                             values["depth_tolerance_s"], qos, group, self.health.drop)

    def destroy(self) -> None:
        for subscription in self._subscriptions:
            self.node.destroy_subscription(subscription)
        self._subscriptions = []
        self.depth.destroy(self.node)

    def _on_frame(self, camera: str, compressed: bool, msg) -> None:
        """Validate and buffer; nothing else happens on the executor for a frame."""
        self.health[camera].received += 1
        if not self.enabled():
            return  # paused (~/enable): received, not decoded or kept
        try:
            limit = self.node.get_parameter("max_frame_pixels").value
            payload, pixels = compressed_payload(msg, limit) if compressed else raw_payload(msg, limit)
            evictions = self.buffer.evictions
            key_frame = self.buffer.offer(camera, msg.header, payload, pixels)
            if camera in self.depth:  # only cameras with depth pay for the lookup
                self.depth.on_colour(camera, self.buffer.latest([camera])[0], msg.header,
                                     (pixels.shape[1], pixels.shape[0]), self.health.drop)
            if key_frame:
                self.on_key_frame(camera)
            if self.buffer.evictions != evictions and MALLOC_TRIM is not None:
                MALLOC_TRIM(0)
        except FrameError as exc:
            self.health.drop(camera, exc.kind, exc.reason)
        except FrameTooLarge as exc:
            self.health.drop(camera, "too_large", str(exc))
        except Exception as exc:  # noqa: BLE001 - no frame may take the node down
            self.health.drop(camera, "error", f"{type(exc).__name__}: {exc}")

    def _on_incompatible_qos(self, camera: str, info: QoSRequestedIncompatibleQoSInfo) -> None:
        self.health[camera].incompatible_qos = info.total_count
        policy = qos_policy_name_from_kind(info.last_policy_kind)
        self.node.get_logger().warning(
            f"a publisher on {camera} offers a QoS incompatible with this subscription ({policy}); its frames "
            f"are not received. image_reliability is {self._reliability}: use best_effort for best-effort cameras")
