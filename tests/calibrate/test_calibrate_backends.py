import pytest

from calibrate.backends import make_backend
from calibrate.backends.base import EngineLimits, GenerationResult, OutputLengthError, check_lengths
from calibrate.backends.transformers_backend import TransformersBackend, new_token_counts
from calibrate.models import resolve_model


def test_check_lengths_accepts_exact():
    check_lengths(GenerationResult((4, 4, 4)), num_requests=3, n_out=4)


@pytest.mark.parametrize(
    "lengths, words",
    [((4, 3, 4), "1 of 3 requests generated [3] tokens instead of n_out=4"), ((4, 4), "expected 3")],
)
def test_check_lengths_errors(lengths, words):
    with pytest.raises(OutputLengthError) as e:
        check_lengths(GenerationResult(lengths), num_requests=3, n_out=4)
    assert words in str(e.value)


def test_new_token_counts_finds_early_eos():
    eos, pad = (2,), 0
    assert new_token_counts([[5, 6, 7, 8], [5, 2, 0, 0], [5, 6, 7, 2]], eos, pad) == [4, 2, 4]


def test_make_backend_unknown_name():
    with pytest.raises(ValueError, match="backend='vllm' is unknown"):
        make_backend("vllm", resolve_model("tiny"))


def _needs_torch() -> None:
    """The transformers backend needs torch and transformers (the `hf` extra): skip without them."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny() -> TransformersBackend:
    _needs_torch()
    backend = TransformersBackend(resolve_model("tiny"), device="cpu")
    backend.start(EngineLimits(max_batch_size=2, max_seq_len=64))
    return backend


@pytest.mark.slow
def test_tiny_generates_exact_lengths_in_static_batches(tiny):
    prompts = [[5] * 12 for _ in range(5)]  # 3 batches: 2, 2, 1
    result = tiny.generate(prompts, n_out=7)
    assert result.output_lengths == (7,) * 5
    assert tiny.device_name() == "cpu"


@pytest.mark.slow
def test_tiny_ignores_eos_even_when_the_model_wants_it(tiny):
    """Bias the LM head towards EOS: min_new_tokens still forces exactly n_out tokens."""
    torch = pytest.importorskip("torch")

    head = tiny._model.lm_head
    with torch.no_grad():
        saved = head.weight[2].clone()
        head.weight[2] = 50.0
        try:
            assert tiny.generate([[7] * 4, [9] * 4], n_out=6).output_lengths == (6, 6)
        finally:
            head.weight[2] = saved


@pytest.mark.slow
def test_random_weights_are_seeded():
    _needs_torch()
    a = TransformersBackend(resolve_model("tiny"), device="cpu", seed=3)._load()
    b = TransformersBackend(resolve_model("tiny"), device="cpu", seed=3)._load()
    assert all((x == y).all() for x, y in zip(a.parameters(), b.parameters(), strict=True))
