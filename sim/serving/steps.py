"""The price and the closing of one server's steps and decode spans, and the exact-steps reference.

`Steps` is what a `sim.serving.server.Server` asks when it forms a step or a span (its time,
energy and the clock level the controller holds, `sim.engine.costs`) and what closes it on the
engine, the ledger and the job table; the server keeps the clock and tells its listeners. In the
fast mode a span's time and energy are arithmetic series and a request's share of the shared step
cost is the difference of one running sum taken when it joins and leaves the batch.
`exact_steps=True` prices one step per event and charges every sequence explicitly
(`Steps.exact_step`): the reference the fast mode is tested against.
"""

from __future__ import annotations

from sim.engine.costs import StepCosts, prefill_sums
from sim.engine.jobs import JobTable, Prefill
from sim.engine.ledger import Ledger
from sim.engine.simple import SimpleEngine
from sim.kernel.engine import KernelEngine


class Steps:
    """Prices the steps and spans of one server's `engine` and closes them on it, its `ledger` and
    `jobs`; `exact`: one step per event, each sequence charged explicitly; `record`: each step's
    features logged."""

    def __init__(
        self,
        costs: StepCosts,
        engine: KernelEngine | SimpleEngine,
        ledger: Ledger,
        jobs: JobTable,
        *,
        exact: bool,
        record: bool,
    ) -> None:
        self.costs, self.engine, self.ledger, self.jobs = costs, engine, ledger, jobs
        self.exact, self.record = exact, record
        self.held: tuple[int, float] = (0, 0.0)  # the clock controller's held ladder level, and until when (s)

    def mixed_cost(self, work: Prefill) -> tuple[float, float, float, float]:
        """Time (s), energy (J), `extra` and SM clock (MHz) (`StepCosts.step`) of the step that
        prefills `work`."""
        e = self.engine
        assert e.B or work, "a step with nothing to run"
        budget = self.costs.budget_for(e.queue_len)
        floor = self.hold(self.ledger.now, e.B, e.S, len(work), *prefill_sums(work))
        return self.exact_step(work, budget, floor) if self.exact else self.costs.mixed(e.B, e.S, work, budget, floor)

    def hold(self, now: float, *x: int) -> int:
        """The ladder level the clock controller holds for a step or span with features `x` that
        starts at `now` (s): the one it wants (`StepCosts.wanted_level`), switched to only when the
        last switch is at least `StepCosts.switch_s` old; −1 (it switches at every step) without a
        switch latency or a controller (`sim.kernel.levels.hold`)."""
        c = self.costs
        if c.switch_s <= 0.0 or c.step_budget_s <= 0.0:
            return -1
        level, until = self.held
        want = c.wanted_level(c.budget_for(self.engine.queue_len), *x)
        if want != level and now >= until:
            level, until = self.held = (want, now + c.switch_s)
        return level

    def end_mixed(self, work: Prefill, dt: float, de: float, extra: float, mhz: float) -> tuple[list[int], list[int]]:
        """Close the step that prefilled `work`, of dt s and de J at `mhz` MHz, on the engine and
        the ledger; the jobs that got their first token, and those done."""
        e = self.engine
        B = e.B
        running = B + len(work)
        if self.record:
            tokens, attn = prefill_sums(work)
            self.ledger.record((1, B, e.S, len(work), tokens, attn))
        first, done = e.finish_step(work, extra)
        self.ledger.advance(dt, de, 1, _power(de, dt), running, B + e.prefilled, e.used / e.cap, mhz * dt)
        return first, done

    def end_decode(self, B: int, S: int, k: int, budget: float, floor: int) -> tuple[list[int], list[int]]:
        """Close a span of k plain decode steps of B decoders whose contexts summed to S on the
        engine and the ledger; no first tokens, and the jobs done."""
        if self.exact:
            dt, de, extra, mhz = self.exact_step([], budget, floor)
            peak, mhz_s = _power(de, dt), mhz * dt
        else:
            dt, de, peak, extra, mhz_s = self.costs.decode(B, S, k, budget, floor)
        if self.record:
            self.ledger.record((k, B * k, k * S + B * k * (k - 1) // 2, 0, 0, 0))
        self.ledger.missed += self.costs.missed(B, S, k, budget)
        e = self.engine
        done = e.run_span(k, extra)
        self.ledger.advance(dt, de, k, peak, B, B * k, e.used / e.cap, mhz_s)
        return [], done

    # --- the reference: one step, every sequence charged explicitly ---------------------
    def exact_step(self, work: Prefill, budget: float, floor: int = -1) -> tuple[float, float, float, float]:
        """Features of the coming step from each sequence's own state; charges each its energy:
        its own terms, and an equal share of the step's constant and of the energy a power cap's
        lower clock changed (`StepCosts.step`). Returns (time s, energy J, extra, clock MHz)."""
        jobs, e, ce = self.jobs, self.engine, self.costs.energy_j
        assert isinstance(e, SimpleEngine)
        dec = e.decoder_contexts()
        ctx = sum(c for _, c in dec)
        dt, de, extra, mhz = self.costs.step(len(dec), ctx, len(work), *prefill_sums(work), budget, floor)
        share = ce.const * (1.0 + extra) / (len(dec) + len(work))
        for j, c in dec:
            jobs.energy_j[j] += ce.decode_seqs + ce.decode_ctx * c + share
        for j, m, past in work:
            attn = m * past + m * (m + 1) // 2
            jobs.energy_j[j] += ce.prefill_seqs + ce.prefill_tokens * m + ce.prefill_attn * attn + share
        return dt, de, extra, mhz

    def check_kv(self) -> None:
        """The KV held and the idle cached blocks fit in the cache (checked after every exact step)."""
        e = self.engine
        assert isinstance(e, SimpleEngine)
        assert e.used + len(e.idle_blocks) * e.bu <= e.cap, "cached blocks and KV held exceed the cache"


def _power(energy_j: float, time_s: float) -> float:
    """Mean power (W) of a step; 0 for a step the oracle says takes no time."""
    return energy_j / time_s if time_s > 0.0 else 0.0
