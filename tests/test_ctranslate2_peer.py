"""The CTranslate2 peer: refused in one line without its package or with an unknown type; where CTranslate2 is
installed, its greedy tokens are vanilla's on the real model and on the random Qwen2 (float32), alone and batched."""
import sys

import pytest

from decoders.ctranslate2_peer import CTranslate2
from harness.core.batching import SequenceJob
from harness.core.decoding import check_settings
from harness.core.errors import HarnessError
from spec_planting import real_prompts, stop_after, vanilla_tokens

NEW_TOKENS = 16


def test_without_the_package_it_names_the_install_command(runner, monkeypatch):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    with pytest.raises(HarnessError, match=r"^the ctranslate2 decoder needs .*: pip install ctranslate2$"):
        CTranslate2(runner)


def test_an_unknown_compute_type_is_refused_before_the_model_loads(monkeypatch):
    monkeypatch.setattr(CTranslate2, "needs_package", None)  # as where it is installed: the package check passes
    with pytest.raises(HarnessError, match="compute_type must be one of auto, float32"):
        check_settings(CTranslate2, "ctranslate2", {"compute_type": "fp8"})


@pytest.fixture(params=["smollm2", "qwen2"])
def model_runner(request, runner, qwen):
    pytest.importorskip("ctranslate2")
    return runner if request.param == "smollm2" else qwen


def test_its_tokens_are_vanillas_alone_and_batched(model_runner, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path))
    decoder = CTranslate2(model_runner)
    assert decoder.compute_type == "float32"
    prompts = real_prompts(model_runner, shared_data, 2)
    expected = [vanilla_tokens(model_runner, prompt, NEW_TOKENS) for prompt in prompts]
    stop = stop_after(model_runner, NEW_TOKENS)
    generation = decoder.generate(prompts[0], stop)
    assert generation.tokens == expected[0]
    assert generation.stats["compute_type"] == "float32"
    batched = decoder.generate_batch([SequenceJob(prompt, stop) for prompt in prompts], size=2)
    assert [result.generation.tokens for result in batched] == expected
    assert {result.batch for result in batched} == {0}


def test_a_run_without_the_package_is_refused_before_the_model_loads(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ctranslate2" else real(name, *a))
    with pytest.raises(HarnessError, match=r"^ctranslate2 needs the ctranslate2 package, which is not installed: "
                                           r"pip install ctranslate2$"):
        check_settings(CTranslate2, "ctranslate2", {})
