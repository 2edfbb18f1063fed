"""The prefix cache on the simple reference engine (`SimpleEngine`), driven by hand: hand-computed step logs of a full
hit, a partial hit, an LRU eviction and the preemption of a sequence whose blocks another holds,
replayed on the compiled kernel (`KernelEngine`) with the same records; and random prefix chains
on small caches, where the KV never exceeds the cache, a shared block is counted once and every
request generates what it would without the cache.

Steps are driven as the exact-steps server drives them: a plain decode step (`run_span(1)`) when
`can_span`, else `form_step` and `finish_step`. A step's record is (prefill work [(job, chunk
tokens, tokens already computed)] or None for a plain decode step, jobs finished, `used` units
after the step, {cached block: sequences referencing it}, idle blocks least recently used first).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from numba import njit

from oracle.features import StepCoef
from sim.config import ServerConfig
from sim.engine.costs import StepCosts
from sim.engine.jobs import DONE, REJECTED, JobTable
from sim.engine.kv import KvLayout
from sim.engine.prefix import PrefixBlocks
from sim.engine.simple import SimpleEngine
from sim.kernel.engine import KernelEngine
from sim.schedulers import SCHEDULERS
from tests.sim.conftest import flat_kv, toy_oracle, trace
from tests.sim.kernel.test_loop import assert_same, both
from tests.sim.serving.test_sim_properties import SETTINGS

Record = tuple[list[tuple[int, int, int]] | None, list[int], int, dict[int, int], list[int]]
PREFIX_SCHEDULERS = sorted(name for name, cls in SCHEDULERS.items() if cls.prefix_caching)
COSTS = StepCosts(StepCoef(1.0, 0, 0, 0, 0, 0), StepCoef(1.0, 0, 0, 0, 0, 0), 0.0)


def job_table(rows: list[tuple[int, int, list[int]]], block_tokens: int = 4) -> JobTable:
    """Jobs from (n_in, n_out, prompt block hashes) rows, their prefix blocks set."""
    jobs = JobTable([r[0] for r in rows], [r[1] for r in rows])
    hashes = pd.Series([r[2] for r in rows], dtype="object")
    jobs.prefix = PrefixBlocks.from_lists(hashes, np.array([r[0] for r in rows]), None, block_tokens)
    return jobs


@njit
def _kernel_cache(r):  # type: ignore[no-untyped-def]
    return r.c_in.copy(), r.c_ref.copy(), r.c_next.copy(), r.lru_h, r.cidle, r.bu, r.evicted


def cache_of(engine: SimpleEngine | KernelEngine) -> tuple[dict[int, int], list[int], int, int]:
    """({cached block: references}, idle blocks LRU first, units a block, blocks evicted so far)."""
    if isinstance(engine, SimpleEngine):
        return (
            dict(sorted(engine.cache.blocks_cached.items())),
            list(engine.idle_blocks),
            engine.bu,
            engine.cache.evicted,
        )
    c_in, c_ref, c_next, h, cidle, bu, evicted = _kernel_cache(engine.r)
    idle = []
    while h >= 0:
        idle.append(int(h))
        h = c_next[h]
    assert len(idle) == cidle
    return {int(b): int(c_ref[b]) for b in np.flatnonzero(c_in)}, idle, int(bu), int(evicted)


def check_kv(engine: SimpleEngine | KernelEngine) -> None:
    """The KV books after a step: no more than the cache, idle cached blocks included."""
    cached, idle, bu, _ = cache_of(engine)
    assert [b for b, refs in cached.items() if refs == 0] == sorted(idle)
    assert 0 <= engine.used and engine.used + len(idle) * bu <= engine.cap


def step(engine: SimpleEngine | KernelEngine) -> Record:
    """One step as the exact-steps server runs it; its record."""
    assert engine.busy()
    work: list[tuple[int, int, int]] | None = None
    if engine.can_span():
        done = engine.run_span(1)
    else:
        work = engine.form_step(0.0)
        _, done = engine.finish_step(work)
    check_kv(engine)
    cached, idle, _, _ = cache_of(engine)
    return work, sorted(done), int(engine.used), cached, idle


def drive(engine: SimpleEngine | KernelEngine, arrivals: dict[int, list[int]], steps: int) -> list[Record]:
    """The records of `steps` steps, jobs `arrivals[n]` enqueued before step n (from 0)."""
    log = []
    for n in range(steps):
        for j in arrivals.get(n, []):
            assert engine.enqueue(j)
        log.append(step(engine))
    return log


def both_engines(
    rows: list[tuple[int, int, list[int]]], config: ServerConfig, kv: KvLayout
) -> tuple[tuple[SimpleEngine, JobTable], tuple[KernelEngine, JobTable]]:
    """The reference engine and the compiled one, each on its own job table of `rows`."""
    a, b = job_table(rows), job_table(rows)
    return (SimpleEngine(a, config, kv), a), (KernelEngine(b, config, kv, COSTS), b)


def replay(
    rows: list[tuple[int, int, list[int]]],
    config: ServerConfig,
    kv: KvLayout,
    arrivals: dict[int, list[int]],
    expected: list[Record],
) -> tuple[SimpleEngine, JobTable]:
    """Both engines give the `expected` step log and leave the same job records; the reference's."""
    (engine, jobs), (kernel, kjobs) = both_engines(rows, config, kv)
    for e in (engine, kernel):
        log = drive(e, arrivals, len(expected))
        for n, (got, want) in enumerate(zip(log, expected, strict=True)):
            assert got == want, f"{type(e).__name__} step {n + 1}"
        assert not e.busy()
    assert cache_of(kernel)[3] == engine.cache.evicted
    for name in ("generated", "status", "cached_tokens", "chunks"):
        assert list(getattr(jobs, name)) == list(getattr(kjobs, name)), name
    for name in ("preemptions", "extra_prefill_tokens"):
        assert [getattr(jobs, name)[j] for j in range(len(jobs))] == [
            getattr(kjobs, name)[j] for j in range(len(jobs))
        ], name
    assert (jobs.status == DONE).all()
    assert list(jobs.generated) == list(jobs.n_out)
    return engine, jobs


def test_a_full_hit_of_a_shared_prefix_still_computes_the_last_token():
    """Blocks of 4 tokens = 1 KV block of 4 tokens (1 unit). A (12 in, 3 out) and B (12 in, 2 out)
    list the same 3 blocks; C (13 in) lists them and a partial fourth."""
    rows = [(12, 3, [1, 2, 3]), (12, 2, [1, 2, 3]), (13, 2, [1, 2, 3, 9])]  # block ids 0, 1, 2 (and 3)
    config = ServerConfig(block_size=4, max_batch_size=4, max_num_tokens=64)
    expected: list[Record] = [
        # 1: A prefills 12 tokens (3 units); its 3 blocks are cached, referenced by A.
        ([(0, 12, 0)], [], 3, {0: 1, 1: 1, 2: 1}, []),
        # 2: B arrived: (12 − 1) // 4 = 2 blocks hit, so it computes its last block from token 8 (1
        # new unit; its other 2 are A's). A's decode at context 13 takes a unit. B's prefill ends:
        # its third block is A's too, so its own copy is freed: 3 + 1 + 1 − 1.
        ([(1, 4, 8)], [], 4, {0: 2, 1: 2, 2: 2}, []),
        # 3: both decode (B's context 13 takes a unit) and finish: A frees its own unit, B its own
        # and the 3 blocks no one references, which stay cached, idle, B's last one first.
        (None, [0, 1], 0, {0: 0, 1: 0, 2: 0}, [2, 1, 0]),
        # 4: C (13 tokens) finds all 3 full blocks ((13 − 1) // 4 = 3), idle: it takes them out of
        # the free memory (4 units: units(13)) and computes its 13th token alone.
        ([(2, 1, 12)], [], 4, {0: 1, 1: 1, 2: 1}, []),
        # 5: C's last decode (context 14, no new block) and finish.
        (None, [2], 0, {0: 0, 1: 0, 2: 0}, [2, 1, 0]),
    ]
    _, jobs = replay(rows, config, flat_kv(400, 4), {0: [0], 1: [1], 3: [2]}, expected)
    assert jobs.cached_tokens.tolist() == [0, 8, 12]


def test_a_partial_hit_prefills_from_where_the_lists_diverge():
    """KV blocks of 2 tokens, prefix blocks of 4: a prefix block is 2 units. A lists 3 blocks,
    B (14 in: 3 full blocks) shares A's first 2 and then diverges."""
    rows = [(12, 2, [1, 2, 3]), (14, 3, [1, 2, 7, 8])]  # ids: A 0 1 2; B 0 1 3 (4 is not full)
    config = ServerConfig(block_size=2, max_batch_size=4, max_num_tokens=64)
    (engine, jobs), _ = both_engines(rows, config, flat_kv(64, 2))
    assert (engine.hb, engine.bu, engine.cap) == (4, 2, 32)
    assert jobs.prefix is not None and jobs.prefix.counts.tolist() == [3, 3]
    expected: list[Record] = [
        # 1: A prefills 12 tokens: 6 units.
        ([(0, 12, 0)], [], 6, {0: 1, 1: 1, 2: 1}, []),
        # 2: B hits blocks 0 and 1 (its third differs): prefills 6 tokens from 8; units(14) = 7 less
        # the 2 blocks it shares, 3 units. A decodes at context 13 (a unit) and finishes: its own
        # unit freed, block 2 idle (2 units), blocks 0 and 1 still B's. B's prefill caches block 3.
        ([(1, 6, 8)], [0], 7, {0: 1, 1: 1, 2: 0, 3: 1}, [2]),
        # 3: B decodes at context 15 (a unit); 4: at 16 (none), and finishes: units(16) = 8 freed
        # with its blocks, idle after A's, its last block first.
        (None, [], 8, {0: 1, 1: 1, 2: 0, 3: 1}, [2]),
        (None, [1], 0, {0: 0, 1: 0, 2: 0, 3: 0}, [2, 3, 1, 0]),
    ]
    _, jobs = replay(rows, config, flat_kv(64, 2), {0: [0], 1: [1]}, expected)
    assert jobs.cached_tokens.tolist() == [0, 8]


def test_an_allocation_evicts_idle_blocks_least_recently_used_first():
    """A cache of 5 units (blocks of 4 tokens, a unit each). A's blocks stay cached, idle, after
    it finishes; B's prompt and decodes need the memory and evict them, A's last block first;
    C, the same prompt as A, then misses; D, B's prompt, finds the 2 of B's blocks still cached."""
    rows = [(8, 2, [1, 2]), (16, 2, [5, 6, 7, 8]), (8, 2, [1, 2]), (16, 1, [5, 6, 7, 8])]
    a1, a2, b5, b6, b7, b8 = range(6)
    config = ServerConfig(block_size=4, max_batch_size=4, max_num_tokens=64)
    expected: list[Record] = [
        # 1: A prefills 8 tokens (2 units).
        ([(0, 8, 0)], [], 2, {a1: 1, a2: 1}, []),
        # 2: A decodes at context 9 (a unit) and finishes: its blocks idle, its last one first.
        (None, [0], 0, {a1: 0, a2: 0}, [a2, a1]),
        # 3: B takes 4 units of the 5, 2 of them idle: a2, least recently used, is evicted.
        ([(1, 16, 0)], [], 4, {a1: 0, b5: 1, b6: 1, b7: 1, b8: 1}, [a1]),
        # 4: C arrived but needs 2 units (its 1 hit, a1, idle, counts as free): B decodes at
        # context 17, its new unit evicts a1, and finishes; its blocks idle, last first.
        (None, [1], 0, {b5: 0, b6: 0, b7: 0, b8: 0}, [b8, b7, b6, b5]),
        # 5: C misses (a1 was evicted) and prefills all 8 tokens: 2 units, evicting b8.
        ([(2, 8, 0)], [], 2, {a1: 1, a2: 1, b5: 0, b6: 0, b7: 0}, [b7, b6, b5]),
        # 6: C decodes at context 9: its unit evicts b7; it finishes.
        (None, [2], 0, {a1: 0, a2: 0, b5: 0, b6: 0}, [b6, b5, a2, a1]),
        # 7: D finds b5 and b6 (b7 was evicted): 8 tokens from 8, 4 units, 2 of them its idle
        # hits: a2 is evicted. Its prefill emits its only token: it finishes in the same step.
        ([(3, 8, 8)], [3], 0, {a1: 0, b5: 0, b6: 0, b7: 0, b8: 0}, [a1, b8, b7, b6, b5]),
    ]
    engine, jobs = replay(rows, config, flat_kv(20, 4), {0: [0], 2: [1], 3: [2], 6: [3]}, expected)
    assert jobs.cached_tokens.tolist() == [0, 0, 0, 8]
    assert engine.cache.evicted == 5  # a2, a1, b8, b7, a2


def test_preempting_a_sequence_whose_blocks_are_shared_frees_only_its_own():
    """A cache of 7 units (blocks of 4 tokens, a unit each). A (9 in, 8 out) and B (9 in, 6 out)
    share 2 full blocks; C (4 in, 6 out) shares none. B, admitted last, is preempted while A holds
    the shared blocks, and re-prefills from them once C's finish frees memory."""
    rows = [(9, 8, [1, 2, 3]), (9, 6, [1, 2, 4]), (4, 6, [9])]
    a, b, c = 0, 1, 2
    a1, a2, c9 = 0, 1, 4  # hashes 1 2 3 4 9 → ids 0…4; 3 and 4 are partial blocks, never cached
    config = ServerConfig(block_size=4, max_batch_size=4, max_num_tokens=64)
    expected: list[Record] = [
        # 1: A (3 units) and C (1 unit) prefill; their full blocks are cached.
        ([(a, 9, 0), (c, 4, 0)], [], 4, {a1: 1, a2: 1, c9: 1}, []),
        # 2: B hits A's 2 blocks: computes its 9th token (1 unit); C's decode at context 5 takes one.
        ([(b, 1, 8)], [], 6, {a1: 2, a2: 2, c9: 1}, []),
        # 3, 4: plain decodes within the blocks held; 5: A writes token 12 (a unit).
        (None, [], 6, {a1: 2, a2: 2, c9: 1}, []),
        (None, [], 6, {a1: 2, a2: 2, c9: 1}, []),
        (None, [], 7, {a1: 2, a2: 2, c9: 1}, []),
    ]
    arrivals = {0: [a, c], 1: [b]}
    engines = both_engines(rows, config, flat_kv(28, 4))
    for engine, jobs in engines:
        assert drive(engine, arrivals, len(expected)) == expected
        # 6: B (context 13) and C (context 9) need a unit each, none is free: B is preempted. It
        # held units(12) = 3, 2 of them the blocks A references: only its own unit is freed.
        work = engine.form_step(0.0)
        assert work == [] and engine.preemptions == 1
        assert engine.used == 7 - 1 + 1  # less B's own unit, plus C's new one
        first, done = engine.finish_step(work)  # C's last token: C finishes, its block idle
        check_kv(engine)
        assert (first, done) == ([], [c])
        assert (engine.used, cache_of(engine)[:2]) == (4, ({a1: 1, a2: 1, c9: 0}, [c9]))
        assert jobs.generated[b] == 4 and jobs.preemptions[b] == 1 and jobs.extra_prefill_tokens[b] == 13
        # 7: B re-prefills its 13 tokens from its 2 blocks, still cached (A's): 5 tokens from 8,
        # units(13) = 4 less the 2 shared. 8: A and B decode their last tokens and finish.
        rest = [step(engine), step(engine)]
        assert rest == [
            ([(b, 5, 8)], [], 6, {a1: 2, a2: 2, c9: 0}, [c9]),
            (None, [a, b], 0, {a1: 0, a2: 0, c9: 0}, [c9, a2, a1]),
        ]
        assert not engine.busy()
        assert jobs.cached_tokens.tolist() == [0, 16, 0]  # B's prefills found 8 tokens each
        assert list(jobs.generated) == list(jobs.n_out) and (jobs.status == DONE).all()


# --- random prefix chains ------------------------------------------------------------------------


def chains(symbols: list[list[int]]) -> list[list[int]]:
    """Prefix chains: block k of a prompt is named by its first k + 1 symbols, so two prompts
    share exactly their leading blocks of equal symbols."""
    names: dict[tuple[int, ...], int] = {}
    return [[names.setdefault(tuple(s[: k + 1]), len(names)) for k in range(len(s))] for s in symbols]


def run_by_hand(
    rows: list[tuple[int, int, list[int]]],
    arrivals: list[int],
    config: ServerConfig,
    kv: KvLayout,
    hb: int,
    spans: bool,
) -> tuple[SimpleEngine, JobTable, list[bool]]:
    """The reference engine driven by hand, jobs enqueued at their arrival steps, plain decode
    steps run one at a time or (`spans`) as spans of `span_limit` steps, as the fast mode runs
    them; checks the KV books after every call; (engine, jobs, whether each was accepted)."""
    jobs = job_table(rows, hb)
    engine = SimpleEngine(jobs, config, kv)
    order = sorted(range(len(rows)), key=lambda j: (arrivals[j], j))
    accepted = [False] * len(rows)
    i = idle = calls = 0
    while i < len(order) or engine.busy():
        while i < len(order) and arrivals[order[i]] <= engine.N + idle:
            accepted[order[i]] = engine.enqueue(order[i])
            i += 1
        if not engine.busy():
            idle += 1
            continue
        if engine.can_span():
            engine.run_span(engine.span_limit() if spans else 1)
        else:
            engine.finish_step(engine.form_step(0.0))
        check_kv(engine)
        check_references(engine, jobs)
        calls += 1
        assert calls < 20_000, "the engine stalled"
    return engine, jobs, accepted


def check_references(engine: SimpleEngine, jobs: JobTable) -> None:
    """Each cached block's reference count is the number of running sequences whose leading
    referenced blocks include it; queued jobs reference none."""
    b = jobs.prefix
    assert b is not None
    counts: dict[int, int] = {}
    for j in engine.order:
        refs = engine.cache.refs.get(j, 0)
        assert refs * engine.hb <= jobs.n_in[j]
        for h in b.ids[b.starts[j] : b.starts[j] + refs].tolist():
            counts[h] = counts.get(h, 0) + 1
    assert all(j not in engine.cache.refs for j in engine.queue)
    assert {h: n for h, n in engine.cache.blocks_cached.items() if n} == counts


prompts = st.lists(
    st.tuples(
        st.integers(1, 30),  # n_in
        st.integers(1, 24),  # n_out
        st.lists(st.integers(0, 1), min_size=1, max_size=10),  # symbols of the prefix chain
        st.integers(0, 8),  # arrival step
    ),
    min_size=2,
    max_size=12,
)


@settings(SETTINGS, max_examples=200)
@given(
    prompts,
    st.sampled_from(PREFIX_SCHEDULERS),
    st.sampled_from([(1, 4), (2, 4), (4, 4), (4, 8)]),  # (KV block, prefix block) tokens
    st.sampled_from([32, 40, 64, 1000]),  # KV capacity, tokens
    st.booleans(),
    st.sampled_from([8, 64]),
    st.integers(1, 4),
    st.booleans(),
)
def test_random_prefix_chains_keep_the_kv_books_and_change_no_output(
    rows: list[tuple[int, int, list[int], int]],
    scheduler: str,
    blocks: tuple[int, int],
    capacity: int,
    chunked: bool,
    budget: int,
    seqs: int,
    spans: bool,
) -> None:
    """Random prompts whose block lists share prefixes, small caches, every paged scheduler: after
    every step the KV (idle cached blocks included) fits the cache, the incremental count is the
    explicit one and each block's references are the running sequences holding it; the same
    requests are served, each generating n_out tokens, with the prefix cache on as off."""
    bs, hb = blocks
    hashes = chains([s for _, _, s, _ in rows])
    table = [(n_in, n_out, h[: -(-n_in // hb)]) for (n_in, n_out, _, _), h in zip(rows, hashes, strict=True)]
    arrivals = [t for *_, t in rows]
    runs: dict[bool, Any] = {}
    for pc in (True, False):
        config = ServerConfig(
            scheduler=scheduler, block_size=bs, max_batch_size=seqs, max_num_tokens=budget,
            chunked_prefill=chunked, prefix_caching=pc,
        )  # fmt: skip
        runs[pc] = run_by_hand(table, arrivals, config, flat_kv(capacity, bs), hb, spans)
    (on, jobs, accepted), (off, plain, accepted_off) = runs[True], runs[False]
    assert on.cache.pc and not off.cache.pc and on.bu == hb // bs
    assert accepted == accepted_off  # whether a request can be served does not depend on the cache
    for j, ok in enumerate(accepted):
        assert jobs.status[j] == (DONE if ok else REJECTED) and plain.status[j] == jobs.status[j]
    assert [g for g, ok in zip(jobs.generated, accepted, strict=True) if ok] == [
        n for n, ok in zip(jobs.n_out, accepted, strict=True) if ok
    ]
    assert list(jobs.generated) == list(plain.generated)
    assert (plain.cached_tokens == 0).all()
    # a prefill finds at most its prompt's full blocks (a re-prefill may find all of them: it
    # computes generated tokens after them)
    prefills = np.array([1 + jobs.preemptions[j] for j in range(len(jobs))])
    assert (jobs.cached_tokens <= prefills * (np.frombuffer(jobs.n_in, np.int32) // hb * hb)).all()
    event("hits" if jobs.cached_tokens.sum() else "no hits")
    event("evictions" if on.cache.evicted else "no evictions")
    event("preemptions" if on.preemptions else "no preemptions")


@pytest.mark.parametrize("scheduler", PREFIX_SCHEDULERS)
def test_every_scheduler_with_prefix_caching_turns_it_on(scheduler):
    """A prefix block of 4 tokens over KV blocks of 2: 2 units a block (`prefix_settings`)."""
    jobs = job_table([(8, 2, [1, 2])])
    engine = SimpleEngine(jobs, ServerConfig(scheduler=scheduler, block_size=2), flat_kv(64, 2))
    assert (engine.cache.pc, engine.hb, engine.bu) == (True, 4, 2)


@pytest.mark.parametrize("exact", [False, True])
def test_the_eviction_scenario_through_simulate(exact):
    """The eviction scenario as a trace (every toy step takes 1 s; arrivals mid-step join at the
    next step): the compiled and the general loops give the hand-computed admissions and hits."""
    frame = trace([(0.0, 8, 2), (1.5, 16, 2), (2.5, 8, 2), (5.5, 16, 1)])
    frame["hash_ids"] = pd.Series([[1, 2], [5, 6, 7, 8], [1, 2], [5, 6, 7, 8]], dtype="object")
    frame.attrs["hash_block_tokens"] = 4
    config = ServerConfig(block_size=4, max_batch_size=4, max_num_tokens=64, kv_capacity_tokens=20, exact_steps=exact)
    compiled, general = both(frame, toy_oracle(), config)
    assert_same(compiled, general)
    r = compiled.requests
    assert r["cached_tokens"].tolist() == [0, 0, 0, 8]
    assert r["start_s"].tolist() == [0.0, 2.0, 4.0, 6.0]
    assert r["finish_s"].tolist() == [2.0, 4.0, 6.0, 7.0]
