"""Step coefficients for models nobody measured: architecture + GPU datasheet + a few constants.

For each step feature (see `oracle.features`) the model's FLOPs and bytes of memory traffic per
feature unit follow from its architecture. Time adds compute and memory time (but a step that
prefills overlaps its weights' read with its prompt's GEMMs: `overlap`) and energy adds dynamic
energy per FLOP and per byte to static power over the step time:

    time_i   = [i = const]·(t_step + L·t_layer) + [i ∈ seqs]·t_seq + flops_i / (g·peak·η_i)
               + bytes_i / (g·BW·η_m) + comm_i
    energy_i = g·P_static·time_i + e_flop·flops_i + e_byte·bytes_i

for a replica of g GPUs (`Layout`: tensor parallel, experts optionally expert parallel), each doing
1/g of the FLOPs and bytes, in step, with comm_i the all-reduces of tensor parallelism at the GPU's
measured collective figures, L the model's layers, and η_i the achieved fraction of peak FLOP/s: η_p
for the prompt tokens' GEMMs, η_a for their causal attention, η_c for the rest (each fitted:
`oracle.hwcal`; the prompt's fitted on measured prefill kernels, `oracle.kernels`). A step that
prefills n tokens then costs min(weights' read, n · a token's GEMMs) less (`overlap`). A mixture of
experts computes on its activated parameters and reads, per step, the routed experts its tokens
touch (`oracle.model.ExpertReads`, outside the six linear coefficients). Weights, KV cache and FLOPs
take the checkpoint's precision (fp8 GEMMs at the fp8 peak; mxfp4 experts as bytes).

Both are linear in the constants (given the overlap's knees), which are calibrated on real
measurements (`oracle.hwcal`). Sliding-window layers whose window is shorter than `LONG_WINDOW` are
linearised: they read a fixed window per decoded token (charged per sequence) and about half a
window per prefilled token. A hybrid Mamba-Transformer (Nemotron-H) keeps a KV cache in its attention
layers only, and every sequence a step decodes or prefills reads and writes its Mamba layers'
recurrent state (charged per sequence, beside the KV a sequence holds: `MemorySpec.seq_state_bytes`);
its blocks each end in one all-reduce under tensor parallelism.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from oracle import features as F
from oracle.arch import GpuSpec, ModelSpec
from oracle.model import CalibratedRange, ExpertReads, MemorySpec, Oracle, Overlap

LONG_WINDOW = 4096  # windows at least this long act as full attention over the calibrated 64–4096 range
ALLREDUCES_PER_LAYER = 2  # tensor parallelism sums partial outputs after attention and after the FFN
ACTIVATION_BYTES = 2.0  # bytes per element of the hidden states all-reduced (bf16)
MAMBA_COLUMN = 8  # `time_basis`'s column of a hybrid's prefill per Mamba layer


class LayoutError(ValueError):
    """A replica layout that cannot serve the model: the message says why and what would."""


@dataclass(frozen=True)
class Layout:
    """How one replica spreads a model over its GPUs (vLLM's meaning).

    gpus: GPUs of the replica; attention and dense layers are tensor parallel over all of them
    (an all-reduce of the tokens' hidden states after attention and after the FFN of every layer).
    expert_parallel: a mixture of experts' routed experts are spread whole over the GPUs
    (`--enable-expert-parallel`) rather than each split over all of them; either way each GPU
    reads its share of the touched experts' bytes (load imbalance between GPUs is not modelled),
    and the replicated tokens make the combine an all-reduce like tensor parallelism's.
    """

    gpus: int = 1
    expert_parallel: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.gpus, int) and self.gpus >= 1):
            raise LayoutError(f"a replica has a whole number ≥ 1 of GPUs, got {self.gpus!r}")

    @property
    def suffix(self) -> str:
        """The oracle name's layout part: '' for one GPU, '_tp4', '_ep8'."""
        if self.gpus == 1:
            return ""
        return f"_{'ep' if self.expert_parallel else 'tp'}{self.gpus}"

    def oracle_name(self, model: ModelSpec, gpu: GpuSpec) -> str:
        """The name of `model`'s oracle on this layout of `gpu`s, e.g. 'llama-3.1-70b_h100_tp4'."""
        return f"{model.name}_{gpu.name}{self.suffix}"

    def check(self, model: ModelSpec, gpu: GpuSpec, memory_fraction: float = 0.9) -> None:
        """LayoutError unless the model can be served this way on these GPUs."""
        g = self.gpus
        if model.num_heads % g:
            raise LayoutError(
                f"{model.name} on {g} GPUs: tensor parallelism must divide its {model.num_heads} attention heads "
                f"(try {', '.join(str(d) for d in (1, 2, 4, 8) if model.num_heads % d == 0)} GPUs)"
            )
        if self.expert_parallel and not model.experts:
            raise LayoutError(f"{model.name} is dense: expert parallelism needs a mixture of experts")
        if self.expert_parallel and model.experts % g:
            raise LayoutError(f"{model.name}: expert parallelism over {g} GPUs must divide its {model.experts} experts")
        per_gpu = model.weight_bytes / g
        room = gpu.memory_bytes * memory_fraction
        if per_gpu >= room:
            need = next((n for n in (2, 4, 8, 16, 32) if model.weight_bytes / n < room), None)
            more = f"at least {need} GPUs" if need else "more GPUs than one node has"
            raise LayoutError(
                f"{model.name} does not fit on {g} {gpu.full_name}: {per_gpu / 1e9:.1f} GB of weights per GPU "
                f"against {room / 1e9:.1f} GB usable ({memory_fraction:g} of {gpu.memory_bytes / 1e9:.1f} GB); "
                f"it needs {more}"
            )

    def kv_replication(self, model: ModelSpec) -> float:
        """How many times the replica stores each token's KV: tensor parallelism splits KV heads,
        but beyond one head per GPU they are replicated, and MLA's latent is on every GPU."""
        if model.kv_elems_per_token_layer is not None:
            return float(self.gpus)
        return max(1.0, self.gpus / model.num_kv_heads)


@dataclass(frozen=True)
class HardwareConstants:
    """Efficiency and energy constants of one GPU family running one serving engine.

    inv_eff_compute, inv_eff_memory: 1 / achieved fraction of peak FLOP/s and of memory bandwidth.
    inv_eff_attention: 1 / achieved fraction of peak FLOP/s of prefill attention (the
    `prefill_attn` FLOPs; None: as inv_eff_compute). inv_eff_prefill: the same of the prompt
    tokens' other FLOPs (`prefill_tokens`: the large GEMMs; None: as inv_eff_compute).
    prefill_overlap: a step that prefills hides the shorter of its weights' read and its prompt
    tokens' compute behind the longer (`oracle.model.Overlap`; False: both are paid, added).
    step_overhead_s: per-step launch and scheduling time; seq_overhead_s: per-sequence per-step time.
    static_power_w: power each GPU draws whenever a step runs (idle included); energy_per_flop_j and
    energy_per_byte_j: dynamic energy of arithmetic (per bf16 FLOP; an fp8 FLOP costs the same
    tensor-core time's worth) and of DRAM traffic. comm_scale: multiplies the all-reduce times
    of the GPU's collective figures (1: as measured); ep_comm_scale: the same for replicas whose
    experts are expert parallel (None: comm_scale). layer_overhead_s: per step and layer (kernel
    launches and gaps that grow with depth). fp8_expert_read_scale: extra time per byte of
    block-quantized fp8 routed experts, in units of its read time at the achieved bandwidth
    (dequantising fused-MoE kernels). comm_power_w: power each GPU draws above idle while it
    all-reduces (None: static power, as while computing). fp8_expert_power_w: power each GPU draws
    above idle while it dequantises fp8 experts, the time `fp8_expert_read_scale` adds (None:
    static power). mamba_prefill_s: per Mamba layer of each sequence a step prefills (a hybrid's
    prefill runs its Mamba mixers' many small kernels outside CUDA graphs; ML.ENERGY's H100 chat
    runs of the Nemotrons show it as a p99 ITL some 40 ms above the median at batch 8).
    mamba_power_w: power each GPU draws above idle while a hybrid's Mamba layers work apart from
    its GEMMs, reading and writing their states and scanning a prefill (`mamba_time_s`; None:
    static power).
    """

    inv_eff_compute: float
    inv_eff_memory: float
    step_overhead_s: float
    seq_overhead_s: float
    static_power_w: float
    energy_per_flop_j: float
    energy_per_byte_j: float
    source: str = ""
    comm_scale: float = 1.0
    ep_comm_scale: float | None = None
    layer_overhead_s: float = 0.0
    fp8_expert_read_scale: float = 0.0
    comm_power_w: float | None = None
    fp8_expert_power_w: float | None = None
    inv_eff_attention: float | None = None
    inv_eff_prefill: float | None = None
    prefill_overlap: bool = False
    mamba_prefill_s: float = 0.0
    mamba_power_w: float | None = None

    @property
    def attention(self) -> float:
        """1 / achieved fraction of peak FLOP/s of prefill attention."""
        return self.inv_eff_compute if self.inv_eff_attention is None else self.inv_eff_attention

    @property
    def prefill(self) -> float:
        """1 / achieved fraction of peak FLOP/s of the prompt tokens' GEMMs."""
        return self.inv_eff_compute if self.inv_eff_prefill is None else self.inv_eff_prefill

    def as_dict(self) -> dict[str, float | str]:
        """Plain dict (for provenance records)."""
        return asdict(self)


@dataclass(frozen=True)
class FeatureWork:
    """Work of one replica per unit of each step feature (arrays of shape (6,)): FLOPs (in bf16
    tensor-core time's worth: fp8 FLOPs count at the ratio of the peaks), bytes of memory traffic,
    overhead masks, and the all-reduce time at the GPU's collective figures (s). `gpus` share the
    FLOPs and bytes; `expert_bytes` and `untouched`: a mixture of experts' routed-expert reads
    (`oracle.model.ExpertReads`)."""

    flops: np.ndarray
    bytes: np.ndarray
    step_mask: np.ndarray
    seq_mask: np.ndarray
    comm_s: np.ndarray = field(default_factory=lambda: np.zeros(F.N_FEATURES))
    gpus: int = 1
    expert_bytes: float = 0.0
    untouched: float = 1.0
    layers: int = 0  # the model's layers (per-layer step overhead)
    expert_parallel: bool = False
    fp8_experts: bool = False  # routed experts block-quantized to fp8, run on fp8 GEMMs
    mamba_layers: int = 0  # a hybrid's Mamba layers (their prefill time per sequence)
    state_bytes: np.ndarray = field(default_factory=lambda: np.zeros(F.N_FEATURES))  # of `bytes`: Mamba states'


def feature_work(m: ModelSpec, layout: Layout | None = None, gpu: GpuSpec | None = None) -> FeatureWork:
    """FLOPs, bytes and all-reduce time per unit of each step feature for model `m` on a replica
    (`layout`, default one GPU; `gpu` gives the fp8 peak and the collective figures)."""
    layout = layout or Layout()
    g = layout.gpus
    local = m.local_layers if (m.sliding_window or 0) < LONG_WINDOW else 0
    glob = m.attn_layers - local
    window = float(m.sliding_window or 0)
    head = m.head_flops_per_seq
    body_flops = 2.0 * m.weight_params - head  # linear layers of every token, LM head excluded
    fp8 = m.fp8_compute and gpu is not None and gpu.fp8_peak_flops
    if fp8:  # the layers' GEMMs on fp8 tensor cores: their FLOPs in bf16 time's worth
        assert gpu is not None and gpu.fp8_peak_flops is not None
        body_flops *= gpu.peak_flops / gpu.fp8_peak_flops
    rep = layout.kv_replication(m)
    kv_write = m.kv_bytes_per_token * rep
    kv_read = m.kv_bytes_per_ctx_token
    flops = np.zeros(F.N_FEATURES)
    byts = np.zeros(F.N_FEATURES)
    byts[F.CONST] = m.step_weight_bytes
    flops[F.DECODE_SEQS] = body_flops + head + m.attn_flops_per_pair(local) * window
    byts[F.DECODE_SEQS] = kv_write + kv_read(local) * window * rep
    flops[F.DECODE_CTX] = m.attn_flops_per_pair(glob)
    byts[F.DECODE_CTX] = kv_read(glob) * rep
    flops[F.PREFILL_SEQS] = head
    flops[F.PREFILL_TOKENS] = body_flops + m.attn_flops_per_pair(local) * window / 2.0
    byts[F.PREFILL_TOKENS] = kv_write
    flops[F.PREFILL_ATTN] = m.attn_flops_per_pair(glob)
    # A hybrid's Mamba layers: every step a sequence takes part in reads and writes its recurrent
    # state once (its scan's arithmetic, about 1 % of the projections', is left out).
    state = np.zeros(F.N_FEATURES)
    state[[F.DECODE_SEQS, F.PREFILL_SEQS]] = 2.0 * m.mamba_state_bytes
    byts += state
    step = np.zeros(F.N_FEATURES)
    step[F.CONST] = 1.0
    seq = np.zeros(F.N_FEATURES)
    seq[[F.DECODE_SEQS, F.PREFILL_SEQS]] = 1.0
    comm = np.zeros(F.N_FEATURES)
    if g > 1:
        if gpu is None or gpu.allreduce_bandwidth is None or gpu.allreduce_latency_s is None:
            name = "no GPU" if gpu is None else gpu.full_name
            raise LayoutError(f"a replica of {g} GPUs needs the GPU's all-reduce figures; {name} has none")
        calls = m.num_layers if m.mamba_layers else ALLREDUCES_PER_LAYER * m.num_layers  # a hybrid: one per block
        comm[F.CONST] = calls * gpu.allreduce_latency_s
        per_token = calls * m.hidden_size * ACTIVATION_BYTES * 2.0 * (g - 1) / g / gpu.allreduce_bandwidth
        comm[F.DECODE_SEQS] = comm[F.PREFILL_TOKENS] = per_token
    untouched = 1.0 - m.experts_per_token / m.experts if m.experts else 1.0
    fp8_experts = bool(m.experts) and m.fp8_compute and m.fp8_block_scales
    return FeatureWork(
        flops,
        byts,
        step,
        seq,
        comm,
        g,
        m.expert_bytes,
        untouched,
        m.num_layers,
        layout.expert_parallel,
        fp8_experts,
        m.mamba_layers,
        state,
    )


def time_basis(work: FeatureWork, gpu: GpuSpec) -> np.ndarray:
    """Per-feature time (s) of each time constant at value 1: columns inv_c, inv_m, t_step, t_seq,
    the all-reduces' scale, t_layer, inv_attention, inv_prefill (each GPU does 1/gpus of the
    work; all run in step; no prefill overlap: `overlap` gives it)."""
    g = work.gpus
    attention, prompt, mamba = np.zeros(F.N_FEATURES), np.zeros(F.N_FEATURES), np.zeros(F.N_FEATURES)
    attention[F.PREFILL_ATTN] = work.flops[F.PREFILL_ATTN]
    prompt[F.PREFILL_TOKENS] = work.flops[F.PREFILL_TOKENS]
    mamba[F.PREFILL_SEQS] = work.mamba_layers
    return np.stack(
        [
            (work.flops - attention - prompt) / (g * gpu.peak_flops),
            work.bytes / (g * gpu.memory_bandwidth),
            work.step_mask,
            work.seq_mask,
            work.comm_s,
            work.step_mask * work.layers,
            attention / (g * gpu.peak_flops),
            prompt / (g * gpu.peak_flops),
            mamba,
        ],
        axis=-1,
    )


def roofline_parts(work: FeatureWork, gpu: GpuSpec) -> tuple[float, float, float]:
    """(s) What a prefill step overlaps (`overlap`), on the replica at the datasheet's bandwidth
    and peak: one step's read of its dense weights, one prompt token's GEMMs, and the read of every
    routed expert (0 for a dense model)."""
    g = work.gpus
    return (
        float(work.bytes[F.CONST]) / (g * gpu.memory_bandwidth),
        float(work.flops[F.PREFILL_TOKENS]) / (g * gpu.peak_flops),
        work.expert_bytes / (g * gpu.memory_bandwidth),
    )


def overlap(work: FeatureWork, gpu: GpuSpec, k: HardwareConstants) -> Overlap | None:
    """What a prefill step hides of its weights' read (None unless `k.prefill_overlap`): the read
    (its dense weights and every routed expert: a prompt of more than a few tokens touches them
    all) and a prompt token's compute at the fitted fractions, and every GPU's static power over
    each."""
    if not k.prefill_overlap:
        return None
    weights, token, _ = roofline_parts(work, gpu)
    dense_s = weights * k.inv_eff_memory
    power = work.gpus * k.static_power_w
    weights_s, weights_j = dense_s, power * dense_s
    if work.expert_bytes:
        weights_s += expert_read_time_s(work, gpu, k)
        weights_j += _expert_read_power_j(work, gpu, k)
    token_s = token * k.prefill
    return Overlap(weights_s, token_s, weights_j, power * token_s)


def comm_scale(work: FeatureWork, k: HardwareConstants) -> float:
    """The all-reduce times' multiplier for this replica (expert parallel or not)."""
    return k.ep_comm_scale if work.expert_parallel and k.ep_comm_scale is not None else k.comm_scale


def time_constants(work: FeatureWork, k: HardwareConstants) -> np.ndarray:
    """The constants `time_basis`'s columns multiply, in its order."""
    return np.array(
        [
            k.inv_eff_compute,
            k.inv_eff_memory,
            k.step_overhead_s,
            k.seq_overhead_s,
            comm_scale(work, k),
            k.layer_overhead_s,
            k.attention,
            k.prefill,
            k.mamba_prefill_s,
        ]
    )


def time_coef(work: FeatureWork, gpu: GpuSpec, k: HardwareConstants) -> np.ndarray:
    """Step time coefficients (s per feature unit)."""
    return time_basis(work, gpu) @ time_constants(work, k)


def mamba_time_s(work: FeatureWork, gpu: GpuSpec, k: HardwareConstants) -> np.ndarray:
    """Per feature unit (s): a hybrid's Mamba layers at their own work, reading and writing states
    at the achieved bandwidth and a prefilling sequence's scan (`mamba_prefill_s` per layer)."""
    scan = time_basis(work, gpu)[:, MAMBA_COLUMN] * k.mamba_prefill_s
    return work.state_bytes * k.inv_eff_memory / (work.gpus * gpu.memory_bandwidth) + scan


def _powered(
    work: FeatureWork,
    gpu: GpuSpec,
    k: HardwareConstants,
    t: np.ndarray,
    apart: tuple[tuple[np.ndarray, float | None], ...],
) -> np.ndarray:
    """Every GPU's energy (J) at static power over time `t`, but for the parts of it in `apart`:
    (time, the power above idle drawn over it; None: static power)."""
    out = k.static_power_w * t
    for part, above_idle in apart:
        if above_idle is not None:
            out = out + (gpu.idle_power_w + above_idle - k.static_power_w) * part
    return work.gpus * out


def energy_coef(work: FeatureWork, gpu: GpuSpec, k: HardwareConstants) -> np.ndarray:
    """Step energy coefficients (J per feature unit): every GPU's static power over the step, but
    while it all-reduces or its Mamba layers work where the constants give those a power of their own."""
    t = time_coef(work, gpu, k)
    comm = work.comm_s * comm_scale(work, k)
    static = _powered(work, gpu, k, t, ((comm, k.comm_power_w), (mamba_time_s(work, gpu, k), k.mamba_power_w)))
    return static + k.energy_per_flop_j * work.flops + k.energy_per_byte_j * work.bytes


def expert_read_time_s(work: FeatureWork, gpu: GpuSpec, k: HardwareConstants) -> float:
    """Time (s) of reading every routed expert once on the replica (fp8 experts dequantised)."""
    return sum(_expert_read_parts(work, gpu, k))


def _expert_read_parts(work: FeatureWork, gpu: GpuSpec, k: HardwareConstants) -> tuple[float, float]:
    """(s) Reading every routed expert once on the replica: the read at the achieved bandwidth,
    and the time fp8 experts' dequantisation adds to it."""
    read = work.expert_bytes / (work.gpus * gpu.memory_bandwidth)
    return read * k.inv_eff_memory, (read * k.fp8_expert_read_scale if work.fp8_experts else 0.0)


def _expert_read_power_j(work: FeatureWork, gpu: GpuSpec, k: HardwareConstants) -> float:
    """Every GPU's power (J) over one read of every routed expert: static while reading, and the
    dequantisation's own power over the time it adds (`HardwareConstants.fp8_expert_power_w`)."""
    read, dequant = _expert_read_parts(work, gpu, k)
    power = k.static_power_w if k.fp8_expert_power_w is None else gpu.idle_power_w + k.fp8_expert_power_w
    return work.gpus * (k.static_power_w * read + power * dequant)


def expert_reads(work: FeatureWork, gpu: GpuSpec, k: HardwareConstants) -> ExpertReads | None:
    """Time (s) and energy (J) of reading every routed expert once on the replica (None: dense)."""
    if not work.expert_bytes:
        return None
    t = expert_read_time_s(work, gpu, k)
    e = _expert_read_power_j(work, gpu, k) + k.energy_per_byte_j * work.expert_bytes
    return ExpertReads(time_s=float(t), energy_j=float(e), untouched=float(work.untouched))


def derive_oracle(
    model: ModelSpec,
    gpu: GpuSpec,
    k: HardwareConstants,
    calibrated: CalibratedRange | None = None,
    layout: Layout | None = None,
) -> Oracle:
    """An oracle for `model` on a replica of `layout` (default one GPU) of `gpu` from its
    architecture and calibrated hardware constants; LayoutError for a layout that cannot serve it."""
    layout = layout or Layout()
    layout.check(model, gpu)
    work = feature_work(model, layout, gpu)
    g = layout.gpus
    rep = layout.kv_replication(model)
    return Oracle(
        name=layout.oracle_name(model, gpu),
        model=model.hf_id,
        gpu=gpu.full_name,
        backend="derived (vLLM-calibrated constants)",
        energy_coef_j=energy_coef(work, gpu, k),
        time_coef_s=time_coef(work, gpu, k),
        idle_power_w=gpu.idle_power_w * g,
        power_limit_w=gpu.power_limit_w * g,
        calibrated=calibrated or CalibratedRange(n_in=(64, 4096), n_out=(64, 4096), batch=(1, 512)),
        memory=MemorySpec(
            weight_bytes=model.weight_bytes,
            kv_bytes_per_token=model.kv_bytes_per_token * rep,
            gpu_memory_bytes=gpu.memory_bytes * g,
            kv_layers=model.attn_layers,
            window_layers=model.local_layers if model.sliding_window else 0,
            window_tokens=model.sliding_window or 0,
            seq_state_bytes=model.mamba_state_bytes,
            sampler_bytes_per_seq=model.sampler_bytes_per_seq * g,
        ),
        settings={"dtype_bytes": model.bytes_per_param},
        provenance={
            "method": "derived from architecture and GPU datasheet (oracle.derive)",
            "model_source": model.source,
            "gpu_source": gpu.source,
            "constants": k.as_dict(),
            **({} if g == 1 else {"layout": {"gpus": g, "expert_parallel": layout.expert_parallel}}),
        },
        experts=expert_reads(work, gpu, k),
        gpus=g,
        overlap=overlap(work, gpu, k),
    )
