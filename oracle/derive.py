"""Step coefficients for models nobody measured: architecture + GPU datasheet + a few constants.

For each step feature (see `oracle.features`) the model's FLOPs and bytes of memory traffic per
feature unit follow from its architecture. Time is an additive roofline and energy adds dynamic
energy per FLOP and per byte to static power over the step time:

    time_i   = [i = const]·t_step + [i ∈ seqs]·t_seq + flops_i / (peak·η_c) + bytes_i / (BW·η_m)
    energy_i = P_static·time_i + e_flop·flops_i + e_byte·bytes_i

Both are linear in the constants, which are calibrated on real measurements (`oracle.hwcal`).
Sliding-window layers whose window is shorter than `LONG_WINDOW` are linearised: they read a fixed
window per decoded token (charged per sequence) and about half a window per prefilled token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from oracle import features as F
from oracle.arch import GpuSpec, ModelSpec
from oracle.model import CalibratedRange, MemorySpec, Oracle

LONG_WINDOW = 4096  # windows at least this long act as full attention over the calibrated 64–4096 range


@dataclass(frozen=True)
class HardwareConstants:
    """Efficiency and energy constants of one GPU family running one serving engine.

    inv_eff_compute, inv_eff_memory: 1 / achieved fraction of peak FLOP/s and of memory bandwidth.
    step_overhead_s: per-step launch and scheduling time; seq_overhead_s: per-sequence per-step time.
    static_power_w: power drawn whenever a step runs (idle included); energy_per_flop_j and
    energy_per_byte_j: dynamic energy of arithmetic and of DRAM traffic.
    """

    inv_eff_compute: float
    inv_eff_memory: float
    step_overhead_s: float
    seq_overhead_s: float
    static_power_w: float
    energy_per_flop_j: float
    energy_per_byte_j: float
    source: str = ""

    def as_dict(self) -> dict[str, float | str]:
        """Plain dict (for provenance records)."""
        return asdict(self)


@dataclass(frozen=True)
class FeatureWork:
    """FLOPs and bytes per unit of each step feature (arrays of shape (6,)), and overhead masks."""

    flops: np.ndarray
    bytes: np.ndarray
    step_mask: np.ndarray
    seq_mask: np.ndarray


def feature_work(m: ModelSpec) -> FeatureWork:
    """FLOPs and bytes of memory traffic per unit of each step feature for model `m`."""
    local = m.local_layers if (m.sliding_window or 0) < LONG_WINDOW else 0
    glob = m.num_layers - local
    window = float(m.sliding_window or 0)
    b = m.bytes_per_param
    head = m.head_flops_per_seq
    body_flops = 2.0 * m.weight_params - head  # linear layers of every token, LM head excluded
    kv_write = m.kv_bytes_per_token
    flops = np.zeros(F.N_FEATURES)
    byts = np.zeros(F.N_FEATURES)
    byts[F.CONST] = m.weight_params * b
    flops[F.DECODE_SEQS] = body_flops + head + m.attn_flops_per_pair(local) * window
    byts[F.DECODE_SEQS] = kv_write + m.kv_bytes_per_ctx_token(local) * window
    flops[F.DECODE_CTX] = m.attn_flops_per_pair(glob)
    byts[F.DECODE_CTX] = m.kv_bytes_per_ctx_token(glob)
    flops[F.PREFILL_SEQS] = head
    flops[F.PREFILL_TOKENS] = body_flops + m.attn_flops_per_pair(local) * window / 2.0
    byts[F.PREFILL_TOKENS] = kv_write
    flops[F.PREFILL_ATTN] = m.attn_flops_per_pair(glob)
    step = np.zeros(F.N_FEATURES)
    step[F.CONST] = 1.0
    seq = np.zeros(F.N_FEATURES)
    seq[[F.DECODE_SEQS, F.PREFILL_SEQS]] = 1.0
    return FeatureWork(flops, byts, step, seq)


def time_basis(work: FeatureWork, gpu: GpuSpec) -> np.ndarray:
    """Per-feature time (s) of each time constant at value 1: columns inv_c, inv_m, t_step, t_seq."""
    return np.stack(
        [work.flops / gpu.peak_flops, work.bytes / gpu.memory_bandwidth, work.step_mask, work.seq_mask],
        axis=-1,
    )


def time_coef(work: FeatureWork, gpu: GpuSpec, k: HardwareConstants) -> np.ndarray:
    """Step time coefficients (s per feature unit)."""
    return time_basis(work, gpu) @ np.array([k.inv_eff_compute, k.inv_eff_memory, k.step_overhead_s, k.seq_overhead_s])


def energy_coef(work: FeatureWork, gpu: GpuSpec, k: HardwareConstants) -> np.ndarray:
    """Step energy coefficients (J per feature unit)."""
    t = time_coef(work, gpu, k)
    return k.static_power_w * t + k.energy_per_flop_j * work.flops + k.energy_per_byte_j * work.bytes


def derive_oracle(
    model: ModelSpec,
    gpu: GpuSpec,
    k: HardwareConstants,
    calibrated: CalibratedRange | None = None,
) -> Oracle:
    """An oracle for `model` on `gpu` from its architecture and calibrated hardware constants."""
    work = feature_work(model)
    return Oracle(
        name=f"{model.name}_{gpu.name}",
        model=model.hf_id,
        gpu=gpu.full_name,
        backend="derived (vLLM-calibrated constants)",
        energy_coef_j=energy_coef(work, gpu, k),
        time_coef_s=time_coef(work, gpu, k),
        idle_power_w=gpu.idle_power_w,
        power_limit_w=gpu.power_limit_w,
        calibrated=calibrated or CalibratedRange(n_in=(64, 4096), n_out=(64, 4096), batch=(1, 512)),
        memory=MemorySpec(
            weight_bytes=model.weight_bytes,
            kv_bytes_per_token=model.kv_bytes_per_token,
            gpu_memory_bytes=gpu.memory_bytes,
            kv_layers=model.num_layers,
            window_layers=model.local_layers if model.sliding_window else 0,
            window_tokens=model.sliding_window or 0,
        ),
        settings={"dtype_bytes": model.bytes_per_param},
        provenance={
            "method": "derived from architecture and GPU datasheet (oracle.derive)",
            "model_source": model.source,
            "gpu_source": gpu.source,
            "constants": k.as_dict(),
        },
    )
