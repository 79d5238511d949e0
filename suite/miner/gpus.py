"""The node's GPU inventory: detected through NVML, or declared (simulated) on a machine without.

NVML comes from the `nvidia-ml-py` package (module `pynvml`), imported only when detecting: a
missing package, a missing driver library or any NVML error all mean "no NVIDIA GPUs here".
Detected device names are mapped to GPU catalog keys (chutes.gpu) best-effort; a device the
catalog does not know is left out with a warning.
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass
from typing import Any

from chutes.gpu import GPUS

log = logging.getLogger("chutes.miner")

#: What `--simulate` declares when no `--gpus` is given.
DEFAULT_SIMULATED = "a100:1"


class InventoryError(Exception):
    """The inventory cannot be determined or declared as asked; the message says why."""


@dataclass(frozen=True)
class NodeGpu:
    gpu_identifier: str  # a GPU catalog key
    device_index: int


@dataclass(frozen=True)
class DetectedGpu:
    device_index: int
    name: str  # as NVML reports it, e.g. "NVIDIA H100 80GB HBM3"
    memory_bytes: int


@dataclass(frozen=True)
class Inventory:
    gpus: tuple[NodeGpu, ...]
    simulated: bool


# Device-name patterns (lower-cased, "nvidia " and "geforce " removed), most specific first.
# Memory (GB) tells the 40 GB A100s from the 80 GB ones.
_NAME_RULES: tuple[tuple[str, str], ...] = (
    (r"rtx pro 6000", "pro_6000"),
    (r"rtx 6000 ada", "a6000_ada"),
    (r"rtx a6000|^a6000", "a6000"),
    (r"rtx 4000 ada|rtx a4000 ada", "a4000_ada"),
    (r"rtx a4000|^a4000", "a4000"),
    (r"rtx a5000|^a5000", "a5000"),
    (r"rtx 5090", "5090"),
    (r"rtx 4090", "4090"),
    (r"rtx 3090", "3090"),
    (r"^l40s", "l40s"),
    (r"^l40", "l40"),
    (r"^l4\b", "l4"),
    (r"^a40\b", "a40"),
    (r"^a10\b|^a10g\b", "a10"),
    (r"^h100.*nvl", "h100_nvl"),
    (r"^h100.*(sxm|hbm3)", "h100_sxm"),
    (r"^h100", "h100"),
    (r"^h800", "h800"),
    (r"^h200", "h200"),
    (r"^h20\b", "h20"),
    (r"^b300", "b300"),
    (r"^b200", "b200"),
    (r"mi300x", "mi300x"),
)


def catalog_key(name: str, memory_bytes: int) -> str | None:
    """The catalog key of an NVML device name, or None when the catalog has no such GPU."""
    lowered = re.sub(r"^(nvidia\s+)?(geforce\s+)?", "", name.strip().lower())
    if lowered.startswith("a100"):
        large = memory_bytes >= 60 * 1024**3 or "80gb" in lowered
        sxm = "sxm" in lowered
        return ("a100" if large else "a100_40gb") + ("_sxm" if sxm else "")
    for pattern, key in _NAME_RULES:
        if re.search(pattern, lowered):
            return key
    return None


def detect_nvidia() -> list[DetectedGpu]:
    """The NVIDIA GPUs NVML sees; empty without the package, the driver or any GPU."""
    try:
        nvml: Any = importlib.import_module("pynvml")
    except ImportError:
        return []
    try:
        nvml.nvmlInit()
    except nvml.NVMLError:
        return []
    try:
        found = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            if isinstance(name, bytes):
                name = name.decode(errors="replace")
            memory = int(nvml.nvmlDeviceGetMemoryInfo(handle).total)
            found.append(DetectedGpu(device_index=index, name=str(name), memory_bytes=memory))
        return found
    except nvml.NVMLError as error:
        log.warning("NVML failed while listing GPUs (%s): treating this machine as having none", error)
        return []
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass


def parse_declared(text: str) -> tuple[NodeGpu, ...]:
    """`a100:2,h100:1` (count 1 when omitted) as GPUs with consecutive device indexes."""
    gpus: list[NodeGpu] = []
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        key, _, count_text = part.partition(":")
        key = key.strip().lower()
        if key not in GPUS:
            raise InventoryError(f"--gpus: {key!r} is not in the GPU catalog (known: {', '.join(GPUS)})")
        try:
            count = int(count_text) if count_text.strip() else 1
        except ValueError:
            raise InventoryError(f"--gpus: {part!r} is not KEY or KEY:COUNT") from None
        if count < 1:
            raise InventoryError(f"--gpus: {part!r} declares no GPU")
        first = len(gpus)
        gpus.extend(NodeGpu(key, first + offset) for offset in range(count))
    if not gpus:
        raise InventoryError("--gpus declares no GPU (use e.g. a100:1 or a100:2,h100:1)")
    return tuple(gpus)


def resolve_inventory(
    declared: str | None, simulate: bool, detected: list[DetectedGpu] | None = None
) -> Inventory:
    """The node's GPUs: the detected ones on a machine with NVIDIA GPUs (where declaring is
    refused: a real node never pretends), else the declared or `--simulate` default ones,
    marked simulated."""
    found = detect_nvidia() if detected is None else detected
    if found:
        if declared or simulate:
            names = ", ".join(f"{gpu.device_index}: {gpu.name}" for gpu in found)
            raise InventoryError(
                f"NVML found NVIDIA GPUs ({names}): --gpus and --simulate are only for machines "
                "without them; run without them to register the real GPUs"
            )
        gpus = []
        for gpu in found:
            key = catalog_key(gpu.name, gpu.memory_bytes)
            if key is None:
                log.warning("GPU %d (%s) is not in the GPU catalog: left out", gpu.device_index, gpu.name)
                continue
            gpus.append(NodeGpu(key, gpu.device_index))
        if not gpus:
            raise InventoryError("none of this machine's GPUs is in the GPU catalog (chutes.gpu)")
        return Inventory(tuple(gpus), simulated=False)
    if declared:
        gpus_declared = parse_declared(declared)
    elif simulate:
        gpus_declared = parse_declared(DEFAULT_SIMULATED)
    else:
        raise InventoryError(
            "no NVIDIA GPUs found (NVML unavailable or no devices): pass --gpus KEY[:COUNT] "
            "or --simulate to declare a simulated inventory for CPU chutes"
        )
    summary = ", ".join(f"{gpu.gpu_identifier}#{gpu.device_index}" for gpu in gpus_declared)
    log.warning(
        "no NVIDIA GPUs found: declaring a simulated inventory %s (simulated=true on the node)", summary
    )
    return Inventory(gpus_declared, simulated=True)
