"""The header every benchmark JSON carries: its name, the UTC date and the machine.

A module of its own (torch and the standard library only), so that a script can record its
machine without importing another script's dependencies.
"""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from pathlib import Path

import torch


def machine(device: torch.device) -> str:
    """The GPU's name, or the CPU model with the torch thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


def run_metadata(benchmark: str, device: torch.device) -> dict:
    """``{"benchmark", "date", "machine"}`` for a result file."""
    return {
        "benchmark": benchmark,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(device),
    }
