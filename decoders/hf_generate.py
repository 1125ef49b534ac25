"""transformers' own `model.generate`: a yardstick for the harness's loop and for parity.

It does not use the model-runner core; it lets a user check, in one run, that `vanilla` is neither slower than
nor different from the library they would otherwise call, including its fastest setting: a static cache of fixed
length (`cache="static"`, `max_cache_len`) with the decoding step compiled by `torch.compile`
(`compile="default"`, `"freezing"` — inductor folds the weights and prepacks them for oneDNN —, or
`"cpp_wrapper"`, freezing plus inductor's C++ wrapper, the least Python per step). Compilation happens in the
first generation (the benchmark's warm-up); the fixed cache length keeps later prompts from recompiling it.
With `prompt_lookup_num_tokens` it runs transformers' own prompt lookup decoding (assisted generation with n-gram
candidates, matched up to `max_matching_ngram_size` tokens), the implementation the harness's `pld` is measured
against. Under sampling it runs `generate(do_sample=True)` with the run's temperature, top-p and top-k (transformers'
own warpers and, with prompt lookup, its own acceptance), its global generator seeded from the sample's sampler.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from harness.core.batching import SequenceJob, SequenceResult
from harness.core.decoding import DECODERS, Decoder, Generation, TokenSink, whole_batches
from harness.core.errors import HarnessError

COMPILE_OPTIONS = {"none": None, "default": {}, "freezing": {"freezing": True},
                   "cpp_wrapper": {"freezing": True, "cpp_wrapper": True}}


@DECODERS.register("hf_generate")
class HFGenerate(Decoder):
    """Settings: `cache` ("dynamic" or "static"), `compile` (none, default, freezing, cpp_wrapper; needs the static
    cache), `max_cache_len` (2048: the static cache's fixed length), `prompt_lookup_num_tokens` (None: plain greedy;
    k: prompt lookup drafting k tokens per round), `max_matching_ngram_size` (transformers' default 2; used only
    with prompt lookup)."""
    exact_on_runner = False
    samples = True

    def __init__(self, runner, task=None, cache: str = "dynamic", compile: str = "none", max_cache_len: int = 2048,
                 prompt_lookup_num_tokens: int | None = None, max_matching_ngram_size: int | None = None) -> None:
        super().__init__(runner, task)
        self.check_ranges({"cache": cache, "compile": compile})
        self.cache, self.max_cache_len = cache, max_cache_len
        self.compile_config = None
        if COMPILE_OPTIONS[compile] is not None:
            from transformers import CompileConfig

            options = COMPILE_OPTIONS[compile]
            self.compile_config = CompileConfig(fullgraph=True, dynamic=False, mode=None if options else "default",
                                                options=options or None)
            self.compile_config._compile_all_devices = True  # transformers compiles on CUDA only unless asked
        self._static_caches: dict[int, object] = {}
        self.lookup = {} if prompt_lookup_num_tokens is None else {
            "prompt_lookup_num_tokens": int(prompt_lookup_num_tokens),
            **({} if max_matching_ngram_size is None else {"max_matching_ngram_size": int(max_matching_ngram_size)})}

    @classmethod
    def check_ranges(cls, settings: dict[str, Any]) -> None:
        if settings["cache"] not in ("dynamic", "static"):
            raise HarnessError(f"hf_generate cache must be dynamic or static, got {settings['cache']!r}")
        if settings["compile"] not in COMPILE_OPTIONS:
            raise HarnessError(f"hf_generate compile must be one of {', '.join(COMPILE_OPTIONS)}, got "
                               f"{settings['compile']!r}")
        if settings["compile"] != "none" and settings["cache"] != "static":
            raise HarnessError("hf_generate compile needs cache=static (transformers compiles only static caches)")

    def _cache_kwargs(self, prompt_length: int, max_new_tokens: int, batch: int = 1) -> dict:
        if self.cache == "dynamic":
            return {}
        if prompt_length + max_new_tokens > self.max_cache_len:
            raise HarnessError(f"prompt ({prompt_length}) + max_new_tokens ({max_new_tokens}) exceed hf_generate's "
                               f"static cache ({self.max_cache_len}); raise --set hf_generate.max_cache_len")
        from transformers import StaticCache

        if batch not in self._static_caches:  # one per batch size: a static cache's shape is fixed once it is used
            self._static_caches[batch] = StaticCache(config=self.runner.config, max_cache_len=self.max_cache_len)
        else:
            self._static_caches[batch].reset()
        kwargs = {"past_key_values": self._static_caches[batch]}
        if self.compile_config is not None:
            kwargs["compile_config"] = self.compile_config
        return kwargs

    def _sampling_kwargs(self) -> dict:
        if self.sampler is None:
            return {"do_sample": False}
        settings = self.sampler.settings
        return {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p,
                "top_k": settings.top_k}

    @contextlib.contextmanager
    def _seeded(self) -> Iterator[None]:
        """Under sampling, torch's global generators (which transformers draws from) seeded from the sampler and
        restored afterwards; nothing under greedy decoding."""
        if self.sampler is None:
            yield
            return
        device = self.runner.device
        seed = int(torch.randint(2 ** 62, (), generator=self.sampler.generator))
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield

    def _generate(self, prompt_ids, stop, on_first_token):
        sink = TokenSink(stop)  # generate has no first-token hook, so time to first token stays unmeasured
        sink.add(self._model_generate([prompt_ids], stop)[0])
        # Assisted generation does not report its forward passes; plain greedy makes one per token.
        return Generation(sink.tokens, {} if self.lookup else {"steps": len(sink.tokens)})

    def generate_batch(self, jobs: list[SequenceJob], size: int, refill: bool = False) -> list[SequenceResult]:
        """transformers' own batched `generate`, `size` prompts at a time, left-padded with an attention mask
        (`whole_batches`: static batches, each sequence taking its batch's time; under sampling the batch draws from
        its first sequence's seed). Prompt lookup (assisted generation) takes one sequence at a time in
        transformers, so it runs them in turn."""
        return whole_batches(self, jobs, 1 if self.lookup else size, refill,
                             lambda part: self._model_generate([job.prompt_ids for job in part], part[0].stop))

    def _model_generate(self, prompts: list[list[int]], stop) -> list[list[int]]:
        """`model.generate` over the prompts (left-padded to one length): each prompt's new tokens, uncut."""
        model, device = self.runner.model, self.runner.device
        pad = self.runner.tokenizer.pad_token_id
        pad = pad if pad is not None else min(stop.eos_token_ids, default=0)
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        extra = {"stop_strings": list(stop.stop_strings), "tokenizer": stop.tokenizer} if stop.stop_strings else {}
        with self._seeded():
            out = model.generate(ids, attention_mask=mask, **self._sampling_kwargs(),
                                 max_new_tokens=stop.max_new_tokens, eos_token_id=sorted(stop.eos_token_ids) or None,
                                 pad_token_id=pad, **self._cache_kwargs(width, stop.max_new_tokens, len(prompts)),
                                 **extra, **self.lookup)
        return out[:, width:].tolist()
