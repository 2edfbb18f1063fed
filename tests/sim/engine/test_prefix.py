"""`sim.engine.prefix.PrefixBlocks`: prompts' prefix blocks from a trace's `hash_ids`: dense ids shared
across requests, the cacheable full blocks of each served prompt, summarization children that read
their parents' prompts, and clear errors for a column that is not lists of integer hashes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from sim.config import ServerConfig
from sim.engine.prefix import PrefixBlocks
from sim.serving.run import simulate
from tests.sim.conftest import toy_oracle, trace

# Three prompts: the first two share their first two blocks; the third shares nothing.
LISTS = [[700, 300, 900], [700, 300, 100], [50]]


def blocks(lists: list[list[int]], n_in: list[int], kept: list[int] | None = None, bt: int = 4) -> PrefixBlocks:
    column = pd.Series(lists, dtype="object")
    return PrefixBlocks.from_lists(column, np.array(n_in), None if kept is None else np.array(kept), bt)


def job_ids(b: PrefixBlocks, j: int) -> list[int]:
    """Job j's listed block ids (all of them, cacheable or not)."""
    return b.ids[b.starts[j] : b.starts[j] + b.lengths[j]].tolist()  # type: ignore[no-any-return]


def test_hashes_become_dense_ids_shared_across_requests():
    b = blocks(LISTS, [12, 12, 4])
    # the distinct hashes sorted: 50, 100, 300, 700, 900 → ids 0…4
    assert b.unique == 5
    assert [job_ids(b, j) for j in range(3)] == [[3, 2, 4], [3, 2, 1], [0]]
    assert b.starts.tolist() == [0, 3, 6] and b.lengths.tolist() == [3, 3, 1]
    assert (b.ids.dtype, b.starts.dtype, b.lengths.dtype, b.counts.dtype) == (np.int32, np.int64, np.int32, np.int32)
    assert b.block_tokens == 4 and b.refs is None


def test_counts_are_the_full_blocks_of_the_served_prompt_never_more_than_listed():
    # 12 tokens: 3 full blocks; 11: 2 (the third is partial); 3: none; 100: 25 full, but 1 listed
    b = blocks(LISTS, [12, 11, 3])
    assert b.counts.tolist() == [3, 2, 0] and b.blocks == 5
    assert blocks(LISTS, [100, 8, 100]).counts.tolist() == [3, 2, 1]
    assert blocks(LISTS, [12, 12, 12], bt=8).counts.tolist() == [1, 1, 1]
    # a request without hashes (an empty list or a missing row) has no blocks
    none = blocks([[], None, [5, 6]], [16, 16, 16])  # type: ignore[list-item]
    assert none.lengths.tolist() == [0, 0, 2] and none.counts.tolist() == [0, 0, 2] and none.unique == 2


def test_kept_limits_the_blocks_to_the_prompt_a_policy_left_unchanged():
    b = blocks(LISTS, [12, 12, 12], kept=[5, 100, 0])
    assert b.counts.tolist() == [1, 3, 0]  # 5 tokens kept: 1 full block; more than n_in: n_in's
    # the ids are unchanged: a kept prefix only limits how many of them are cacheable
    assert [job_ids(b, j) for j in range(3)] == [[3, 2, 4], [3, 2, 1], [0]]


def test_summarization_children_read_their_parents_original_prompts():
    b = blocks(LISTS, [12, 12, 4], kept=[4, 12, 4])  # job 0 served truncated: 1 block
    assert b.counts.tolist() == [1, 3, 1]
    e = b.extended(np.array([0, 1, 0]), np.array([12, 9, 100]))
    assert len(e.counts) == 6 and e.unique == b.unique and e.block_tokens == 4
    assert [job_ids(e, j) for j in range(6)] == [[3, 2, 4], [3, 2, 1], [0], [3, 2, 4], [3, 2, 1], [3, 2, 4]]
    # the children's counts come from their own prompts over the parents' full lists, not the
    # parents' kept counts: 12 tokens → 3 blocks, 9 → 2, 100 → all 3 listed
    assert e.counts.tolist() == [1, 3, 1, 3, 2, 3]
    assert b.counts.tolist() == [1, 3, 1]  # the original is not changed


def test_keep_only_lowers_the_cacheable_blocks():
    b = blocks(LISTS, [12, 12, 4])
    b.keep(0, 100)
    assert b.counts.tolist() == [3, 3, 1]  # more than served: unchanged
    b.keep(0, 9)
    assert b.counts[0] == 2
    b.keep(0, 12)
    assert b.counts[0] == 2  # never raised again
    b.keep(1, 3)
    b.keep(2, -5)
    assert b.counts.tolist() == [2, 0, 0] and b.blocks == 2


def test_an_arrow_list_column_gives_the_same_blocks():
    arrow = pd.Series(LISTS, dtype=pd.ArrowDtype(pa.list_(pa.int64())))
    a = PrefixBlocks.from_lists(arrow, np.array([12, 11, 4]), None, 4)
    b = blocks(LISTS, [12, 11, 4])
    for name in ("starts", "lengths", "counts", "ids"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.unique == b.unique


@pytest.mark.parametrize(
    "row",
    [7, "abc", {"a": 1}, float("nan"), ["x"], [[1, 2]]],
    ids=["int", "str", "dict", "nan", "list of str", "nested list"],
)
def test_a_row_that_is_not_a_list_of_integers_is_a_clear_error(row):
    with pytest.raises(ValueError, match="hash_ids must hold one list of integer block hashes per request"):
        blocks([[1, 2], row], [8, 8])


def test_hash_ids_of_another_length_than_the_requests_is_a_clear_error():
    with pytest.raises(ValueError, match="hash_ids has 2 rows, the requests 3"):
        blocks([[1], [2]], [8, 8, 8])


def test_a_list_of_fractional_numbers_is_a_clear_error():
    with pytest.raises(ValueError, match="hash_ids must hold one list of integer block hashes"):
        blocks([[1, 2], [1.5, 2.5]], [8, 8])  # type: ignore[list-item]


def test_an_arrow_column_of_non_lists_is_a_clear_error():
    with pytest.raises(ValueError, match="hash_ids must hold one list of integer block hashes"):
        PrefixBlocks.from_lists(pd.Series(["1", "2"], dtype=pd.ArrowDtype(pa.string())), np.array([8, 8]))


def test_simulate_with_a_non_list_row_names_the_column():
    frame = trace([(0.0, 8, 2), (1.0, 8, 2)])
    frame["hash_ids"] = pd.Series([[1, 2], 7], dtype="object")
    frame.attrs["hash_block_tokens"] = 4
    with pytest.raises(ValueError, match="hash_ids must hold one list of integer block hashes per request"):
        simulate(frame, toy_oracle(), ServerConfig())
    frame["hash_ids"] = pd.Series([[1, 2], [1, 2]], dtype="object")  # the same frame with lists runs
    r = simulate(frame, toy_oracle(), ServerConfig(block_size=4)).requests
    assert r["completed"].all() and r["cached_tokens"].tolist() == [0, 4]  # (8 − 1) // 4 blocks hit
