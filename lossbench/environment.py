"""Where a cell trained: the versions, the hardware and the git commit recorded in every result file."""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

from lossbench import __version__


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and hardware, recorded in every result file."""
    import torchvision

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "lossbench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": device.type,
        "device_name": name,
        "threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "git_commit": project_commit(),
    }


@functools.cache  # the processor does not change while a process runs
def cpu_name() -> str:
    """The processor's model name where the OS tells it (Linux /proc/cpuinfo), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache  # a git subprocess per cell would cost tens of milliseconds each
def project_commit() -> str | None:
    """The git commit of the lossbench checkout in use, when it runs from one: the commit when this process first
    asked, which is the code it imported."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
