"""ROS network isolation for every process this project starts (tests, CI, benchmarks, demo).

DDS discovery must never leave the machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST), and
concurrent runs on one machine must not cross-talk, so each run claims its own ROS_DOMAIN_ID by
holding an exclusive lock file for as long as the process lives.
"""

from __future__ import annotations

import fcntl
import os
import tempfile

# Valid Linux domain IDs are 0..232; the low ones are what other ROS users pick by hand.
_CANDIDATES = range(101, 200)
_held: list = []  # open lock files, kept alive for the process lifetime


def claim_domain_id() -> int:
    """A ROS_DOMAIN_ID no other live process of this project holds."""
    if _held:
        return int(_held[0].name.rsplit("-", 1)[1].split(".")[0])
    lock_dir = os.path.join(tempfile.gettempdir(), "ros_vilasr_domains")
    os.makedirs(lock_dir, exist_ok=True)
    start = os.getpid() % len(_CANDIDATES)
    for i in range(len(_CANDIDATES)):
        domain = _CANDIDATES[(start + i) % len(_CANDIDATES)]
        f = open(os.path.join(lock_dir, f"domain-{domain}.lock"), "w")  # noqa: SIM115
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _held.append(f)
        return domain
    raise RuntimeError("no free ROS_DOMAIN_ID: too many concurrent ros_vilasr runs")


def isolate(environ: dict | None = None) -> dict:
    """Set loopback-only discovery and a claimed domain in ``environ`` (default os.environ).

    An explicit ROS_DOMAIN_ID already set by the caller is kept (CI scripts choose their own)."""
    env = os.environ if environ is None else environ
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if not env.get("ROS_DOMAIN_ID"):
        env["ROS_DOMAIN_ID"] = str(claim_domain_id())
    return env
