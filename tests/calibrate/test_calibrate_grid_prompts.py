import numpy as np
import pytest

from calibrate.grid import GpuSettings, Grid, GridError, GridPoint
from calibrate.models import ModelNotFoundError, model_label, read_model_info, resolve_model
from calibrate.prompts import make_prompts, point_rng


def grid(**kw) -> Grid:
    base = dict(name="g", n_in=(8, 16), n_out=(4,), batch_sizes=(2,), num_requests=(4,))
    return Grid(**{**base, **kw})


def test_points_in_measurement_order():
    g = grid(batch_sizes=(1, 2), clocks_mhz=(None, 990))
    pts = g.points()
    assert len(pts) == 2 * 2 * 2
    assert pts[0] == GridPoint(8, 4, 1, 4, GpuSettings())
    assert pts[1] == GridPoint(16, 4, 1, 4, GpuSettings())
    assert pts[2].batch_size == 2
    assert [p.settings.clock_mhz for p in pts] == [None] * 4 + [990] * 4
    assert g.max_seq_len == 20


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"n_in": ()}, "'n_in' is empty"),
        ({"n_out": (0, 4)}, "'n_out' has values that are not positive integers: [0]"),
        ({"power_limits_w": (None, -5.0)}, "'power_limits_w'"),
        ({"repeats": 0}, "repeats must be >= 1"),
        ({"warmup": -1}, "warmup must be >= 0"),
    ],
)
def test_grid_errors_name_the_field(kw, words):
    with pytest.raises(GridError, match=None) as e:
        grid(**kw)
    assert words in str(e.value)


def test_prompts_exact_length_seeded_and_no_special_ids():
    a = make_prompts(5, 33, 16, point_rng(0, 33, 4), exclude={0, 1, 2})
    b = make_prompts(5, 33, 16, point_rng(0, 33, 4), exclude={0, 1, 2})
    c = make_prompts(5, 33, 16, point_rng(1, 33, 4), exclude={0, 1, 2})
    assert a == b and a != c
    assert [len(p) for p in a] == [33] * 5
    ids = np.array(a)
    assert ids.min() >= 3 and ids.max() <= 15
    assert all(isinstance(t, int) for t in a[0])


def test_tiny_model_resolves_and_reads_special_ids():
    path = resolve_model("tiny")
    info = read_model_info(path)
    assert info.vocab_size == 512
    assert info.special_ids == {0, 1, 2}
    assert model_label("tiny") == "tiny"


def test_missing_model_says_nothing_is_downloaded(tmp_path):
    with pytest.raises(ModelNotFoundError, match="never downloads"):
        resolve_model(str(tmp_path / "nope"))
