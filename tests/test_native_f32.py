"""The native fp32 kernels: a linear close to torch's with every row's bits independent of the other rows (odd
sizes, so the padded tails run), a whole runner close to the eager one, and the eager runner when they are off."""
import pytest
import torch
import torch.nn.functional as F

from harness.core.backends import native_f32
from harness.core.backends.native_f32 import F32Linear
from harness.core.random_models import TINY_QWEN2, random_runner


@pytest.fixture(scope="module")
def native():
    if native_f32.library() is None:
        pytest.skip(f"the native fp32 kernels do not run here: {native_f32.unavailable_reason()}")


@pytest.mark.parametrize("n_in,n_out,bias", [(576, 960, False), (100, 7, True), (33, 130, True)])
def test_rows_match_torch_and_never_depend_on_the_other_rows(native, n_in, n_out, bias):
    torch.manual_seed(0)
    lin = torch.nn.Linear(n_in, n_out, bias=bias)
    kernel = F32Linear(lin)
    x = torch.randn(19, n_in)
    together = kernel(x)
    assert together.shape == (19, n_out)
    assert torch.allclose(together, F.linear(x, lin.weight, lin.bias), rtol=1e-5, atol=1e-5)
    for m in (1, 2, 3, 4, 5, 8, 17):
        assert torch.equal(kernel(x[:m]), together[:m])
    assert torch.equal(kernel(x[7:8]), together[7:8])  # a row alone, from the middle of a group of four


@torch.inference_mode()
def test_the_native_runner_is_the_eager_one_to_rounding(native):
    runner = random_runner(TINY_QWEN2, name="tiny-qwen2")  # q/k/v biases, grouped heads, tied embeddings
    eager = random_runner(TINY_QWEN2, name="tiny-qwen2", runner="eager")  # the same seeded weights, own modules
    assert runner.exact_chunks and runner.kernel_path.startswith("cpu-f32-native")
    assert not eager.exact_chunks and eager.kernel_path.startswith("cpu-eager")
    prompt, chunk = list(range(3, 50)), [7, 9, 11, 13]
    native_logits = runner.forward(chunk, _prefilled(runner, prompt))
    eager_logits = eager.forward(chunk, _prefilled(eager, prompt))
    assert torch.allclose(native_logits, eager_logits, rtol=1e-4, atol=1e-4)


def _prefilled(runner, prompt):
    cache = runner.new_cache(80)
    runner.forward(prompt, cache)
    return cache


def test_turned_off_fp32_runs_the_eager_modules_and_says_so(monkeypatch):
    monkeypatch.setenv("FASTDECODE_NATIVE", "0")
    native_f32._load.cache_clear()
    try:
        runner = random_runner(TINY_QWEN2, name="tiny-qwen2")
        assert native_f32.unavailable_reason() == "FASTDECODE_NATIVE=0"
        assert not runner.exact_chunks and runner.kernel_path.startswith("cpu-eager")
    finally:
        native_f32._load.cache_clear()
