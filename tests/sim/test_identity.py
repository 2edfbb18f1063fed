"""A trace's data-set digest (`sim.identity.trace_digest`)."""

from __future__ import annotations

import pandas as pd

from sim.identity import trace_digest
from tests.sim.conftest import trace


def with_blocks(blocks: list[list[int]], size: int | None = None) -> pd.DataFrame:
    frame = trace([(0.0, 1024, 4), (1.0, 1024, 4)])
    frame["hash_ids"] = pd.Series(blocks, dtype="object")
    if size is not None:
        frame.attrs["hash_block_tokens"] = size
    return frame


def test_the_digest_covers_the_prefix_blocks_a_trace_has():
    plain = trace([(0.0, 1024, 4), (1.0, 1024, 4)])
    shared, apart = with_blocks([[7, 8], [7, 9]]), with_blocks([[7, 8], [5, 9]])
    assert len({trace_digest(plain), trace_digest(shared), trace_digest(apart)}) == 3
    assert trace_digest(with_blocks([[70, 80], [70, 90]])) == trace_digest(shared)  # the same sharing
    assert trace_digest(with_blocks([[7, 8], [7, 9]], size=256)) != trace_digest(shared)
    assert trace_digest(plain) == trace_digest(trace([(0.0, 1024, 4), (1.0, 1024, 4)]))
