"""Replicas of several GPUs, mixtures of experts, precisions and hybrid Mamba-Transformers in
derived oracles (`oracle.derive`): step costs worked by hand, the expected-distinct-experts formula
against a Monte Carlo draw, KV capacity against memory arithmetic, one GPU equal to the single-GPU
model, bad layouts refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from oracle import arch, build
from oracle import features as F
from oracle.derive import HardwareConstants, Layout, LayoutError, derive_oracle, expert_reads, feature_work
from oracle.model import Oracle, shipped_oracles
from sim.config import ServerConfig
from sim.serving.run import simulate

# Round constants so that a step's cost can be worked out by hand: datasheet rates achieved in
# full, no overheads, the all-reduces as measured, 100 W static per GPU, no dynamic energy.
PLAIN = HardwareConstants(1.0, 1.0, 0.0, 0.0, 100.0, 0.0, 0.0)


def test_one_gpu_is_the_single_gpu_model_bit_for_bit():
    """Every shipped one-GPU oracle is its derivation with its own constants, and an explicit
    one-GPU layout changes nothing."""
    for name in [n for n in shipped_oracles() if n.count("_") == 1]:
        shipped = Oracle.load(name)
        model, gpu = name.split("_")
        k = HardwareConstants(**shipped.provenance["constants"])
        for layout in (None, Layout(1)):
            o = derive_oracle(arch.load_model(model), arch.load_gpu(gpu), k, layout=layout)
            assert np.array_equal(o.time_coef_s, shipped.time_coef_s), name
            assert np.array_equal(o.energy_coef_j, shipped.energy_coef_j), name
            assert o.memory == shipped.memory and o.gpus == 1 and o.experts == shipped.experts
            assert o.overlap == shipped.overlap


def test_the_prefill_overlap_worked_by_hand():
    """What a prefill hides: one step's read of the dense weights and every routed expert at the
    achieved bandwidth, against a prompt token's GEMMs at the prompt GEMMs' fraction of peak; each
    at every GPU's static power for energy; nothing unless the constants say so."""
    from dataclasses import replace

    k = replace(PLAIN, inv_eff_memory=1.25, inv_eff_prefill=1.5, prefill_overlap=True)
    m, h100 = arch.load_model("llama-3.1-8b"), arch.load_gpu("h100")
    work = feature_work(m, Layout(2), h100)
    o = derive_oracle(m, h100, k, layout=Layout(2))
    assert o.overlap is not None
    assert o.overlap.weights_s == pytest.approx(1.25 * m.step_weight_bytes / (2 * h100.memory_bandwidth), rel=1e-12)
    assert o.overlap.per_token_s == pytest.approx(1.5 * work.flops[F.PREFILL_TOKENS] / (2 * h100.peak_flops))
    assert o.overlap.weights_j == pytest.approx(2 * 100.0 * o.overlap.weights_s)
    assert o.overlap.per_token_j == pytest.approx(2 * 100.0 * o.overlap.per_token_s)
    assert derive_oracle(m, h100, PLAIN).overlap is None
    moe = arch.load_model("qwen3-30b-a3b")
    with_experts = derive_oracle(moe, h100, k)
    assert with_experts.overlap is not None and with_experts.experts is not None
    dense_s = 1.25 * moe.step_weight_bytes / h100.memory_bandwidth
    assert with_experts.overlap.weights_s == pytest.approx(dense_s + with_experts.experts.time_s, rel=1e-12)


def test_a_tensor_parallel_2_step_worked_by_hand():
    """Llama-3.1-8B on two H100s: each GPU reads half the weights and does half the FLOPs, and
    every layer all-reduces the tokens' hidden states twice."""
    m, h100 = arch.load_model("llama-3.1-8b"), arch.load_gpu("h100")
    o = derive_oracle(m, h100, PLAIN, layout=Layout(2))
    assert o.name == "llama-3.1-8b_h100_tp2" and o.gpus == 2
    layers, d, vocab = 32, 4096, 128256
    weights = (8_030_261_248 - vocab * d) * 2.0  # untied: the input embedding is a gather, not read
    latency = 2 * layers * 15.5e-6  # two all-reduces per layer at the small-message floor
    per_token = 2 * layers * d * 2.0 * 2 * (2 - 1) / 2 / 445e9  # ring all-reduce of bf16 hidden states
    const_t = weights / (2 * 3.35e12) + latency
    assert o.time_coef_s[F.CONST] == pytest.approx(const_t, rel=1e-12)
    flops = 2.0 * (8_030_261_248 - vocab * d)  # every linear layer and the LM head, one token
    kv = 2 * layers * 8 * 128 * 2.0  # the token's keys and values written
    decode = flops / (2 * 989.5e12) + kv / (2 * 3.35e12) + per_token
    assert o.time_coef_s[F.DECODE_SEQS] == pytest.approx(decode, rel=1e-12)
    assert o.time_coef_s[F.DECODE_CTX] == pytest.approx(kv / (2 * 3.35e12) + 4 * layers * 32 * 128 / (2 * 989.5e12))
    assert o.energy_coef_j[F.CONST] == pytest.approx(2 * 100.0 * const_t, rel=1e-12)  # both GPUs' static power
    assert o.idle_power_w == 2 * h100.idle_power_w and o.power_limit_w == 2 * h100.power_limit_w
    assert o.memory is not None and o.memory.gpu_memory_bytes == 2 * h100.memory_bytes


def test_an_expert_parallel_8_step_worked_by_hand():
    """Qwen3-235B-A22B on eight H100s: a token computes on its 8 of 128 experts, and a step reads
    the experts its tokens touch, each GPU an eighth of them."""
    m, h100 = arch.load_model("qwen3-235b-a22b"), arch.load_gpu("h100")
    o = derive_oracle(m, h100, PLAIN, layout=Layout(8, expert_parallel=True))
    assert o.name == "qwen3-235b-a22b_h100_ep8" and o.experts is not None
    layers, d, ffn, experts = 94, 4096, 1536, 128
    all_experts = layers * experts * 3 * d * ffn * 2.0  # bf16, gated: three matrices each
    assert o.experts.untouched == pytest.approx(1 - 8 / 128)
    assert o.experts.time_s == pytest.approx(all_experts / (8 * 3.35e12), rel=1e-12)
    assert o.experts.energy_j == pytest.approx(8 * 100.0 * o.experts.time_s, rel=1e-12)
    unused = layers * (experts - 8) * 3 * d * ffn  # parameters a token does not compute on
    flops = 2.0 * (m.params - unused - 151936 * d)  # active linear layers and LM head, embedding gathered
    assert feature_work(m, Layout(8, True), h100).flops[F.DECODE_SEQS] == pytest.approx(flops, rel=1e-12)
    # the step constant reads only the weights outside the routed experts
    assert o.time_coef_s[F.CONST] == pytest.approx(
        (m.params * 2.0 - all_experts - 151936 * d * 2.0) / (8 * 3.35e12) + 2 * layers * 15.5e-6, rel=1e-12
    )


def test_the_expected_share_of_experts_touched_is_a_monte_carlo_draw():
    """1 − (1 − k/E)^n: each of n tokens picks k distinct experts of E uniformly."""
    o = Oracle.load("qwen3-30b-a3b_h100")
    assert o.experts is not None
    rng = np.random.default_rng(0)
    experts, k = 128, 8
    for n in (1, 4, 16, 32, 64):
        draws = 400
        touched = np.empty(draws)
        for i in range(draws):
            picks = np.argsort(rng.random((n, experts)), axis=1)[:, :k]
            touched[i] = np.unique(picks).size / experts
        se = touched.std(ddof=1) / np.sqrt(draws)
        assert abs(touched.mean() - float(o.experts.share(n))) <= 4 * se + 1e-4, n


def test_moe_decode_gets_cheaper_per_token_later_than_dense():
    """Per token, a dense model's decode step cost falls as 1/batch; an MoE model's falls only once
    the batch touches most experts."""
    dense, moe = Oracle.load("qwen3-14b_h100"), Oracle.load("qwen3-30b-a3b_h100")
    batches = np.array([1, 8, 64, 512])
    x = F.step_features(decode_seqs=batches, decode_ctx=batches * 1000)

    def fall(o: Oracle) -> float:
        per_token = o.step_time(x) / batches
        return float(per_token[1] / per_token[0])  # batch 8 against batch 1

    assert fall(moe) > fall(dense)


def test_kv_capacity_is_memory_arithmetic():
    """Four H100s hold Llama-3.1-70B's weights once and a KV cache in the rest of 0.9 of their memory."""
    o = Oracle.load("llama-3.1-70b_h100_tp4")
    assert o.memory is not None
    h100 = arch.load_gpu("h100")
    weights = 70_553_706_496 * 2.0
    kv_per_token = 80 * 2 * 8 * 128 * 2.0  # 8 KV heads over 4 GPUs: two each, none replicated
    assert o.memory.kv_capacity_tokens(0.9) == int((4 * h100.memory_bytes * 0.9 - weights) // kv_per_token)


def test_the_sampler_memory_of_a_full_batch_comes_out_of_the_kv_cache():
    """Every GPU of a replica samples the whole vocabulary: a 1,024-sequence batch of Llama-3.1-70B
    on four H100s holds back 1,024 · 128,256 logits · 14 B on each GPU, and the engine's KV layout
    holds it back for `server.max_batch_size` sequences."""
    from sim.engine.kv_sizing import replica_kv

    o = Oracle.load("llama-3.1-70b_h100_tp4")
    assert o.memory is not None
    h100 = arch.load_gpu("h100")
    weights = 70_553_706_496 * 2.0
    kv_per_token = 80 * 2 * 8 * 128 * 2.0
    sampler = 4 * 128_256 * 14.0  # bytes per sequence over the replica
    assert o.memory.sampler_bytes_per_seq == sampler
    free = 4 * h100.memory_bytes * 0.9 - weights - 1024 * sampler
    assert o.memory.kv_capacity_tokens(0.9, max_seqs=1024) == int(free // kv_per_token)
    kv = replica_kv(o, ServerConfig(max_batch_size=1024, max_num_tokens=8192))
    assert kv.capacity_units == int(free // (16 * kv_per_token))
    more = replica_kv(o, ServerConfig(max_batch_size=4096, max_num_tokens=None))
    assert more.capacity_units == int((4 * h100.memory_bytes * 0.9 - weights - 4096 * sampler) // (16 * kv_per_token))


def test_a_hybrid_mamba_transformer_step_worked_by_hand():
    """Nemotron-Nano-9B-v2 on two H100s: KV in its 4 attention layers only, every sequence a step
    decodes or prefills reads and writes its 27 Mamba layers' state (fp32 SSM, bf16 conv), and each
    of its 56 blocks all-reduces once."""
    m, h100 = arch.load_model("nemotron-nano-9b-v2"), arch.load_gpu("h100")
    state = 27 * (128 * 80 * 128 * 4.0 + (10240 + 2 * 8 * 128) * 3 * 2.0)
    assert m.mamba_state_bytes == state and m.kv_bytes_per_token == 4 * 2 * 8 * 128 * 2.0
    work = feature_work(m, Layout(2), h100)
    kv_read = 4 * 2 * 8 * 128 * 2.0
    assert work.bytes[F.DECODE_SEQS] == pytest.approx(
        kv_read + 2 * state, rel=1e-12
    )  # KV written, state read and written
    assert work.bytes[F.PREFILL_SEQS] == 2 * state and work.bytes[F.DECODE_CTX] == kv_read
    assert work.flops[F.DECODE_CTX] == 4 * 4 * 40 * 128  # QKᵀ and AV in the attention layers only
    assert work.comm_s[F.CONST] == pytest.approx(56 * h100.allreduce_latency_s, rel=1e-12)
    o = derive_oracle(m, h100, PLAIN, layout=Layout(2))
    assert o.memory is not None and o.memory.seq_state_bytes == state and o.memory.kv_layers == 4
    # while its states move, the replica draws idle + mamba_power_w per GPU instead of static
    state_s = 2 * state / (2 * 3.35e12)
    hot = derive_oracle(m, h100, dataclasses.replace(PLAIN, mamba_power_w=300.0), layout=Layout(2))
    assert (hot.energy_coef_j - o.energy_coef_j)[F.DECODE_SEQS] == pytest.approx(
        2 * (h100.idle_power_w + 300.0 - 100.0) * state_s, rel=1e-9
    )
    assert hot.energy_coef_j[F.CONST] == o.energy_coef_j[F.CONST] and np.array_equal(hot.time_coef_s, o.time_coef_s)
    # a prefilling sequence's Mamba layers each take mamba_prefill_s more, at the Mamba power too
    scanning = dataclasses.replace(PLAIN, mamba_prefill_s=1e-3)
    slow = derive_oracle(m, h100, scanning, layout=Layout(2))
    extra = slow.time_coef_s - o.time_coef_s
    assert extra[F.PREFILL_SEQS] == pytest.approx(27 * 1e-3, rel=1e-12)
    assert np.delete(extra, F.PREFILL_SEQS) == pytest.approx(0.0, abs=1e-15)
    hot_scan = derive_oracle(m, h100, dataclasses.replace(scanning, mamba_power_w=300.0), layout=Layout(2))
    assert (hot_scan.energy_coef_j - slow.energy_coef_j)[F.PREFILL_SEQS] == pytest.approx(
        2 * (h100.idle_power_w + 300.0 - 100.0) * (state_s + 27 * 1e-3), rel=1e-9
    )


def test_a_hybrid_sequence_holds_its_state_beside_its_kv():
    """The KV layout of Nemotron-Nano-9B-v2 on one H100: the state in whole 16-token blocks of the
    attention layers' KV, held from a sequence's first token; the cache holds ⌊units / state⌋
    one-token sequences."""
    from sim.engine.kv_sizing import kv_layout

    o = derive_oracle(arch.load_model("nemotron-nano-9b-v2"), arch.load_gpu("h100"), PLAIN)
    assert o.memory is not None
    kv = kv_layout(o.memory, block_size=16, memory_fraction=0.9, capacity_tokens=None, name=o.name)
    unit = 16 * 4 * 2 * 8 * 128 * 2.0
    assert kv.state_units == -int(-o.memory.seq_state_bytes // unit)
    assert kv.capacity_units == int((0.9 * o.memory.gpu_memory_bytes - o.memory.weight_bytes) // unit)
    assert kv.units(0) == 0 and kv.units(1) == kv.state_units + 1 and kv.units(33) == kv.state_units + 3
    assert kv.max_tokens(kv.state_units) == 0 and kv.max_tokens(kv.state_units + 2) == 32


def test_show_gives_the_kv_cache_a_full_batch_leaves():
    """`python -m oracle.show` states the replica's memory and, per batch reported, the KV tokens
    left after the sampler's memory for that batch: the engine's own arithmetic."""
    from oracle.show import describe

    o = Oracle.load("llama-3.1-70b_h100_tp4")
    assert o.memory is not None
    text = describe(o, (8, 1024))
    assert f"weights {o.memory.weight_bytes / 1e9:.1f} GB of {o.memory.gpu_memory_bytes / 1e9:.1f} GB" in text
    for b in (8, 1024):
        assert f"KV cache {o.memory.kv_capacity_tokens(max_seqs=b):,} tokens with a full batch of {b}" in text
    assert o.memory.kv_capacity_tokens(max_seqs=1024) < o.memory.kv_capacity_tokens(max_seqs=8)


def test_mla_and_replicated_kv_heads():
    """DeepSeek's latent (576 elements per token and layer) is stored on every GPU; KV heads
    beyond one per GPU are replicated."""
    ds = arch.load_model("deepseek-v3.1")
    assert ds.kv_bytes_per_token == 61 * 576 * 2.0
    assert Layout(8, True).kv_replication(ds) == 8
    llama = arch.load_model("llama-3.1-8b")  # 8 KV heads
    assert Layout(4).kv_replication(llama) == 1 and Layout(8).kv_replication(llama) == 1
    assert Layout(8).kv_replication(arch.load_model("qwen3-30b-a3b")) == 2  # 4 KV heads on 8 GPUs


def test_fp8_checkpoints_read_fewer_bytes_and_use_the_fp8_peak():
    bf16, fp8 = arch.load_model("qwen3-235b-a22b"), arch.load_model("qwen3-235b-a22b-fp8")
    assert fp8.weight_bytes < 0.6 * bf16.weight_bytes
    h100, a100 = arch.load_gpu("h100"), arch.load_gpu("a100")
    lay = Layout(8, True)
    assert feature_work(fp8, lay, h100).flops[F.PREFILL_TOKENS] == pytest.approx(
        feature_work(bf16, lay, h100).flops[F.PREFILL_TOKENS] / 2, rel=0.01
    )
    # no fp8 tensor cores on an A100: its GEMMs run at the bf16 rate
    assert feature_work(fp8, lay, a100).flops[F.PREFILL_TOKENS] == feature_work(bf16, lay, a100).flops[F.PREFILL_TOKENS]


def test_only_block_scaled_fp8_experts_dequantise_at_their_own_power():
    """Qwen3's fp8 checkpoint scales each 128×128 block (fused MoE kernels dequantise them), Llama 4
    Maverick's each row (FBGEMM): only the first pays the extra read time, and over that time its
    GPUs draw idle plus `fp8_expert_power_w` where set, static power otherwise. Worked by hand."""
    h100, lay = arch.load_gpu("h100"), Layout(8, True)
    qwen = feature_work(arch.load_model("qwen3-235b-a22b-fp8"), lay, h100)
    maverick = feature_work(arch.load_model("llama-4-maverick-fp8"), lay, h100)
    assert qwen.fp8_experts and not maverick.fp8_experts
    k = dataclasses.replace(PLAIN, fp8_expert_read_scale=0.5, energy_per_byte_j=1e-11)
    read = qwen.expert_bytes / (8 * h100.memory_bandwidth)  # s, at the datasheet bandwidth
    plain = expert_reads(qwen, h100, k)
    assert plain is not None and plain.time_s == pytest.approx(1.5 * read, rel=1e-12)
    assert plain.energy_j == pytest.approx(8 * 100.0 * 1.5 * read + 1e-11 * qwen.expert_bytes, rel=1e-12)
    hot = expert_reads(qwen, h100, dataclasses.replace(k, fp8_expert_power_w=400.0))
    assert hot is not None and hot.time_s == plain.time_s
    dequant_j = 8 * (h100.idle_power_w + 400.0) * 0.5 * read
    assert hot.energy_j == pytest.approx(8 * 100.0 * read + dequant_j + 1e-11 * qwen.expert_bytes, rel=1e-12)
    row_wise = expert_reads(maverick, h100, dataclasses.replace(k, fp8_expert_power_w=400.0))
    assert row_wise is not None
    assert row_wise.time_s == pytest.approx(maverick.expert_bytes / (8 * h100.memory_bandwidth), rel=1e-12)


@pytest.mark.parametrize(
    ("model", "gpu", "layout", "reason"),
    [
        ("llama-3.1-70b", "h100", Layout(1), "does not fit on 1 .* it needs at least 2 GPUs"),
        ("llama-3.1-8b", "h100", Layout(3), "must divide its 32 attention heads"),
        ("llama-3.1-8b", "h100", Layout(2, expert_parallel=True), "is dense: expert parallelism"),
        ("qwen3-coder-480b-a35b", "h100", Layout(8, True), "does not fit on 8"),
    ],
)
def test_bad_layouts_are_refused_with_the_reason(model, gpu, layout, reason):
    with pytest.raises(LayoutError, match=reason):
        derive_oracle(arch.load_model(model), arch.load_gpu(gpu), PLAIN, layout=layout)


def test_a_layout_is_a_whole_number_of_gpus():
    with pytest.raises(LayoutError, match="whole number"):
        Layout(0)


def test_oracle_for_derives_what_does_not_ship_and_round_trips(tmp_path):
    """`oracle_for` takes a benchmark's model id and GPU label; the derived oracle saves and loads
    with its GPUs and expert reads."""
    o = build.oracle_for("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", "H100", 4)
    assert o.name == "qwen3-235b-a22b-fp8_h100_ep4" and o.gpus == 4 and o.experts is not None
    again = Oracle.load(o.save(tmp_path / "o.json"))
    assert again.gpus == 4 and again.experts == o.experts
    assert np.array_equal(again.time_coef_s, o.time_coef_s)
    with pytest.raises(KeyError, match="no architecture"):
        build.oracle_for("nobody/unknown", "H100")


MULTI = sorted(n for n in shipped_oracles() if n.count("_") == 2 and n.split("_")[1] == "h100")


@pytest.mark.parametrize("name", MULTI)
def test_every_shipped_multi_gpu_oracle_loads_and_simulates(name):
    o = Oracle.load(name)
    requests = pd.DataFrame({"arrival_s": np.arange(40) * 0.05, "n_in": [300, 1200] * 20, "n_out": [200, 40] * 20})
    result = simulate(requests, o, ServerConfig())
    assert result.requests["completed"].all()
    assert result.requests["energy_j"].sum() == pytest.approx(sum(s.span_energy_j.sum() for s in result.servers))
    busy = sum(s.busy_s for s in result.servers)
    assert sum(s.span_energy_j.sum() for s in result.servers) > o.idle_power_w * busy  # all GPUs' static power


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("llama-3.1-70b_h100", r"does not fit on 1 .*shipped layouts: llama-3.1-70b_h100_tp2, "),
        ("llama-3.1-8b_h100_tp3", r"must divide its 32 attention heads"),
        ("deepseek-v3.1_h100_ep8", r"does not fit on 8"),
    ],
)
def test_an_oracle_that_does_not_ship_says_why(name, why):
    with pytest.raises(FileNotFoundError, match=why):
        Oracle.load(name)


def test_the_listing_groups_layouts_by_model_and_gpu():
    from oracle.show import listing

    text = listing(shipped_oracles())
    assert "llama-3.1-8b_h100  also llama-3.1-8b_h100_tp2, llama-3.1-8b_h100_tp4, llama-3.1-8b_h100_tp8" in text
    assert "(llama-3.1-70b_h100: does not fit one GPU)  also llama-3.1-70b_h100_tp2" in text
    assert text.endswith(
        f"{len(shipped_oracles())} oracles: MODEL_GPU (one GPU), MODEL_GPU_tpN / _epN (N GPUs per replica)"
    )


def test_the_readme_counts_the_oracles_and_architectures_that_ship():
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    said = re.search(r"lists the\s+(\d+)\s+shipped oracles:\s+(\d+)\s+architectures", readme)
    assert said is not None
    assert int(said.group(1)) == len(shipped_oracles())
    assert int(said.group(2)) == len(arch.model_names())
