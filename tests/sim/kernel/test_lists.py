"""The kernel's lists (`sim.kernel.lists`) behave like their Python models: the heaps pop as heapq
pops the same tuples, the queue as a deque, the running list as an insertion-ordered dict."""

from __future__ import annotations

import heapq
from collections import deque

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

from sim.kernel import lists, state
from sim.kernel.linear import COLUMNS

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def row(c: object) -> np.ndarray:
    """A one-level clock ladder in the kernel's layout from its first values (six step coefficients,
    then any of the expert reads, the overlap, the untouched chance's log and the clock), the rest
    0 (no expert reads, no prefill overlap, clock unknown)."""
    c = np.asarray(c, dtype=float).reshape(-1)
    if c.size < COLUMNS:
        c = np.append(c, np.zeros(COLUMNS - c.size))
    return c.reshape(1, -1)


def replica(
    jobs: int = 16,
    seqs: int = 8,
    ct=(0.0,) * 6,
    ce=(0.0,) * 6,
    limit: float | None = None,
    **ints: int,
) -> state.Replica:
    """A replica of `jobs` jobs with room for `seqs` sequences, step coefficients `ct` (s) and
    `ce` (J), power cap `limit` (W; None: no cap) and the named `INT_SETTINGS` (others 0, block 1)."""
    values = {"bs": 1, "full": 1, **ints}
    unknown = set(values) - set(state.INT_SETTINGS)
    assert not unknown, unknown
    int_arr = np.array([values.get(k, 0) for k in state.INT_SETTINGS], dtype=np.int64)
    float_arr = np.array([(limit or 0.0) if k == "limit" else 0.0 for k in state.FLOAT_SETTINGS])
    i32, f64, i8 = (lambda: np.zeros(jobs, np.int32)), (lambda: np.zeros(jobs)), (lambda: np.zeros(jobs, np.int8))
    columns = (i32(), i32(), i32(), f64(), i8(), i8(), f64(), f64(), f64(), i32())
    links = (np.full(jobs, -1, np.int32), np.full(jobs, -1, np.int32), np.full(jobs, -1, np.int32))
    return state.new_replica(
        int_arr,
        float_arr,
        np.zeros(0, np.int64),
        np.zeros(0),
        row(ct),
        row(ce),
        seqs,
        2 * seqs + 2,
        4,
        columns,
        links,
        (np.zeros(0, np.int64), *(np.zeros(0, np.int32) for _ in range(3)), np.zeros(jobs, np.int64), f64(), 0),
        np.zeros(0),
        np.zeros(0, np.int64),
    )


# --- heaps ---------------------------------------------------------------------------------------

keys = st.integers(-3, 3) | st.integers(-(2**62), 2**62)  # small ones tie often: the later keys decide
heap_ops = st.lists(st.one_of(st.tuples(keys, keys, keys), st.none()), max_size=60)  # None: pop


@SETTINGS
@given(heap_ops)
def test_heap_pops_as_heapq_pops_triples(ops):
    """heap_push / heap_pop on three arrays pop the (a, b, c) tuples in heapq's order."""
    k0, k1, k2 = (np.zeros(len(ops), np.int64) for _ in range(3))
    n, model, got, want = 0, [], [], []
    for op in [*ops, *[None] * len(ops)]:  # then drain
        if op is not None:
            lists.heap_push(k0, k1, k2, n, *op)
            heapq.heappush(model, op)
            n += 1
        elif model:
            got.append((int(k0[0]), int(k1[0]), int(k2[0])))
            lists.heap_pop(k0, k1, k2, n)
            want.append(heapq.heappop(model))
            n -= 1
    assert got == want
    assert n == 0


@SETTINGS
@given(st.lists(st.one_of(st.tuples(keys, keys), st.none()), max_size=60))
def test_heap_of_pairs_pops_as_heapq(ops):
    """The two-key form the finish heap uses (the last array passed twice) orders (a, b) pairs."""
    k0, k1 = np.zeros(len(ops), np.int64), np.zeros(len(ops), np.int64)
    n, model, got, want = 0, [], [], []
    for op in [*ops, *[None] * len(ops)]:
        if op is not None:
            lists.heap_push(k0, k1, k1, n, op[0], op[1], op[1])
            heapq.heappush(model, op)
            n += 1
        elif model:
            got.append((int(k0[0]), int(k1[0])))
            lists.heap_pop(k0, k1, k1, n)
            want.append(heapq.heappop(model))
            n -= 1
    assert got == want


# --- the queue and the running list --------------------------------------------------------------

PUSH, PUSH_FRONT, POP, ADD, REMOVE = range(5)


@njit
def _walk(head, links, bound):  # type: ignore[no-untyped-def]
    """The jobs from `head` along `links` (at most `bound` + 1: a cycle shows as too many)."""
    out = np.empty(bound + 1, np.int64)
    n, j = 0, head
    while j >= 0 and n <= bound:
        out[n] = j
        n += 1
        j = links[j]
    return out[:n]


@njit
def _run_list_ops(r, kinds, jobs):  # type: ignore[no-untyped-def]
    """Apply the operations; the jobs popped off the queue, then the queue and running list forward
    and backward, and their lengths."""
    popped = np.empty(kinds.size, np.int64)
    npop = 0
    for i in range(kinds.size):
        k, j = kinds[i], jobs[i]
        if k == PUSH:
            lists.queue_push(r, j)
        elif k == PUSH_FRONT:
            lists.queue_push_front(r, j)
        elif k == POP:
            popped[npop] = lists.queue_pop(r)
            npop += 1
        elif k == ADD:
            lists.run_add(r, j)
        else:
            lists.run_remove(r, j)
    bound = r.nxt.size
    queue, queue_back = _walk(r.qhead, r.nxt, bound), _walk(r.qtail, r.prv, bound)
    running, running_back = _walk(r.ohead, r.nxt, bound), _walk(r.otail, r.prv, bound)
    return popped[:npop], queue, queue_back, r.qlen, running, running_back, r.olen


JOBS = 12
list_ops = st.lists(st.tuples(st.integers(0, 5), st.integers(0, JOBS - 1)), max_size=80)


def concrete(ops, allowed):
    """Turn drawn (choice, pick) pairs into a valid operation sequence (a job in at most one list,
    pops from a non-empty queue, removals of running jobs), played on a deque and a dict; returns
    the kinds, the jobs, the jobs popped, the final queue and the final running list."""
    queue, running, free = deque(), {}, set(range(JOBS))
    kinds, jobs, popped = [], [], []
    for choice, pick in ops:
        kind = allowed[choice % len(allowed)]
        j = -1
        if kind in (PUSH, PUSH_FRONT, ADD):
            if not free:
                continue
            j = sorted(free)[pick % len(free)]
            free.discard(j)
            if kind == PUSH:
                queue.append(j)
            elif kind == PUSH_FRONT:
                queue.appendleft(j)
            else:
                running[j] = None
        elif kind == POP:
            if not queue:
                continue
            popped.append(queue.popleft())
            free.add(popped[-1])
        else:
            if not running:
                continue
            j = list(running)[pick % len(running)]
            del running[j]
            free.add(j)
        kinds.append(kind)
        jobs.append(j)
    return np.array(kinds, np.int64), np.array(jobs, np.int64), popped, list(queue), list(running)


def check_lists(ops, allowed):
    kinds, jobs, popped, queue, running = concrete(ops, allowed)
    r = replica(jobs=JOBS)
    got_popped, q, q_back, qlen, o, o_back, olen = _run_list_ops(r, kinds, jobs)
    assert got_popped.tolist() == popped
    assert q.tolist() == queue and q_back.tolist() == queue[::-1] and qlen == len(queue)
    assert o.tolist() == running and o_back.tolist() == running[::-1] and olen == len(running)


@SETTINGS
@given(list_ops)
def test_queue_is_a_deque(ops):
    """queue_push, queue_push_front and queue_pop act as append, appendleft and popleft (links both ways)."""
    check_lists(ops, (PUSH, PUSH_FRONT, POP))


@SETTINGS
@given(list_ops)
def test_running_list_is_an_ordered_dict(ops):
    """run_add and run_remove keep the running jobs in admission order, as a dict keeps its keys."""
    check_lists(ops, (ADD, REMOVE))


@SETTINGS
@given(list_ops)
def test_queue_and_running_list_share_the_links(ops):
    """Jobs moving between the queue and the running list (both linked through nxt/prv) keep both right."""
    check_lists(ops, (PUSH, PUSH_FRONT, POP, ADD, REMOVE, ADD))


def test_list_ops_follow_a_scripted_sequence():
    """A hand-written admission / preemption sequence gives the expected orders."""
    ops = [(PUSH, 1), (PUSH, 2), (PUSH, 3), (POP, -1), (ADD, 1), (POP, -1), (ADD, 2), (REMOVE, 1)]
    ops += [(PUSH_FRONT, 1), (ADD, 5), (REMOVE, 5), (ADD, 4)]
    kinds, jobs = (np.array(c, np.int64) for c in zip(*ops, strict=True))
    popped, q, q_back, qlen, o, o_back, olen = _run_list_ops(replica(jobs=JOBS), kinds, jobs)
    assert popped.tolist() == [1, 2]
    assert q.tolist() == [1, 3] and q_back.tolist() == [3, 1] and qlen == 2
    assert o.tolist() == [2, 4] and o_back.tolist() == [4, 2] and olen == 2


# --- the lazy finish and saturation heaps --------------------------------------------------------

SET, STOP, TAKE = range(3)


@njit
def _lazy_heap_ops(r, kinds, s, f, j, saturation):  # type: ignore[no-untyped-def]
    """SET: decoder j[i] finishes at f[i] (pushed, with saturation step s[i] on the saturation heap);
    STOP: j[i] stops decoding; TAKE: pop the stale entries, then the live top (its job stops). Then
    take all that is left. Returns the live entries taken, the compactions and the largest size."""
    taken = np.empty((kinds.size + r.hf.size, 3), np.int64)
    m = compactions = largest = 0
    for i in range(kinds.size + r.hf.size):
        k = kinds[i] if i < kinds.size else TAKE
        if k == SET:
            r.dec_f[lists.decoder_slot(r, j[i])] = f[i]
            before = r.sn if saturation else r.hn
            if saturation:
                lists.saturation_push(r, s[i], f[i], j[i])
            else:
                lists.finish_push(r, f[i], j[i])
            after = r.sn if saturation else r.hn
            if after <= before:
                compactions += 1
            largest = max(largest, after)
        elif k == STOP:
            _stop(r, j[i])
        elif saturation:
            while r.sn and lists.finish_of(r, r.sj[0]) != r.sf[0]:
                lists.heap_pop(r.ss, r.sf, r.sj, r.sn)
                r.sn -= 1
            if r.sn:
                taken[m, 0], taken[m, 1], taken[m, 2] = r.ss[0], r.sf[0], r.sj[0]
                m += 1
                _stop(r, r.sj[0])
                lists.heap_pop(r.ss, r.sf, r.sj, r.sn)
                r.sn -= 1
        else:
            while r.hn and lists.finish_of(r, r.hj[0]) != r.hf[0]:
                lists.heap_pop(r.hf, r.hj, r.hj, r.hn)
                r.hn -= 1
            if r.hn:
                taken[m, 0], taken[m, 1], taken[m, 2] = 0, r.hf[0], r.hj[0]
                m += 1
                _stop(r, r.hj[0])
                lists.heap_pop(r.hf, r.hj, r.hj, r.hn)
                r.hn -= 1
    return taken[:m], compactions, largest, r.sn if saturation else r.hn


@njit
def _stop(r, j):  # type: ignore[no-untyped-def]
    """Job j stops decoding (if it does)."""
    if r.slot[j] >= 0:
        lists.decoder_free(r, j)


def lazy_model(kinds, s, f, j, seqs, saturation):
    """The same operations on a heapq list that is never compacted."""
    heap, dec_f, taken = [], [-1] * seqs, []
    for i in range(len(kinds) + 2 * seqs + 2):
        k = kinds[i] if i < len(kinds) else TAKE
        if k == SET:
            dec_f[j[i]] = f[i]
            heapq.heappush(heap, (s[i] if saturation else 0, f[i], j[i]))
        elif k == STOP:
            dec_f[j[i]] = -1
        else:
            while heap and dec_f[heap[0][2]] != heap[0][1]:
                heapq.heappop(heap)
            if heap:
                entry = heapq.heappop(heap)
                dec_f[entry[2]] = -1
                taken.append(entry)
    return taken


lazy_ops = st.lists(
    st.tuples(st.sampled_from([SET, SET, SET, STOP, TAKE]), st.integers(0, 6), st.integers(0, 6), st.integers(0, 7)),
    max_size=80,
)


def check_lazy(seqs, ops, saturation):
    """Play `ops` on the kernel's heap and on the model. A job's (finish step, job) always comes
    with the same saturation step (its first), as in the engine: a job that decodes again with a
    finish step it had before restarted at the step it stopped, so its window fills at the same
    step; a stale entry revived by a different saturation step would be taken by heapq but is
    gone from a compacted heap."""
    first_s: dict[tuple[int, int], int] = {}
    ops = [(k, first_s.setdefault((f, j % seqs), s), f, j % seqs) for k, s, f, j in ops]
    kinds, s, f, j = np.array(ops, np.int64).reshape(-1, 4).T.copy()
    r = replica(jobs=seqs, seqs=seqs)
    taken, compactions, largest, left = _lazy_heap_ops(r, kinds, s, f, j, saturation)
    want = lazy_model(kinds.tolist(), s.tolist(), f.tolist(), j.tolist(), seqs, saturation)
    assert [tuple(t) for t in taken.tolist()] == want
    assert largest <= 2 * seqs + 2 and left == 0
    return compactions


@SETTINGS
@given(st.integers(1, 4), lazy_ops)
def test_finish_heap_with_stale_entries_takes_the_live_ones_in_order(seqs, ops):
    """finish_push on a full heap drops its stale entries (`_compact`): the live (finish, job)
    entries still come off in heapq's order, and the heap never outgrows its arrays."""
    check_lazy(seqs, ops, False)


@SETTINGS
@given(st.integers(1, 4), lazy_ops)
def test_saturation_heap_with_stale_entries_takes_the_live_ones_in_order(seqs, ops):
    """The same for saturation_push and its (saturation step, finish, job) entries (`check_lazy`)."""
    check_lazy(seqs, ops, True)


def test_a_full_heap_of_stale_entries_is_compacted():
    """A heap filled with stale entries of one decoder (its finish step moved on) is compacted by
    the next push; the live entries then come off in order."""
    seqs = 2  # heap of 2 * 2 + 2 = 6 entries
    ops = [(SET, 0, f, 0) for f in (9, 8, 7, 6, 5)] + [(SET, 0, 4, 1), (SET, 0, 3, 1), (SET, 0, 12, 0)]
    for saturation in (False, True):
        kinds, s, f, j = (np.array(c, np.int64) for c in zip(*ops, strict=True))
        r = replica(jobs=seqs, seqs=seqs)
        # full after (9..5, 0) and (4, 1): the push of (3, 1) keeps only (5, 0), then adds (3, 1)
        taken, compactions, largest, _ = _lazy_heap_ops(r, kinds[:7], s[:7], f[:7], j[:7], saturation)
        assert compactions == 1 and largest == 6
        assert taken.tolist() == [[0, 3, 1], [0, 5, 0]]
        r = replica(jobs=seqs, seqs=seqs)  # and (12, 0) makes (5, 0) stale
        taken, compactions, largest, _ = _lazy_heap_ops(r, kinds, s, f, j, saturation)
        assert compactions == 1 and largest == 6
        assert taken.tolist() == [[0, 3, 1], [0, 12, 0]]
