"""What a device offers: its memory (the GPU's, or the machine's RAM), for the checks that refuse
a run or a dataset too large for it before anything is allocated."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def device_memory(device: torch.device) -> int | None:
    """The memory of `device` in bytes: the GPU's, or the machine's RAM (None if unknown)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # Windows has no sysconf
        return None


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), for the record of a run."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
