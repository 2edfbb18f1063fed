"""A replica's state as one typed record (`Replica`), and its construction from named settings.

Counters are int64 (tokens, steps, KV units) or float64 (s, J, the running share sum with its
Neumaier compensation). A job belongs to one replica at a time, so the queue and the running
list link jobs through two per-job arrays (`nxt`, `prv`); a decoder holds a slot (`slot[j]`, −1
for a job that does not decode; `free` the slots not held) of the arrays of its finish step,
block phase and block weight (`dec_f`, `dec_key`, `dec_w`): 12 bytes a job in all.
The finish heap (`hf`, `hj`) and the window-saturation heap (`ss`, `sf`, `sj`) are lazy: an
entry whose job no longer decodes with that finish step is stale and skipped. In a routed fleet
(`sim.kernel.fleet`) the `w_*` fields hold the wait under way (`phase`: a decode span of `w_B`
decoders whose contexts summed to `w_S` from clock `w_t0`, `w_k` steps; or a step of `w_dt` s and
`w_de` J at SM clock `w_mhz` ending at `w_end`; `w_floor` the ladder level a clock controller
held for the span, −1 if none), `env_end` and `eid` its end on the event clock and its sequence number.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.experimental import structref

from sim.kernel.linear import COLUMNS

i64, f64, i32, i8 = types.int64, types.float64, types.int32, types.int8
A_i64, A_f64, A_i32, A_i8 = i64[::1], f64[::1], i32[::1], i8[::1]

# Settings, read once at construction from `ints` and `floats` in this order (`new_replica`).
INT_SETTINGS = (
    "cap",  # KV units of the cache
    "bs",  # block size (tokens)
    "full",  # units per block of the full-attention layers
    "wunits",  # units per block of the sliding-window layers
    "wblocks",  # blocks a window layer keeps
    "fit",  # the longest sequence the cache holds (tokens)
    "max_seqs",  # sequences per step
    "max_tokens",  # tokens per step
    "chunked",  # chunked prefill (0/1)
    "reserve",  # n_in + n_out of KV reserved at admission (0/1)
    "static",  # static batching (0/1)
    "requeue_front",  # a preempted job goes back to the queue's front (0/1)
    "admit_after",  # admissions in a step that preempted (0/1)
    "hooks",  # the scheduler's code in the compiled hooks' dispatch (`sim.kernel.hooks.code`)
    "pc",  # prefix caching (0/1, `sim.kernel.prefix`)
    "hb",  # tokens per prefix block (a multiple of bs)
    "bu",  # KV units per prefix block
    "sunits",  # units of state every sequence holds whatever its length (a hybrid's Mamba state)
)
FLOAT_SETTINGS = (
    "limit",
    "tau",
    "switch",
)  # the power cap (W), a clock controller's step budget and switch latency (s)
_STATE_INTS = (
    "B", "N", "S", "used", "pending", "queued_need", "queued_prompt", "fsum", "fmax", "preemptions",
    "prefilled", "qhead", "qtail", "qlen", "ohead", "otail", "olen", "part_j", "part_done",
    "part_target", "ptotal", "hn", "sn", "nwork", "ndone", "nfirst", "nlog", "nrows", "fi",
    "phase", "w_B", "w_S", "w_k", "eid", "idle", "interrupted", "nfree", "f0", "cidle", "lru_h", "lru_t",
    "evicted", "missed", "held", "w_floor",
)  # fmt: skip
_STATE_FLOATS = (
    "share",
    "share_c",
    "t",
    "tc",
    "step_avg",
    "peak_w",
    "w_t0",
    "w_dt",
    "w_de",
    "w_extra",
    "w_mhz",
    "w_tau",
    "held_until",
    "w_end",
    "env_end",
)
_ARRAYS = (
    ("lt", f64[:, ::1]), ("le", f64[:, ::1]), ("ct", A_f64), ("ce", A_f64), ("weights", A_i64),
    ("hf", A_i64), ("hj", A_i64), ("ss", A_i64),
    ("sf", A_i64), ("sj", A_i64), ("work_j", A_i64), ("work_m", A_i64), ("work_past", A_i64),
    ("done", A_i64), ("first", A_i64), ("plog", i64[:, ::1]), ("rows_f", f64[:, ::1]), ("rows_i", i64[:, ::1]),
    ("n_in", A_i32), ("n_out", A_i32), ("generated", A_i32), ("share_of", A_f64), ("status", A_i8),
    ("reason", A_i8), ("first_s", A_f64), ("finish_s", A_f64), ("admit_s", A_f64), ("chunks", A_i32),
    ("nxt", A_i32), ("prv", A_i32), ("slot", A_i32), ("dec_f", A_i64), ("dec_key", A_i64), ("dec_w", A_i64),
    ("free", A_i64), ("hook_i", A_i64), ("hook_f", A_f64),
    ("ft", A_f64), ("fj", A_i64), ("b_start", A_i64), ("b_count", A_i32), ("b_ids", A_i32), ("refs", A_i32),
    ("cached", A_i64), ("cached_pairs", A_f64), ("c_ref", A_i32), ("c_in", A_i8), ("c_prev", A_i32), ("c_next", A_i32),
)  # fmt: skip
FIELDS = (
    [(n, i64) for n in INT_SETTINGS + _STATE_INTS] + [(n, f64) for n in FLOAT_SETTINGS + _STATE_FLOATS] + list(_ARRAYS)
)


@structref.register
class ReplicaType(types.StructRef):
    def preprocess_fields(self, fields):  # type: ignore[no-untyped-def]
        return tuple((name, types.unliteral(t)) for name, t in fields)


class Replica(structref.StructRefProxy):
    """A replica's state, passed to the compiled functions (its fields are read there)."""


structref.define_boxing(ReplicaType, Replica)
REPLICA = ReplicaType(FIELDS)

PLOG_KINDS = ("decoder", "partial", "requeue")  # preemption log rows: (job, kind, tokens)
DECODER, PARTIAL, REQUEUE = 0, 1, 2


@njit(cache=True)
def new_replica(ints, floats, hook_i, hook_f, lt, le, seqs, log_rows, span_rows, jobs, links, prefix, feed_t, feed_j):  # type: ignore[no-untyped-def]
    """A replica with settings `ints` and `floats` (`INT_SETTINGS`, `FLOAT_SETTINGS`), its
    scheduler hooks' own settings and state (`hook_i`, `hook_f`: `sim.kernel.hooks`), step
    coefficients `lt` (s) and `le` (J) by clock (`sim.kernel.costs`; row 0 its own clock's: `ct`,
    `ce`), room for `seqs` running sequences, the job columns `jobs`, the per-job `links` (nxt,
    prv, slot), the jobs' prompt blocks `prefix` (start, count and ids, references and cached
    tokens and their attention pairs per job, distinct blocks: `sim.kernel.prefix`) and its feed."""
    if lt.shape[1] != COLUMNS or le.shape[1] != COLUMNS:  # six coefficients, expert reads, prefill overlap
        raise ValueError(
            f"step coefficient rows need {COLUMNS} columns (sim.kernel.linear.COLUMNS; build them with StepCosts)"
        )
    r = structref.new(REPLICA)
    r.cap, r.bs, r.full, r.wunits, r.wblocks, r.fit = ints[0], ints[1], ints[2], ints[3], ints[4], ints[5]
    r.max_seqs, r.max_tokens, r.chunked, r.reserve, r.static = ints[6], ints[7], ints[8], ints[9], ints[10]
    r.requeue_front, r.admit_after, r.hooks = ints[11], ints[12], ints[13]
    r.pc, r.hb, r.bu, r.sunits = ints[14], ints[15], ints[16], ints[17]
    r.limit, r.tau, r.switch = floats[0], floats[1], floats[2]
    r.hook_i, r.hook_f = hook_i, hook_f
    r.B = r.N = r.S = r.used = r.pending = r.queued_need = r.queued_prompt = r.fsum = r.fmax = 0
    r.preemptions = r.prefilled = r.qlen = r.olen = r.part_done = r.part_target = r.ptotal = 0
    r.hn = r.sn = r.nwork = r.ndone = r.nfirst = r.nlog = r.nrows = r.fi = 0
    r.phase = r.w_B = r.w_S = r.w_k = r.interrupted = r.f0 = r.missed = r.held = 0
    r.w_floor = -1
    r.held_until = 0.0
    r.idle, r.eid = 1, -1
    r.w_t0 = r.w_dt = r.w_de = r.w_extra = r.w_mhz = r.w_tau = r.w_end = r.env_end = 0.0
    r.qhead = r.qtail = r.ohead = r.otail = r.part_j = -1
    r.share = r.share_c = r.t = r.tc = r.step_avg = r.peak_w = 0.0
    r.lt, r.le, r.ct, r.ce = lt, le, lt[0], le[0]
    r.weights = np.zeros(r.bs, np.int64)
    heap = 2 * seqs + 2  # live entries are at most the decoders (stale ones are dropped when full)
    r.hf, r.hj = np.zeros(heap, np.int64), np.zeros(heap, np.int64)
    r.ss, r.sf, r.sj = np.zeros(heap, np.int64), np.zeros(heap, np.int64), np.zeros(heap, np.int64)
    r.work_j, r.work_m = np.zeros(seqs + 1, np.int64), np.zeros(seqs + 1, np.int64)
    r.work_past = np.zeros(seqs + 1, np.int64)
    r.done, r.first = np.zeros(seqs + 1, np.int64), np.zeros(seqs + 1, np.int64)
    r.plog = np.zeros((log_rows, 3), np.int64)
    r.rows_f, r.rows_i = np.zeros((span_rows, 6)), np.zeros((span_rows, 3), np.int64)
    n_in, n_out, generated, share_of, status, reason, first_s, finish_s, admit_s, chunks = jobs
    r.n_in, r.n_out, r.generated, r.share_of, r.status, r.reason = n_in, n_out, generated, share_of, status, reason
    r.first_s, r.finish_s, r.admit_s, r.chunks = first_s, finish_s, admit_s, chunks
    r.nxt, r.prv, r.slot = links
    r.dec_f = np.full(seqs + 1, -1, np.int64)
    r.dec_key, r.dec_w = np.zeros(seqs + 1, np.int64), np.zeros(seqs + 1, np.int64)
    r.free = np.arange(seqs + 1)  # decoder slots not held, a stack
    r.nfree = seqs + 1
    r.ft, r.fj = feed_t, feed_j
    r.b_start, r.b_count, r.b_ids, r.refs, r.cached, r.cached_pairs, unique = prefix
    blocks = unique if r.pc else 0
    r.c_ref, r.c_in = np.zeros(blocks, np.int32), np.zeros(blocks, np.int8)
    r.c_prev, r.c_next = np.full(blocks, -1, np.int32), np.full(blocks, -1, np.int32)
    r.cidle = r.evicted = 0
    r.lru_h = r.lru_t = -1
    return r


@njit(cache=True)
def clock(r):  # type: ignore[no-untyped-def]
    """(clock s, its compensation, recent step time s, peak step power W, feed position, span
    rows waiting, idle, steps over the controller's budget since the last call (then cleared))."""
    missed, r.missed = r.missed, 0
    return r.t, r.tc, r.step_avg, r.peak_w, r.fi, r.nrows, r.idle, missed


@njit(cache=True)
def counters(r):  # type: ignore[no-untyped-def]
    """The replica's engine counters, named by `COUNTERS`."""
    return (
        r.B, r.N, r.S, r.used, r.pending, r.queued_need, r.queued_prompt, r.fsum, r.fmax, r.share,
        r.share_c, r.preemptions, r.prefilled, r.qlen, r.olen,
    )  # fmt: skip


COUNTERS = (
    "B", "N", "S", "used", "pending", "queued_need", "queued_prompt", "fsum", "fmax", "share", "share_c",
    "preemptions", "prefilled", "queue_len", "running",
)  # fmt: skip


@njit(cache=True, inline="always")
def log_full(r):  # type: ignore[no-untyped-def]
    """Whether the preemption log may not hold another step's: a step preempts at most every
    running sequence, logging two rows each (`sim.kernel.admission._requeue` and the preemption)."""
    return r.nlog > r.plog.shape[0] - 2 * r.work_j.size


@njit(cache=True)
def set_feed(r, feed_t, feed_j, first):  # type: ignore[no-untyped-def]
    """Jobs `feed_j` arriving at `feed_t` (s, sorted): all the replica's jobs (`run_alone`); an
    empty `feed_j` stands for the consecutive jobs from `first` (a feed of `range`)."""
    r.ft, r.fj, r.fi, r.f0 = feed_t, feed_j, 0, first


@njit(cache=True)
def take_rows(r):  # type: ignore[no-untyped-def]
    """The span rows waiting (float and integer columns), taken out of the buffer: views of it,
    to be copied out before the replica runs again."""
    n = r.nrows
    r.nrows = 0
    return r.rows_f[:n], r.rows_i[:n]
