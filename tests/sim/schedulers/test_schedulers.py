"""Scheduler plug-ins: the registry, each one's preemption victim, SGLang's admission headroom."""

from __future__ import annotations

import pytest

from sim.config import ServerConfig
from sim.engine.jobs import JobTable
from sim.engine.simple import SimpleEngine
from sim.schedulers import SCHEDULERS, register
from sim.schedulers.base import HOOK_NAMES, Scheduler
from sim.schedulers.sglang import Sglang
from sim.serving.run import simulate
from tests.sim.conftest import flat_kv, toy_oracle, trace

# The request each scheduler preempts in `three_decoders`' state. Every registered scheduler
# must be listed: a new one is added with the victim its engine picks.
VICTIM = {"vllm": "C", "trtllm_max_utilization": "C", "trtllm_no_evict": "C", "sglang": "B"}


def three_decoders(scheduler: str = "vllm") -> SimpleEngine:
    """A (8 in) admitted at step 1; B (7 in), then C (5 in), at step 3; after step 4 A has
    generated 4 tokens, B and C 2 each (KV large enough that nothing waits or is preempted)."""
    jobs = JobTable([8, 7, 5], [50, 50, 50])
    engine = SimpleEngine(jobs, ServerConfig(scheduler=scheduler, block_size=1, max_batch_size=8), flat_kv(10_000))
    engine.enqueue(0)
    for step in range(4):
        if step == 2:
            engine.enqueue(1)
            engine.enqueue(2)
        engine.finish_step(engine.form_step(float(step)))
    return engine


def test_every_registered_scheduler_has_its_victim_pinned():
    assert set(VICTIM) == set(SCHEDULERS)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_each_scheduler_preempts_its_engine_s_victim(name):
    engine = three_decoders()
    assert [engine.N, *(engine.jobs.n_out[j] - (engine.decoders[j] - engine.N) for j in range(3))] == [4, 4, 2, 2]
    victim = SCHEDULERS[name]().victim(engine)
    assert "ABC"[victim] == VICTIM[name]


def test_register_refuses_a_second_scheduler_of_the_same_name():
    with pytest.raises(ValueError, match="registered twice"):

        @register
        class Again(Scheduler):
            name = "vllm"
            description = "a copy"


def test_every_scheduler_names_its_compiled_hooks():
    """A scheduler whose hooks differ from the base class's must name compiled ones of its own,
    in its own module, and the kernel's dispatch calls them."""
    from sim.kernel import hooks

    for name, cls in SCHEDULERS.items():
        own = [h for h in ("never_admitted", "victim", "headroom", "reserve", "preempted") if h in vars(cls)]
        compiled = [h for h in HOOK_NAMES if getattr(cls.compiled, h) is not getattr(Scheduler.compiled, h)]
        assert set(own) <= set(compiled), name
        for h in compiled:
            assert getattr(cls.compiled, h).py_func.__module__ == cls.__module__, (name, h)
        assert (hooks.code(cls()) != 0) == bool(compiled), name


def test_the_hook_dispatch_is_written_from_the_registry():
    """Each scheduler with compiled hooks of its own is one branch of every hook's dispatch."""
    from sim.kernel import hooks

    source = hooks.dispatch_source(hooks._DISTINCT)
    for hook in HOOK_NAMES:
        assert f"def {hook}(" in source
    assert source.count("if r.hooks == 1:") == len(HOOK_NAMES)
    assert "from sim.schedulers.sglang import kernel_headroom" in source
    compile(source, "hook_dispatch.py", "exec")


def test_sglang_s_ratio_falls_to_its_floor_resets_when_idle_and_follows_a_retraction():
    engine = three_decoders("sglang")
    sched = engine.scheduler
    assert isinstance(sched, Sglang)
    init, floor = 0.7, 0.7 * 0.14
    # the engine was idle at its first admission (step 0): the ratio fell for 4 steps since
    assert sched.ratio(engine) == pytest.approx(init - 4 * (init - floor) / 600)
    engine.N += 1000
    assert sched.ratio(engine) == pytest.approx(floor)
    engine.N -= 1000
    # remaining outputs: 46 + 48 + 48 = 142 tokens at the ratio, in 1-token blocks
    assert sched.headroom(engine) == -(-142 * sched.ratio(engine) // 1)
    # a retraction: (4 + 2 + 2 generated + 20 per request) / 150 asked
    sched.preempted(engine)
    assert sched.ratio(engine) == pytest.approx((8 + 60) / 150)


def test_sglang_leaves_room_for_running_outputs_where_vllm_preempts(toy):
    """Two requests whose outputs together outgrow a 40-token cache: vLLM admits both at once and
    preempts one later; SGLang admits the second only once the first's remaining output, at its
    ratio, leaves room, and preempts nothing."""
    rows = [(0.0, 4, 20), (0.0, 4, 20)]
    runs = {}
    for name in ("vllm", "sglang"):
        server = ServerConfig(scheduler=name, block_size=1, kv_capacity_tokens=40, max_batch_size=4)
        runs[name] = [simulate(trace(rows), toy, ServerConfig(**{**server.__dict__, "exact_steps": e})) for e in (0, 1)]
    vllm, sglang = (runs[n][0].requests for n in ("vllm", "sglang"))
    assert vllm["start_s"].tolist() == [0.0, 0.0] and vllm["preemptions"].sum() == 1
    assert sglang["start_s"].iloc[0] == 0.0 and sglang["start_s"].iloc[1] > 0.0
    assert sglang["preemptions"].sum() == 0 and sglang["completed"].all()
    for name, (fast, exact) in runs.items():  # spans end where SGLang's rule may admit: the same steps
        for col in ("start_s", "finish_s", "energy_j"):
            assert fast.requests[col].tolist() == pytest.approx(exact.requests[col].tolist(), rel=1e-12), name


def test_a_preempted_request_is_requeued_at_the_front_or_for_sglang_at_the_back():
    for name in SCHEDULERS:
        engine = three_decoders(name)
        engine.queue.append(0)  # a request already waiting
        engine._preempt(1)
        assert list(engine.queue) == ([1, 0] if SCHEDULERS[name].requeue_front else [0, 1]), name
        assert engine.jobs.preemptions[1] == 1
    assert not SCHEDULERS["sglang"].requeue_front


def test_a_run_with_every_scheduler_serves_every_request():
    rows = [(0.1 * i, 30 + 7 * i, 12 + 5 * (i % 4)) for i in range(30)]
    for name in SCHEDULERS:
        server = ServerConfig(scheduler=name, block_size=4, kv_capacity_tokens=400, max_batch_size=8)
        r = simulate(trace(rows), toy_oracle(), server).requests
        assert r["completed"].all(), name


def test_a_decode_span_ends_where_sglang_s_falling_ratio_admits_the_waiting_request(toy):
    """A alone decodes 30 tokens while B waits for A's remaining output × ratio to leave room; the
    ratio falls each step (over 5 here), so B is admitted long before A finishes, by fast spans as
    by exact steps."""
    rows = [(0.0, 4, 30), (0.0, 10, 10)]
    options = {"decay_steps": 5}
    runs = [
        simulate(
            trace(rows),
            toy,
            ServerConfig(
                scheduler="sglang", scheduler_options=options, block_size=1, kv_capacity_tokens=40, exact_steps=e
            ),
        ).requests
        for e in (False, True)
    ]
    fast, exact = runs
    assert 1.0 < exact["start_s"].iloc[1] < exact["finish_s"].iloc[0] / 2
    for col in ("start_s", "finish_s", "energy_j"):
        assert fast[col].tolist() == pytest.approx(exact[col].tolist(), rel=1e-12)
