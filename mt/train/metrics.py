"""Run records: the JSONL metrics log, the learning-curve PNG, and the hardware peak used
for MFU (model FLOPs utilisation).

``run_dir/metrics.jsonl`` has one JSON object per line with ``"kind"``: ``train`` (every
``log_every`` updates), ``valid`` (every validation) or ``summary`` (end of run).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import torch

from mt.extras import pyplot
from mt.fileio import save_figure


class MetricsLog:
    """Append-only JSONL writer (line-buffered so a killed run keeps what it logged)."""

    def __init__(self, path: str | Path, truncate_after_step: Optional[int] = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after_step is not None and self.path.exists():
            # a resumed run repeats the steps after its checkpoint: drop their old records
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= truncate_after_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        self._f = open(self.path, "a", encoding="utf-8", buffering=1)

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._f.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics file; a torn last line (killed writer) is skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot_learning_curves(metrics_path: str | Path, png_path: str | Path) -> Optional[Path]:
    """Train/valid loss (left axis) and valid BLEU (right axis) against the update step.
    None when there is nothing to draw, or matplotlib (the ``train`` extra) is not installed."""
    plt = pyplot()
    if plt is None:
        return None
    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("kind") == "train"]
    valid = [r for r in records if r.get("kind") == "valid"]
    if not train and not valid:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", color="tab:blue", lw=1)
    if valid:
        ax.plot([r["step"] for r in valid], [r["loss"] for r in valid], "o-", label="valid loss", color="tab:orange")
    ax.set_xlabel("update step")
    ax.set_ylabel("label-smoothed loss per token")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    bleu = [r for r in valid if r.get("bleu") is not None]
    if bleu:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in bleu], [r["bleu"] for r in bleu], "s--", color="tab:green", label="valid BLEU")
        for name in dict.fromkeys(name for r in bleu for name in r.get("parts") or {}):  # an interleaved valid set's corpora
            pts = [(r["step"], r["parts"][name]["bleu"]) for r in bleu if name in (r.get("parts") or {})]
            ax2.plot(*zip(*pts), ":", marker=".", label=f"valid BLEU, {name}")
        ax2.set_ylabel("BLEU")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="upper center", ncol=3, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, png_path)


# --------------------------------------------------------------------------- hardware peak

# Dense (no sparsity) tensor-core peaks in TFLOP/s, from vendor datasheets.
GPU_PEAK_TFLOPS = {
    # name fragment: (bf16, fp32)
    "H200": (989.0, 67.0),
    "H100": (989.0, 67.0),  # SXM; PCIe is lower (756)
    "A100": (312.0, 19.5),
    "L40S": (362.0, 91.6),
    "A10G": (70.0, 35.0),
    "L4": (121.0, 30.3),
    "RTX 4090": (165.0, 82.6),
    "RTX 3090": (71.0, 35.6),
    "V100": (125.0, 15.7),
    "T4": (65.0, 8.1),
}


def measure_matmul_tflops(dtype: torch.dtype = torch.float32, n: int = 1024, seconds: float = 0.3) -> float:
    """Best-case square-matmul throughput on the current CPU thread count (TFLOP/s).

    A measured ceiling for what the training step's matmuls could reach; on a shared
    machine it reads low, so MFU against it reads high.
    """
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b  # warm-up (thread pool, packing buffers)
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    return 2.0 * n**3 / best / 1e12


def hardware_peak_tflops(device: torch.device, bf16: bool, configured: Optional[float]) -> tuple[Optional[float], str]:
    """``(peak TFLOP/s, where it came from)``: config, datasheet table, or CPU matmul probe."""
    if configured:
        return configured, "config"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for fragment, (p_bf16, p_fp32) in GPU_PEAK_TFLOPS.items():
            if fragment in name:
                return (p_bf16 if bf16 else p_fp32), f"datasheet ({name})"
        return None, f"unknown GPU ({name}); set train.peak_tflops"
    if device.type == "cpu":
        return measure_matmul_tflops(torch.bfloat16 if bf16 else torch.float32), "measured (1024² matmul probe)"
    return None, "unknown"
