"""Paths that would crash or mis-measure on a GPU, checked on the CPU: dtype and device of what is built, NVML's
device and errors, the runner's own device for peaks and events, host syncs per decision, sliding windows."""
import shutil
import sys
import threading
import types
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

import harness.measure.telemetry as telemetry
from decoders.adadecode.decoder import AdaDecode
from decoders.self_speculative.decoder import SelfSpeculative
from decoders.vanilla import Vanilla
from harness.core.decoding import StopCondition
from harness.core.errors import HarnessError
from harness.core.heads import ExitHead, load_heads
from harness.core.loading import checkpoint_folder, load_runner
from decoders.self_speculative.skip_search import SkipSearch
from harness.core.random_models import TINY, random_runner
from harness.measure.timing import GenerationTimer

PROMPTS = [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14], [20, 21, 22, 23, 24], [30, 31, 32]]


def test_exit_heads_train_in_bfloat16_with_a_float32_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path))
    runner = random_runner(TINY, torch.bfloat16)
    path = AdaDecode.train_heads(runner, "toy", PROMPTS, exit_layers=[3], steps=3, max_new_tokens=8, candidates=64,
                                 path=tmp_path / "heads.safetensors")
    tensors, meta = load_heads(path)
    assert tensors["exit.3"].dtype == torch.float32 and meta["held_out"]["3"]["kl_after"] >= 0
    decoder = AdaDecode(runner, heads_path=path, gamma=0.0)  # every exit fires: rollbacks in bf16
    stop = StopCondition(12, frozenset(runner.eos_token_ids))
    assert decoder.generate(PROMPTS[0], stop).tokens == Vanilla(runner).generate(PROMPTS[0], stop).tokens


def test_skip_search_targets_live_on_the_runners_device():
    runner = random_runner(TINY, device="meta")  # a device that is not the CPU, with no data to compute on
    search = SkipSearch(runner, [PROMPTS[0] + [40, 41, 42]], [len(PROMPTS[0])])
    cache, _, targets = search.contexts[0]
    assert targets.device == runner.device == cache.k.device


class FakeNvml(types.ModuleType):
    """pynvml with two GPUs; the process sees only the second (CUDA_VISIBLE_DEVICES=1), as torch's cuda:0."""

    class NVMLError(Exception):
        pass

    def __init__(self, utilisation_fails=False, enough_queries=5):
        super().__init__("pynvml")
        self.utilisation_fails = utilisation_fails
        self.memory_queries, self.enough_queries, self.queried_enough = 0, enough_queries, threading.Event()

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        return f"gpu{index}"

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return {"GPU-aaaa": "gpu0", "GPU-bbbb": "gpu1"}[uuid]

    def nvmlDeviceGetMemoryInfo(self, handle):
        self.memory_queries += 1
        if self.memory_queries >= self.enough_queries:
            self.queried_enough.set()
        return types.SimpleNamespace(used=1000 if handle == "gpu1" else 5)

    def nvmlDeviceGetUtilizationRates(self, handle):
        if self.utilisation_fails:
            raise self.NVMLError("Not Supported")
        return types.SimpleNamespace(gpu=50)


def test_nvml_finds_the_gpu_torch_uses_by_its_uuid(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml())
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(uuid="bbbb"))
    assert telemetry.open_nvml(torch.device("cuda", 0)) == "gpu1"  # not NVML's index 0


def test_the_sampler_keeps_sampling_memory_when_utilisation_fails(monkeypatch, capsys):
    nvml = FakeNvml(utilisation_fails=True)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    sampler = telemetry.NvmlSampler("gpu1", interval_s=0.001)
    sampler.start()
    assert nvml.queried_enough.wait(timeout=30), "the sampler stopped querying memory"  # no fixed sleep: no race
    samples = sampler.stop()  # joins the thread, which appends the sample it was taking first
    assert len(samples) >= nvml.enough_queries and all(s[1] == 1000 and s[2] is None for s in samples)
    assert capsys.readouterr().err.count("utilisation query failed") == 1


class CudaCalls:
    """Records the device argument of the torch.cuda calls the probe and the timer make."""

    def __init__(self, monkeypatch):
        self.devices = []
        for name in ("synchronize", "reset_peak_memory_stats", "max_memory_allocated", "current_stream"):
            monkeypatch.setattr(torch.cuda, name, self._recorder(name))
        monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
        monkeypatch.setattr(torch.cuda, "device", lambda device: self._context(device))
        monkeypatch.setattr(torch.cuda, "Event", lambda enable_timing: types.SimpleNamespace(
            record=lambda stream: None, elapsed_time=lambda other: 1.0))

    def _recorder(self, name):
        def call(device=None):
            self.devices.append((name, device))
            return 0

        return call

    def _context(self, device):
        self.devices.append(("device", device))
        return nullcontext()


def test_peaks_and_events_use_the_runners_device_not_gpu_0(monkeypatch):
    calls = CudaCalls(monkeypatch)
    cuda1 = torch.device("cuda", 1)
    probe = telemetry.MemoryProbe(cuda1)
    monkeypatch.setattr(probe, "sampler", None)
    probe.start()
    probe.stop()
    timer = GenerationTimer(cuda1)
    timer.start()
    timer.first_token()
    timer.stop()
    assert calls.devices and all(device == cuda1 for _, device in calls.devices), calls.devices


class SyncCounter:
    """Counts reads of tensor values on the host (each a device sync on a GPU)."""

    def __init__(self, monkeypatch):
        self.count = 0
        for name in ("item", "tolist", "__int__", "__float__", "__bool__", "__index__"):
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counted(original))

    def _counted(self, original):
        def method(tensor, *args):
            self.count += 1
            return original(tensor, *args)

        return method


def test_an_adadecode_exit_test_syncs_once(monkeypatch):
    runner = random_runner(TINY)
    decoder = AdaDecode(runner, heads={3: ExitHead(TINY["hidden_size"])}, gamma=0.0, candidates=[1, 2, 3, 4])
    decoder._prepare_vocabulary(PROMPTS[0])
    hidden = torch.randn(1, 1, TINY["hidden_size"])
    counter = SyncCounter(monkeypatch)
    token = decoder.exit_token(3, hidden, 6)
    assert counter.count == 1 and token is not None


def test_a_self_speculative_draft_decision_syncs_once(monkeypatch):
    runner = random_runner(TINY)
    decoder = SelfSpeculative(runner, skip_attention=[1], skip_mlp=[2])
    logits = torch.randn(1, TINY["vocab_size"])
    counter = SyncCounter(monkeypatch)
    token, probability = decoder._propose(logits, 10, 0)
    assert counter.count == 1
    assert token == int(logits[0].argmax()) and probability == pytest.approx(float(logits[0].softmax(-1).max()))


def _mistral_folder(tmp_path, window):
    from transformers import MistralConfig, MistralForCausalLM

    folder = tmp_path / f"mistral-{window}"
    config = MistralConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=window)
    MistralForCausalLM(config).save_pretrained(folder)
    for tokenizer_file in Path(checkpoint_folder("smollm2")).glob("*token*"):
        shutil.copy(tokenizer_file, folder / tokenizer_file.name)
    return str(folder)


def test_a_sliding_window_model_is_refused_unless_the_run_fits_in_the_window(tmp_path):
    folder = _mistral_folder(tmp_path, 64)
    with pytest.raises(HarnessError, match="sliding-window attention \\(64 positions\\).*up to 100 positions"):
        load_runner(folder, "float32", "cpu", max_context=100)
    with pytest.raises(HarnessError, match="sliding-window"):
        load_runner(folder, "float32", "cpu")
    assert load_runner(folder, "float32", "cpu", max_context=lambda tokenizer: 60).n_layers == 2
