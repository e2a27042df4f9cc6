"""What the node publishes about its reasoning, as lifecycle publishers (nothing goes out while
inactive): each answer (``~/answer``), each step's drawn images (``~/annotated``), their overlay
primitives in source pixels (``~/markers``), the drawings lifted to 3-D (``~/markers_3d``) and the
drawn boxes as ``vision_msgs`` detections where that package is installed."""

from __future__ import annotations

from sensor_msgs.msg import Image
from visualization_msgs.msg import ImageMarker, MarkerArray

from ros_vilasr_interfaces.msg import SpatialAnswer

from . import messages
from .depth import markers_3d
from .detections import DetectionPublishers

TOPICS = {"answer": (SpatialAnswer, "~/answer", 10), "annotated": (Image, "~/annotated", 10),
          "markers": (ImageMarker, "~/markers", 100), "markers_3d": (MarkerArray, "~/markers_3d", 10)}


class Outputs:
    def __init__(self, node):
        self.node = node
        self._publishers: dict = {}
        self._detections = DetectionPublishers(node)

    def create(self) -> None:
        """At configure."""
        self._publishers = {name: self.node.create_lifecycle_publisher(*spec) for name, spec in TOPICS.items()}
        self._detections.create()

    def destroy(self) -> None:
        """At cleanup (and shutdown)."""
        for publisher in self._publishers.values():
            self.node.destroy_lifecycle_publisher(publisher)
        self._publishers = {}
        self._detections.destroy()

    def step(self, job, query: int, step, msg, images) -> None:
        """A model turn (worker thread): its drawn images, their markers (2-D, 3-D), detections."""
        for image in images:
            self._publishers["annotated"].publish(image)
        for n in step.new_images:
            for marker in messages.markers(job, query, n):
                self._publishers["markers"].publish(marker)
        if any(op.lifted for op in msg.ops):
            self._publishers["markers_3d"].publish(
                markers_3d(msg.ops, messages.box_colours(job, step), query, step.step))
        self._detections.publish(msg.ops, query, step.step)

    def answer(self, answer: SpatialAnswer) -> None:
        publisher = self._publishers.get("answer")
        if publisher is not None and publisher.is_activated:  # an inactive node's goals: result only
            publisher.publish(answer)
