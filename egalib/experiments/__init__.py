"""What egalib does with its training loop, kept apart from it: the paper's tables (reproduce,
paper, cluster), the regime study, the transfer protocol, teacher pretraining, the demo, and
their commands."""

import contextlib
import platform
from pathlib import Path

import torch


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (for teacher cards and benchmark results)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
