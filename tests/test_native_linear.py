"""The native bf16 linear kernel: close to an fp32 reference, every row's bits independent of the other rows
(odd sizes included, so the padded tails are covered), the fused epilogues, and the oneDNN fallback when it is off."""
import pytest
import torch
import torch.nn.functional as F

from harness.core.backends import native_linear
from harness.core.backends.native_linear import NativeLinear


@pytest.fixture(scope="module")
def native():
    if native_linear.library() is None:
        pytest.skip(f"the native kernel does not run here: {native_linear.unavailable_reason()}")


def linear(n_in: int, n_out: int, bias: bool, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    lin = torch.nn.Linear(n_in, n_out, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(lin.weight.bfloat16().float())
    return lin


@pytest.mark.parametrize("n_in,n_out,bias", [(576, 960, False), (100, 7, True), (33, 130, True)])
def test_rows_match_an_fp32_reference_and_never_depend_on_the_other_rows(native, n_in, n_out, bias):
    lin = linear(n_in, n_out, bias)
    kernel = NativeLinear(lin)
    x = torch.randn(19, n_in).bfloat16()
    reference = F.linear(x.float(), lin.weight, lin.bias)
    together = kernel(x)
    assert together.dtype == torch.bfloat16 and together.shape == (19, n_out)
    assert torch.allclose(together.float(), reference, rtol=2 ** -7, atol=1e-3)
    for m in (1, 2, 3, 4, 5, 8, 17):
        assert torch.equal(kernel(x[:m]), together[:m])
    assert torch.equal(kernel(x[7:8]), together[7:8])  # a row alone, from the middle of a group of four


def test_the_fused_epilogues_are_silu_and_a_product(native):
    gate, up = linear(64, 96, False, 1), linear(64, 96, True, 2)
    x = torch.randn(3, 64).bfloat16()
    silu = NativeLinear(gate).silu(x)
    assert torch.allclose(silu.float(), F.silu(F.linear(x.float(), gate.weight)), rtol=2 ** -7, atol=1e-3)
    product = NativeLinear(up).times(x, silu)
    expected = F.linear(x.float(), up.weight, up.bias) * silu.float()
    assert torch.allclose(product.float(), expected, rtol=2 ** -6, atol=1e-3)


def test_several_linears_side_by_side_are_one_weight(native):
    q, k = linear(64, 32, True, 3), linear(64, 16, False, 4)
    x = torch.randn(2, 64).bfloat16()
    both = NativeLinear(q, k)(x)
    assert torch.equal(both[:, :32], NativeLinear(q)(x)) and torch.equal(both[:, 32:], NativeLinear(k)(x))


def test_turned_off_the_packed_path_keeps_onednn_and_says_why(monkeypatch):
    from harness.core.backends.packed_bf16 import PackedBF16Stack, PackedLinear
    from harness.core.random_models import TINY_QWEN2, random_runner

    monkeypatch.setenv("FASTDECODE_NATIVE", "0")
    native_linear._load.cache_clear()
    try:
        assert native_linear.library() is None and native_linear.unavailable_reason() == "FASTDECODE_NATIVE=0"
        stack = PackedBF16Stack(random_runner(TINY_QWEN2, torch.bfloat16))
        assert stack.linear is PackedLinear
        assert "oneDNN prepacked weights (FASTDECODE_NATIVE=0)" in stack.kernel_path
    finally:
        native_linear._load.cache_clear()
