"""The machine a benchmark ran on, recorded next to every result."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            fields = dict(line.rstrip().split("=", 1) for line in f if "=" in line)
        return f"{fields.get('PRETTY_NAME', '').strip(chr(34))} ({platform.release()})"
    except OSError:
        return platform.platform()


def describe() -> dict:
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": _cpu_model(), "cores": len(os.sched_getaffinity(0)), "ram_gib": round(mem_gib, 1),
        "os": _os_name(), "python": platform.python_version(),
        "packages": {d: _version(d) for d in ("torch", "transformers", "pillow", "ros-rclpy",
                                               "ros-rmw-fastrtps-cpp", "ros-fastdds")},
        "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)"),
    }


def markdown(info: dict) -> str:
    pk = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    return (f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, {info['os']}, "
            f"Python {info['python']}; {pk}.")


def write_results(out: Path, stem: str, result: dict, report: str) -> None:
    """``out/stem.json`` (the numbers) and ``out/stem.md`` (the report), and the report printed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(report)
    print(report)
