"""What a router reads of a replica: estimates from its step costs and its state at the last
step boundary (pure functions), and the SLO check `energy_aware` makes with them.

`marginal_energy_j` and `shared_above_idle_j` are in J; `ttft_estimate_s` and `tpot_estimate_s`
in s. The compiled routers (`sim.kernel.routers`) compute the same estimates.
"""

from __future__ import annotations

import math

from sim.engine.costs import StepCosts, sequence_cost
from sim.engine.jobs import ServerState
from sim.kernel import routers as compiled
from sim.serving.server import Server


def marginal_energy_j(costs: StepCosts, state: ServerState, n_in: int, n_out: int, own_j: float | None = None) -> float:
    """Energy (J) a replica spends because it also serves this request.

    Its own sequence cost, plus the shared step cost (above idle power) of every step it keeps
    the replica busy beyond the decoders already running: all n_out steps on an idle replica,
    max(0, n_out − steps until the last decoder finishes) on a busy one.
    """
    own = sequence_cost(costs.energy_j, n_in, n_out) if own_j is None else own_j
    busy_for = state.last_finish_steps if state.decoders else 0
    return added_energy_j(own, n_out, busy_for, shared_above_idle_j(costs))


def added_energy_j(own_j: float, n_out: int, busy_for: int, shared_j: float) -> float:
    """A request's own cost plus the shared cost of the steps it keeps a replica busy beyond the
    `busy_for` steps its decoders already will (J)."""
    return own_j + max(0, n_out - busy_for) * shared_j


def shared_above_idle_j(costs: StepCosts) -> float:
    """Energy (J) of one step's shared cost above what the idle GPU would draw over it anyway."""
    return max(costs.energy_j.const - costs.idle_power_w * costs.time_s.const, 0.0)


def ttft_estimate_s(
    costs: StepCosts, state: ServerState, n_in: int, n_out: int, max_batch_size: int, max_num_tokens: int | None
) -> float:
    """Estimated time to first token (s) on a replica: the step under way, then prefill steps for
    the queued prompts and this one (one step per `max_num_tokens`; the queued prompts' attention
    is left out).

    Infinite when the queue and this request would not all be admitted at the next step boundary
    (batch full, or too little free KV cache for their tokens and, a hybrid's, their states): that
    wait depends on completions the state does not predict well, so the router treats it as an SLO
    risk.
    """
    room = max_batch_size - state.running - state.queue_len
    kv = (state.kv_free_tokens, state.queued_kv_tokens, state.queue_len, state.state_kv_tokens)
    if room < 1 or not compiled.kv_holds(*kv, n_in, n_out):
        return math.inf
    c = costs.time_row
    q = state.queue_len
    return float(
        compiled.ttft_s(c, state.decoders, state.decode_ctx, q, state.queued_prompt_tokens, n_in, max_num_tokens or 0)
    )


def tpot_estimate_s(costs: StepCosts, state: ServerState, n_in: int) -> float:
    """Estimated time per output token (s): a decode step with this request added to the batch."""
    return float(compiled.tpot_s(costs.time_row, state.decoders, state.decode_ctx, state.recent_step_s, n_in))


def meets_slo(costs: StepCosts, s: Server, n_in: int, n_out: int, ttft_s: float, tpot_s: float) -> bool:
    """Whether replica s has `tpot_estimate_s` and `ttft_estimate_s` of `s.state()` for this
    request within these bounds (s), its state read from the engine in place."""
    e, c = s.engine, costs.time_row
    if compiled.tpot_s(c, e.B, e.S, s.ledger.step_avg, n_in) > tpot_s:
        return False
    cfg, queue_len = s.config, e.queue_len
    kv = (s.kv_free_tokens(), e.queued_need, queue_len, s.kv.state_tokens)
    if cfg.max_batch_size - e.running - queue_len < 1 or not compiled.kv_holds(*kv, n_in, n_out):
        return math.inf <= ttft_s
    return compiled.ttft_s(c, e.B, e.S, queue_len, e.queued_prompt, n_in, cfg.max_num_tokens or 0) <= ttft_s


IDLE = ServerState(0, 0, 0)  # a replica with nothing to do
