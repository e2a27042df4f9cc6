"""Test-wide isolation: loopback-only DDS discovery and a domain ID of this run's own, set before
any test starts ROS; subprocesses inherit it."""

import os

from ros_vilasr.isolation import claim_domain_id

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(claim_domain_id())
