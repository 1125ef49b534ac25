"""lm-evaluation-harness model backend: run any registered decoder inside lm-eval.

    lm_eval.simple_evaluate(model=FastDecodeLM(decoder="vanilla"), tasks=[...])   # Python
    python run.py lm-eval --model_args decoder=vanilla --tasks ...                 # CLI (registers "fastdecode")

`generate_until` runs the chosen decoder (built per lm-eval task) and records one speed row per request, measured
and checked as a run's (`harness.run.benchmark.Measurer`: the rows of `results.jsonl`, with tokens/s, time to first
token, memory, the decoder's stats and, with `parity=true`, token parity against vanilla, each divergence classified
as in runs) in `request_stats` and, when `speed_log` names a file, as JSON lines written as they are produced. It decodes greedily unless a request's gen_kwargs ask for sampling (`do_sample`,
`temperature`, `top_p`, `top_k`; temperature 1 when `do_sample` comes without one): each request then draws from its
own sampler seeded by `seed`, its task, document and position, and parity (which needs greedy decoding) is skipped.
`loglikelihood` and `loglikelihood_rolling` run a plain forward of the HF model.
Requests run one at a time: the decoders are single-sequence.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window, simple_parse_args_string
from tqdm import tqdm

import decoders  # noqa: F401  (registers the decoders)
from harness.core.batching import SequenceJob
from harness.core.decoding import DECODERS, Decoder, StopCondition, check_settings
from harness.core.errors import HarnessError, MissingHeads, SettingError
from harness.core.loading import load_runner
from harness.core.model_runner import ModelRunner
from harness.core.sampling import Sampling
from harness.checks.parity import parity_counts
from harness.run.benchmark import Measurer, empty_row
from harness.schema import REFERENCE_DECODER


@register_model("fastdecode")
class FastDecodeLM(TemplateLM):
    def __init__(self, pretrained: str = "smollm2", decoder: str = REFERENCE_DECODER, dtype: str = "float32",
                 device: str = "auto", parity: bool = False, speed_log: str | None = None, task: str | None = None,
                 max_gen_toks: int = 256, batch_size: int | str = 1, max_batch_size: int | None = None,
                 runner: ModelRunner | None = None, seed: int = 0, telemetry: bool = True,
                 **decoder_settings: Any) -> None:
        """`pretrained`/`dtype`/`device` go to `load_runner` unless a loaded `runner` is passed. `task` names the
        harness task a decoder's trained heads belong to (default: each request's lm-eval task name); the remaining
        keyword arguments (e.g. `heads=...`) are the decoder's settings. `seed` seeds sampling requests; `telemetry`
        measures memory as runs do.
        `batch_size`: generation requests of one task decoded together (`Decoder.generate_batch`), each request's
        row recording its batch; log-likelihoods run one request at a time."""
        super().__init__()
        self.batch_size = batch_size_of(batch_size)
        self.decoder_class = DECODERS.get(decoder)
        decoder_settings = check_settings(self.decoder_class, decoder, decoder_settings)  # before the model loads
        self.runner = runner if runner is not None else load_runner(pretrained, dtype, device)
        self.tokenizer = self.runner.tokenizer
        self._device = self.runner.device
        self.parity = parity
        self.task = task
        self.max_gen_toks = max_gen_toks
        self.seed = seed
        self.decoder_settings = decoder_settings
        self.speed_log = Path(speed_log) if speed_log else None
        self.measurer = Measurer(self.runner, telemetry)
        self.request_stats: list[dict[str, Any]] = []
        self._decoders: dict[tuple[str, str | None], Decoder] = {}

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None):
        """As lm-eval's, except that `model_args` win over the CLI's own settings (its `--device` defaults to
        cuda:0 and would otherwise clash with `device=` in `model_args`)."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict[str, Any] | None = None):
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    # --- tokenizer ---------------------------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self.runner.config.max_position_embeddings

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer(string, add_special_tokens=bool(add_special_tokens))["input_ids"]

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=not add_generation_prompt)

    # --- scoring -----------------------------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        results = []
        for key, context_ids, continuation_ids in tqdm(requests, disable=disable_tqdm, desc="loglikelihood"):
            ids = (context_ids + continuation_ids)[-(self.max_length + 1):]
            with torch.inference_mode():
                logits = self.runner.model(torch.tensor([ids[:-1]], device=self.device), use_cache=False).logits
            logprobs = torch.log_softmax(logits[0, -len(continuation_ids):].float(), dim=-1)
            target = torch.tensor(continuation_ids, device=logprobs.device)
            result = (logprobs.gather(-1, target[:, None]).sum().item(), bool((logprobs.argmax(-1) == target).all()))
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, result)
            results.append(result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        results = []
        for (text,) in tqdm([req.args for req in requests], disable=disable_tqdm, desc="loglikelihood_rolling"):
            windows = [(None, *make_disjoint_window(w)) for w in get_rolling_token_windows(
                self.tok_encode(text), self.prefix_token_id, self.max_length, context_len=1)]
            total = sum(logprob for logprob, _ in self._loglikelihood_tokens(windows, disable_tqdm=True))
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            results.append(total)
        return results

    # --- generation --------------------------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        eos_text = self.tokenizer.decode([self.eot_token_id])
        texts = []
        prepared = []
        for index, request in enumerate(requests):
            context, gen_kwargs = request.args
            settings = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            sampler = self._sampling(settings, gen_kwargs).sampler(request.task_name, request.doc_id, index)
            until = handle_stop_sequences(settings["until"], eos=eos_text)
            max_new = settings["max_gen_toks"]
            prompt_ids = self.tok_encode(context)[-(self.max_length - max_new):]
            stop = StopCondition(max_new, frozenset(self.runner.eos_token_ids), tuple(until), self.tokenizer)
            prepared.append((index, request, SequenceJob(prompt_ids, stop, sampler), until))
        batches = [list(group) for _, group in itertools.groupby(prepared, key=lambda p: p[1].task_name)]
        batches = [group[i:i + self.batch_size] for group in batches for i in range(0, len(group), self.batch_size)]
        with tqdm(total=len(prepared), disable=disable_tqdm, desc="generate_until") as bar:
            for batch in batches:
                task = batch[0][1].task_name
                for (index, request, job, until), fields in zip(batch, self._generate(task, [p[2] for p in batch])):
                    row = empty_row(self.decoder_class.name, request.task_name, request.doc_id, index,
                                    len(job.prompt_ids))
                    row.update(fields)
                    text = postprocess_generated_text(row["text"], until, None)
                    row["text"] = text
                    self._record(row)
                    self.cache_hook.add_partial("generate_until", request.args, text)
                    texts.append(text)
                    bar.update()
        return texts

    def _decoder(self, name: str, task: str | None) -> Decoder:
        task = self.task or task
        if (name, task) not in self._decoders:
            settings = self.decoder_settings if name == self.decoder_class.name else {}
            try:
                self._decoders[name, task] = DECODERS.get(name)(self.runner, task=task, **settings)
            except MissingHeads as exc:
                raise HarnessError(f"{exc}; train them with `python run.py train-heads --decoder {exc.kind} --task "
                                   f"{exc.task or 'TASK'}` (model_args task= names the heads' task, default the "
                                   "lm-eval task's name)") from None
        return self._decoders[name, task]

    def _sampling(self, settings: dict[str, Any], gen_kwargs: dict[str, Any]) -> Sampling:
        """A request's sampling settings from its normalised gen_kwargs (greedy unless it asks to sample)."""
        if not settings["do_sample"]:
            return Sampling()
        return Sampling(temperature=float(gen_kwargs.get("temperature", 1.0)), top_p=float(settings.get("top_p", 1.0)),
                        top_k=int(settings.get("top_k") or 0), seed=self.seed)

    def _generate(self, task: str | None, jobs: list[SequenceJob]) -> list[dict[str, Any]]:
        """Runs the chosen decoder over the jobs (one, or a batch), measured as a run measures it; with `parity`
        and greedy decoding, each job's tokens are checked against vanilla's."""
        name, decoder = self.decoder_class.name, self._decoder(self.decoder_class.name, task)
        references = [self._decoder(REFERENCE_DECODER, task).generate(job.prompt_ids, job.stop).tokens
                      if self.parity and job.sampler is None and name != REFERENCE_DECODER else None for job in jobs]
        if self.batch_size == 1:
            (job,), (reference,) = jobs, references
            measured = [self.measurer.measure(name, decoder, job.prompt_ids, job.stop, job.sampler, reference)]
        else:
            measured, batch = self.measurer.measure_batch(name, decoder, jobs, references, self.batch_size)
            for fields in measured:
                if isinstance(fields, Exception):
                    raise fields
                fields["batch"] = batch
        return [fields | {"sampling": (job.sampler.settings if job.sampler else Sampling()).as_dict()}
                for fields, job in zip(measured, jobs)]

    def _record(self, row: dict[str, Any]) -> None:
        self.request_stats.append(row)
        if self.speed_log is not None:
            self.speed_log.parent.mkdir(parents=True, exist_ok=True)
            with open(self.speed_log, "a", encoding="utf-8") as out:
                out.write(json.dumps(row) + "\n")


def speed_summary(rows: list[dict[str, Any]]) -> str:
    """One line: requests, overall tokens/s and, where checked, the parity classes as runs count them."""
    tokens = sum(r["new_tokens"] for r in rows)
    seconds = sum(r["total_s"] for r in rows)
    counts = parity_counts(rows)
    parity = f", parity {counts['exact']} exact / {counts['near_tie']} near-tie / {counts['mismatch']} mismatch" \
        if sum(counts.values()) else ""
    rate = f"{tokens / seconds:.2f} tokens/s" if seconds > 0 else "no tokens"
    return f"{len(rows)} generation requests, {tokens} tokens, {rate}{parity}"


def batch_size_of(value: int | str) -> int:
    """lm-eval's `batch_size` as a number of sequences (it passes an int or its text; `auto` sizes nothing here)."""
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise SettingError("batch_size", f"must be a whole number of sequences, 1 or more, not {value!r} (fastdecode "
                           "measures each batch size as given)") from None
    if size < 1:
        raise SettingError("batch_size", f"must be 1 or more, not {size}")
    return size
