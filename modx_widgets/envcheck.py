"""Is this machine ready for this task?  Answered as data, before Start, without heavy imports.

The widget shows the items next to the Start button and refuses to start on an error item;
the CLI prints them.  Package versions come from `importlib.metadata`, GPUs from torch only
when torch is already imported, otherwise from `nvidia-smi`, so calling this on the kernel's
main thread never costs the seconds that importing torch/transformers takes.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from .config.build import BuildError, parse_device, plan_precision

__all__ = ["CheckItem", "EnvReport", "GpuInfo", "check_environment", "probe_gpus", "format_report"]

LEVELS = ("info", "warning", "error")
MIN_PYTHON = (3, 11)
# package -> (required?, minimum major.minor this engine is written against)
PACKAGES: dict[str, tuple[bool, tuple[int, ...]]] = {
    "torch": (True, (2, 1)),
    "transformers": (True, (5, 0)),
    "peft": (True, (0, 13)),
    "datasets": (True, (3, 0)),
    "accelerate": (True, (1, 0)),
    "bitsandbytes": (False, (0, 45)),
}
EIGHT_BIT_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit")
GIB = 1024**3
LOW_DISK_BYTES = 2 * GIB


@dataclass(frozen=True)
class CheckItem:
    name: str
    ok: bool
    level: str  # info / warning / error
    detail: str


@dataclass(frozen=True)
class EnvReport:
    items: list[CheckItem]
    ok: bool

    @property
    def errors(self) -> list[CheckItem]:
        return [i for i in self.items if i.level == "error"]

    @property
    def warnings(self) -> list[CheckItem]:
        return [i for i in self.items if i.level == "warning"]


@dataclass(frozen=True)
class GpuInfo:
    """What we could learn about CUDA without importing torch when it is not loaded yet."""

    available: bool
    names: tuple[str, ...] = ()
    total_bytes: tuple[int | None, ...] = ()
    free_bytes: tuple[int | None, ...] = ()
    source: str = ""  # torch / nvidia-smi / torch-build / none
    reason: str = ""  # why not available
    extra: dict[str, Any] = field(default_factory=dict)


def _item(name: str, level: str, detail: str) -> CheckItem:
    return CheckItem(name=name, ok=level != "error", level=level, detail=detail)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split(".")[:3]:
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def _installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _torch_loaded() -> Any:
    """The torch module if it is fully imported already (never triggers or waits on an import)."""
    mod = sys.modules.get("torch")
    spec = getattr(mod, "__spec__", None)
    if mod is None or getattr(spec, "_initializing", False) or not hasattr(mod, "cuda"):
        return None
    return mod


def _nvidia_smi() -> GpuInfo | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return GpuInfo(False, source="nvidia-smi", reason=(out.stderr or out.stdout).strip()[:200])
    names, total, free = [], [], []
    for line in out.stdout.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 3:
            continue
        names.append(cells[0])
        total.append(int(float(cells[1])) * 1024**2 if cells[1].replace(".", "").isdigit() else None)
        free.append(int(float(cells[2])) * 1024**2 if cells[2].replace(".", "").isdigit() else None)
    if not names:
        return GpuInfo(False, source="nvidia-smi", reason="nvidia-smi lists no GPU")
    return GpuInfo(True, tuple(names), tuple(total), tuple(free), source="nvidia-smi")


def probe_gpus() -> GpuInfo:
    """CUDA availability, names and memory; cheap (see module docstring for the order)."""
    torch = _torch_loaded()
    if torch is not None:
        if not torch.cuda.is_available():
            why = "torch is a CPU-only build" if not torch.version.cuda else "torch sees no CUDA device"
            return GpuInfo(False, source="torch", reason=why)
        props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
        smi = _nvidia_smi()
        free = smi.free_bytes if smi and smi.available and len(smi.free_bytes) == len(props) else (None,) * len(props)
        return GpuInfo(True, tuple(p.name for p in props), tuple(int(p.total_memory) for p in props), free, "torch")
    version = _installed("torch")
    if version and "+cpu" in version:
        return GpuInfo(False, source="torch-build", reason=f"torch {version} is a CPU-only build")
    smi = _nvidia_smi()
    if smi is not None:
        return smi
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        return GpuInfo(False, source="none", reason="no NVIDIA driver or GPU found")
    # A device node but no nvidia-smi: only torch can tell.  Rare; pay for the import.
    try:
        import torch as _torch  # noqa: F401  (deliberate, see comment)
    except ImportError:
        return GpuInfo(False, source="none", reason="torch is not installed")
    return probe_gpus()


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GIB:.1f} GiB"


def _free_disk(path: str | os.PathLike[str]) -> tuple[Path, int] | None:
    """Free bytes on the file system that will hold `path` (its nearest existing ancestor)."""
    p = Path(path).expanduser().absolute()
    while not p.exists():
        if p.parent == p:
            return None
        p = p.parent
    try:
        return p, shutil.disk_usage(p).free
    except OSError:
        return None


def _weights_bytes(model_path: Any) -> int:
    if not model_path:
        return 0
    p = Path(str(model_path))
    if not p.is_dir():
        return 0
    return sum(f.stat().st_size for f in p.glob("*.safetensors") if f.is_file())


def _package_items(values: Mapping[str, Any]) -> list[CheckItem]:
    items = []
    eight_bit = values.get("optim") in EIGHT_BIT_OPTIMIZERS
    for dist, (required, minimum) in PACKAGES.items():
        version = _installed(dist)
        need = required or (dist == "bitsandbytes" and eight_bit)
        wanted = ".".join(map(str, minimum))
        if version is None:
            if need:
                why = f"needed by optimizer {values.get('optim')}" if not required else "needed for training"
                items.append(_item(dist, "error", f"not installed ({why}): pip install '{dist}>={wanted}'"))
            else:
                items.append(_item(dist, "info", "not installed (only needed for the 8-bit optimizers)"))
        elif _version_tuple(version) < minimum:
            level = "error" if need else "warning"
            items.append(_item(dist, level, f"{version} is older than {wanted}: pip install -U '{dist}>={wanted}'"))
        else:
            items.append(_item(dist, "info", version))
    return items


def _device_items(device: str, gpus: GpuInfo) -> tuple[list[CheckItem], bool]:
    """Items about the chosen device, and whether the run will be on a GPU."""
    try:
        kind, index = parse_device(device)
    except BuildError as exc:
        return [_item("device", "error", str(exc))], False
    if kind == "cpu":
        return [_item("device", "info", "training on the CPU (chosen)")], False
    if kind == "mps":
        if platform.system() == "Darwin" and platform.machine() == "arm64":
            return [_item("device", "info", "training on the Apple-silicon GPU (mps); fp16/tf32 do not apply")], False
        return [_item("device", "error", "mps needs an Apple-silicon Mac: choose cpu or auto")], False
    if not gpus.available:
        if kind == "auto":
            return [_item("device", "warning", f"no CUDA GPU ({gpus.reason}); training runs on the CPU")], False
        return [_item("device", "error", f"{device} needs a CUDA GPU, but {gpus.reason}: choose cpu or auto")], False
    listed = list(zip(gpus.names, gpus.total_bytes, gpus.free_bytes))
    if kind == "cuda":
        if index is not None and index >= len(listed):
            return [_item("device", "error", f"cuda:{index} does not exist: {len(listed)} GPU(s) found")], False
        listed = [listed[index or 0]]
        start = index or 0
    else:
        start = 0
    items = [_item("device", "info", f"{device}: {len(listed)} GPU(s) used")]
    for offset, (name, total, free) in enumerate(listed):
        mem = f"{_gib(total)} total" + (f", {_gib(free)} free" if free is not None else "")
        items.append(_item(f"cuda:{start + offset}", "info", f"{name} ({mem})"))
    return items, True


def check_environment(values: Mapping[str, Any], training_type: str = "sft", device: str = "auto") -> EnvReport:
    """Python, packages, GPU, disk and what they mean for this task; errors block Start."""
    items = [
        _item(
            "python",
            "info" if sys.version_info[:2] >= MIN_PYTHON else "error",
            f"{platform.python_version()}"
            + ("" if sys.version_info[:2] >= MIN_PYTHON else f" (needs {'.'.join(map(str, MIN_PYTHON))}+)"),
        )
    ]
    items += _package_items(values)
    gpus = probe_gpus()
    device_items, on_gpu = _device_items(device, gpus)
    items += device_items

    try:
        precision = plan_precision(values, on_gpu=on_gpu)
        items += [_item("precision", "warning", note) for note in precision.notes]
        if precision.bf16 and not on_gpu:
            items.append(_item("precision", "info", "bf16 autocast on the CPU"))
    except BuildError as exc:
        items.append(_item("precision", "error", str(exc)))

    if values.get("optim") in EIGHT_BIT_OPTIMIZERS and not on_gpu and _installed("bitsandbytes"):
        items.append(_item("optimizer", "info", f"{values['optim']} runs on the CPU through bitsandbytes' CPU backend"))
    if values.get("dataloader_pin_memory") and not on_gpu:
        items.append(_item("dataloader", "info", "pinned memory only helps GPU training; ignored on the CPU"))
    workers = int(values.get("dataloader_num_workers") or 0)
    cpus = os.cpu_count() or 1
    if workers > cpus:
        items.append(_item("dataloader", "warning", f"{workers} loader workers on {cpus} CPU cores; try {cpus} or fewer"))

    output_dir = values.get("output_dir")
    if output_dir:
        disk = _free_disk(output_dir)
        if disk is None:
            items.append(_item("disk", "warning", f"cannot tell the free space for {output_dir}"))
        else:
            where, free = disk
            weights = _weights_bytes(values.get("model_path"))
            # a full-weight checkpoint holds the weights plus ~2x for Adam's moments
            need = weights * 3 if training_type == "pretrain" or not values.get("use_lora") else weights // 10
            level = "warning" if free < max(LOW_DISK_BYTES, need) else "info"
            extra = f" (one checkpoint may take ~{_gib(need)})" if need else ""
            items.append(_item("disk", level, f"{_gib(free)} free at {where}{extra}"))
    ok = not any(i.level == "error" for i in items)
    return EnvReport(items=items, ok=ok)


def format_report(report: EnvReport) -> str:
    """One line per item, for the CLI and logs."""
    mark = {"info": " ok ", "warning": "warn", "error": "FAIL"}
    return "\n".join(f"[{mark[i.level]}] {i.name}: {i.detail}" for i in report.items)
