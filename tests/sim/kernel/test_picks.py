"""The routers' compiled picks' dispatch (`sim.kernel.picks`): written from the router registry into
the kernel's cache folder, one code per router with a compiled pick."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.kernel import CACHE_DIR, picks
from sim.serving.routers import ROUTERS
from sim.serving.routers.least_tokens import LeastTokens


def test_the_dispatch_lives_in_the_kernel_s_cache_folder_and_codes_every_compiled_pick():
    path = Path(picks._dispatch.__file__)
    assert path.parent == CACHE_DIR
    compiled = {name for name, cls in ROUTERS.items() if cls.kernel_pick is not None}
    assert compiled and set(picks.CODES) == compiled
    assert sorted(picks.CODES.values()) == list(range(len(compiled)))  # distinct picks, distinct codes
    source = path.read_text()
    for name in compiled:
        assert f"from {ROUTERS[name].__module__} import kernel_pick as _pick_{picks.CODES[name]}" in source


def test_only_the_static_round_robin_runs_without_a_compiled_pick():
    assert [name for name, cls in ROUTERS.items() if cls.kernel_pick is None] == ["round_robin"]


def test_a_router_registered_after_the_dispatch_was_written_is_refused_with_what_to_do():
    class Late(LeastTokens):
        name = "late"

    with pytest.raises(ValueError, match=r"router 'late' has no compiled pick.*sim/serving/routers/"):
        picks.code(object.__new__(Late))
    assert picks.code(object.__new__(LeastTokens)) == picks.CODES["least_tokens"]


def test_a_subclass_with_its_own_pick_does_not_inherit_a_compiled_one():
    class Mine(LeastTokens):
        name = "mine"

        def pick(self, n_in, n_out, job=-1):  # type: ignore[no-untyped-def]
            return self.servers[-1]

    class Same(LeastTokens):
        name = "same"

    assert Mine.kernel_pick is None and Same.kernel_pick is LeastTokens.kernel_pick
