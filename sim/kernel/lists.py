"""The queue, the running list and the lazy heaps of a replica (`sim.kernel.state.Replica`).

The queue (FIFO, with a push to the front for requeued jobs) and the running list (admission
order, removal anywhere) are doubly linked lists through the per-job arrays `nxt` and `prv`: a
job is in at most one of them. The heaps order (finish step, job) and (saturation step, finish
step, job) as Python's heapq orders those tuples.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, inline="always")
def append(prv, nxt, j, head, tail):  # type: ignore[no-untyped-def]
    """Link j at the end of a doubly linked list over `prv`, `nxt`; returns its new (head, tail)."""
    prv[j] = tail
    nxt[j] = -1
    if tail >= 0:
        nxt[tail] = j
    else:
        head = j
    return head, j


@njit(cache=True, inline="always")
def unlink(prv, nxt, j, head, tail):  # type: ignore[no-untyped-def]
    """Take j out of a doubly linked list over `prv`, `nxt`; returns its new (head, tail)."""
    p, n = prv[j], nxt[j]
    if p >= 0:
        nxt[p] = n
    else:
        head = n
    if n >= 0:
        prv[n] = p
    else:
        tail = p
    return head, tail


@njit(cache=True)
def queue_push(r, j):  # type: ignore[no-untyped-def]
    """Job j joins the back of the queue."""
    r.qhead, r.qtail = append(r.prv, r.nxt, j, r.qhead, r.qtail)
    r.qlen += 1


@njit(cache=True)
def queue_push_front(r, j):  # type: ignore[no-untyped-def]
    """Job j goes to the front of the queue."""
    r.prv[j] = -1
    r.nxt[j] = r.qhead
    if r.qhead >= 0:
        r.prv[r.qhead] = j
    else:
        r.qtail = j
    r.qhead = j
    r.qlen += 1


@njit(cache=True)
def queue_pop(r):  # type: ignore[no-untyped-def]
    """The job at the front of the queue, taken off it."""
    j = r.qhead
    r.qhead = r.nxt[j]
    if r.qhead >= 0:
        r.prv[r.qhead] = -1
    else:
        r.qtail = -1
    r.qlen -= 1
    return j


@njit(cache=True)
def run_add(r, j):  # type: ignore[no-untyped-def]
    """Job j joins the running list (admitted last)."""
    r.ohead, r.otail = append(r.prv, r.nxt, j, r.ohead, r.otail)
    r.olen += 1


@njit(cache=True)
def run_remove(r, j):  # type: ignore[no-untyped-def]
    """Job j leaves the running list."""
    r.ohead, r.otail = unlink(r.prv, r.nxt, j, r.ohead, r.otail)
    r.olen -= 1


@njit(cache=True, inline="always")
def _less(a0, a1, a2, b0, b1, b2):  # type: ignore[no-untyped-def]
    return a0 < b0 or (a0 == b0 and (a1 < b1 or (a1 == b1 and a2 < b2)))


@njit(cache=True)
def heap_push(k0, k1, k2, n, a, b, c):  # type: ignore[no-untyped-def]
    """Push (a, b, c) on the heap of n entries in arrays k0, k1, k2 (room assumed)."""
    i = n
    while i > 0:
        p = (i - 1) >> 1
        if not _less(a, b, c, k0[p], k1[p], k2[p]):
            break
        k0[i], k1[i], k2[i] = k0[p], k1[p], k2[p]
        i = p
    k0[i], k1[i], k2[i] = a, b, c


@njit(cache=True)
def heap_pop(k0, k1, k2, n):  # type: ignore[no-untyped-def]
    """Remove the top of the heap of n entries (the caller read it first)."""
    n -= 1
    a, b, c = k0[n], k1[n], k2[n]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and _less(k0[child + 1], k1[child + 1], k2[child + 1], k0[child], k1[child], k2[child]):
            child += 1
        if not _less(k0[child], k1[child], k2[child], a, b, c):
            break
        k0[i], k1[i], k2[i] = k0[child], k1[child], k2[child]
        i = child
    if n > 0:
        k0[i], k1[i], k2[i] = a, b, c


@njit(cache=True)
def finish_of(r, j):  # type: ignore[no-untyped-def]
    """Job j's finish step if it decodes, else −1."""
    s = r.slot[j]
    return r.dec_f[s] if s >= 0 else -1


@njit(cache=True)
def decoder_slot(r, j):  # type: ignore[no-untyped-def]
    """Job j's decoder slot, taken from the free ones if it holds none."""
    s = r.slot[j]
    if s < 0:
        r.nfree -= 1
        s = r.slot[j] = r.free[r.nfree]
    return s


@njit(cache=True)
def decoder_free(r, j):  # type: ignore[no-untyped-def]
    """Job j stops decoding: its slot is free again."""
    s = r.slot[j]
    r.slot[j] = -1
    r.dec_f[s] = -1
    r.free[r.nfree] = s
    r.nfree += 1


@njit(cache=True)
def finish_push(r, f, j):  # type: ignore[no-untyped-def]
    """Decoder j finishes at step f: push (f, j) on the finish heap (stale entries dropped if full)."""
    if r.hn == r.hf.size:
        r.hn = _compact(r, r.hf, r.hj, r.hj, r.hn, False)
    heap_push(r.hf, r.hj, r.hj, r.hn, f, j, j)
    r.hn += 1


@njit(cache=True)
def saturation_push(r, s, f, j):  # type: ignore[no-untyped-def]
    """Decoder j (finishing at step f) fills its window after step s."""
    if r.sn == r.ss.size:
        r.sn = _compact(r, r.ss, r.sf, r.sj, r.sn, True)
    heap_push(r.ss, r.sf, r.sj, r.sn, s, f, j)
    r.sn += 1


@njit(cache=True)
def _compact(r, k0, k1, k2, n, triple):  # type: ignore[no-untyped-def]
    """Drop the stale entries (and repeats) of a full heap: its live entries, popped in order,
    form a sorted array, itself a heap. Returns the new size."""
    keep0, keep1, keep2 = k0[:n].copy(), k1[:n].copy(), k2[:n].copy()
    m, size = 0, n
    for _ in range(n):
        a, b, c = keep0[0], keep1[0], keep2[0]
        heap_pop(keep0, keep1, keep2, size)
        size -= 1
        f, j = (b, c) if triple else (a, b)
        if finish_of(r, j) != f or (m > 0 and k0[m - 1] == a and k1[m - 1] == b and k2[m - 1] == c):
            continue
        k0[m], k1[m], k2[m] = a, b, c
        m += 1
    assert m < k0.size, "more live heap entries than running sequences"
    return m
