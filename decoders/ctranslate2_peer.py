"""CTranslate2's greedy generation: a dedicated C++ inference engine as a yardstick for `vanilla`'s speed.

Like `hf_generate` it does not use the model-runner core: it converts the run's checkpoint with CTranslate2's own
converter (once, into `<cache>/ctranslate2/`) and decodes with its `Generator` in a process of its own (`ctranslate2_worker.py`: its
OpenMP runtime would fight torch's for the cores), one token at a time so that stop strings end it as they end
every other decoder. CTranslate2 is optional (`pip
install ctranslate2`) and computes in its own types: `compute_type="auto"` takes the run's dtype where CTranslate2
has it on the device and float32 otherwise (its CPU builds have no bfloat16), and the generation's stats name the
type that ran. It decodes greedily only.
"""
from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

import torch

from harness.core.batching import SequenceJob, SequenceResult
from harness.core.decoding import DECODERS, Decoder, Generation, TokenSink, whole_batches
from harness.core.errors import HarnessError
from harness.core.loading import cache_dir

COMPUTE_TYPES = ("auto", "float32", "bfloat16", "float16", "int8", "int8_float32", "int8_float16", "int8_bfloat16",
                 "int16")
WORKER = Path(__file__).with_name("ctranslate2_worker.py")
TORCH_TYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _ctranslate2():
    try:
        import ctranslate2
    except ImportError:
        raise HarnessError("the ctranslate2 decoder needs the ctranslate2 package: pip install ctranslate2") from None
    return ctranslate2


@DECODERS.register("ctranslate2")
class CTranslate2(Decoder):
    """Settings: `compute_type` (auto: the run's dtype where CTranslate2 has it, else float32; or one of
    CTranslate2's types, e.g. float32, int8)."""
    exact_on_runner = False
    needs_package = "ctranslate2"

    def __init__(self, runner, task=None, compute_type: str = "auto") -> None:
        super().__init__(runner, task)
        self.tokenizer = runner.tokenizer
        ct2 = _ctranslate2()
        device = "cuda" if runner.device.type == "cuda" else "cpu"
        supported = ct2.get_supported_compute_types(device)
        self.compute_type = compute_type
        if compute_type == "auto":
            self.compute_type = TORCH_TYPES.get(runner.dtype, "float32")
            self.compute_type = self.compute_type if self.compute_type in supported else "float32"
        if self.compute_type not in supported:
            raise HarnessError(f"ctranslate2 has no compute_type {compute_type!r} on {device}; it has "
                               f"{', '.join(sorted(supported))}")
        threads = torch.get_num_threads() if device == "cpu" else 0
        self._worker = subprocess.Popen(
            [sys.executable, str(WORKER), str(self._converted(ct2)), device, str(runner.device.index or 0),
             self.compute_type, str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=tempfile.TemporaryFile(), text=True, bufsize=1)
        weakref.finalize(self, self._worker.kill)
        self._answer()  # {"ready": true} once the model is loaded

    @classmethod
    def check_ranges(cls, settings: dict) -> None:
        if settings["compute_type"] not in COMPUTE_TYPES:
            raise HarnessError(f"ctranslate2 compute_type must be one of {', '.join(COMPUTE_TYPES)}, got "
                               f"{settings['compute_type']!r}")

    def _converted(self, ct2) -> Path:
        """The run's model, as loaded (weights in the run's dtype), in CTranslate2's format: converted once per
        checkpoint folder and dtype and kept under the cache (a model with no folder, such as a random one,
        anew into a folder kept as long as the decoder)."""
        runner = self.runner
        name = getattr(runner.config, "_name_or_path", "")
        if name and Path(name).is_dir():
            key = hashlib.sha1(f"{Path(name).resolve()}:{runner.dtype}".encode()).hexdigest()[:12]
            target = cache_dir() / "ctranslate2" / f"{runner.name.replace('/', '--') or 'model'}-{key}"
        else:
            self._scratch = tempfile.TemporaryDirectory()
            target = Path(self._scratch.name) / "model"
        if (target / "model.bin").exists():
            return target

        class FromRunner(ct2.converters.TransformersConverter):
            def load_model(self, model_class, path, **kwargs):
                return copy.deepcopy(runner.model)  # the converter takes modules apart as it reads them

            def load_tokenizer(self, tokenizer_class, path, **kwargs):
                return runner.tokenizer

        with tempfile.TemporaryDirectory() as config_folder:
            runner.config.save_pretrained(config_folder)
            FromRunner(config_folder).convert(str(target), quantization="float32", force=True)
        return target

    def _tokens(self, prompt_ids: list[int]) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(prompt_ids)

    def _ask(self, request: dict) -> None:
        self._worker.stdin.write(json.dumps(request) + "\n")

    def _answer(self) -> dict:
        line = self._worker.stdout.readline()
        if not line:
            self._worker.stderr.seek(0)
            error = self._worker.stderr.read().decode(errors="replace").strip().splitlines() or ["no output"]
            raise HarnessError(f"the ctranslate2 worker stopped: {error[-1]}")
        return json.loads(line)

    def _options(self, stop) -> dict:
        return {"max_length": stop.max_new_tokens, "end": sorted(stop.eos_token_ids)}

    def _generate(self, prompt_ids, stop, on_first_token):
        sink = TokenSink(stop, on_first_token)
        if not sink.done:
            self._ask({"prompt": self._tokens(prompt_ids), **self._options(stop)})
            while "id" in (answer := self._answer()):
                self._worker.stdin.write("0\n" if sink.add([answer["id"]]) else "1\n")
        return Generation(sink.tokens, {"steps": len(sink.tokens), "compute_type": self.compute_type})

    def generate_batch(self, jobs: list[SequenceJob], size: int, refill: bool = False) -> list[SequenceResult]:
        """CTranslate2's own batched greedy generation, `size` prompts at a time (`whole_batches`)."""
        def generate_many(part: list[SequenceJob]) -> list[list[int]]:
            self._ask({"batch": [self._tokens(job.prompt_ids) for job in part], **self._options(part[0].stop)})
            return self._answer()["ids"]
        return whole_batches(self, jobs, size, refill, generate_many)
