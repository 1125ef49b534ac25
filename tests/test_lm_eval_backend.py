"""The lm-eval backend on the real embedded model and local tasks built from real rows of ../shared/data."""
import lm_eval
import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager

from harness.core.batching import SequenceJob
from harness.core.decoding import DECODERS
from harness.core.errors import HarnessError
from harness.core.heads import ExitHead
from integrations.lm_eval.backend import FastDecodeLM
from integrations.lm_eval.tasks import render_tasks

GENERATION_TASK, CHOICE_TASK = "fastdecode_gsm8k", "fastdecode_xsum_choice"
LIMIT, MAX_GEN_TOKS = 2, 16


def adadecode_settings(runner) -> dict:
    """Untrained (identity) exit heads at two layers and γ=0: it exits early at every chance, is often wrong and
    rolls back, so the parity check goes through every path of the decoder."""
    return {"heads": {layer: ExitHead(runner.hidden_size) for layer in (20, 26)}, "gamma": 0.0}


@pytest.fixture(scope="module")
def task_manager(shared_data, tmp_path_factory):
    return TaskManager(include_path=str(render_tasks(shared_data, tmp_path_factory.mktemp("lm_eval_tasks"))),
                       include_defaults=False)


def evaluate(lm: FastDecodeLM, task_manager: TaskManager, tasks: tuple[str, ...] = (GENERATION_TASK, CHOICE_TASK)
             ) -> dict:
    return lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=task_manager,
                                   limit=LIMIT, gen_kwargs={"max_gen_toks": MAX_GEN_TOKS}, apply_chat_template=True,
                                   log_samples=True, confirm_run_unsafe_code=True)


@pytest.fixture(scope="module")
def vanilla_run(runner, task_manager):
    lm = FastDecodeLM(runner=runner, decoder="vanilla")
    return evaluate(lm, task_manager), lm


def responses(results: dict, task: str) -> list:
    return [sample["resps"] for sample in sorted(results["samples"][task], key=lambda s: s["doc_id"])]


def own_logprob(runner, lm: FastDecodeLM, context: str, continuation: str) -> float:
    """The continuation's log-probability from the runner's own forward (the backend runs the HF model's)."""
    context_ids, continuation_ids = lm._encode_pair(context, continuation)
    ids = context_ids + continuation_ids
    with torch.inference_mode():
        logits = runner.forward(ids[:-1], runner.new_cache(len(ids)))[-len(continuation_ids):]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return float(logprobs.gather(-1, torch.tensor(continuation_ids)[:, None]).sum())


def test_simple_evaluate_returns_metrics_and_speed_rows(runner, vanilla_run):
    """The multiple-choice log-likelihoods lm-eval recorded are the runner's own, and acc and acc_norm are the
    accuracies they give (acc_norm divides each by its choice's length in characters, as lm-eval does)."""
    results, lm = vanilla_run
    generation, choice = results["results"][GENERATION_TASK], results["results"][CHOICE_TASK]
    assert 0.0 <= generation["exact_match,last-number"] <= 1.0
    right, right_normed = [], []
    for sample in sorted(results["samples"][CHOICE_TASK], key=lambda s: s["doc_id"]):
        logprobs = [own_logprob(runner, lm, *arguments) for arguments in sample["arguments"]]
        assert [logprob for logprob, _ in sample["filtered_resps"]] == pytest.approx(logprobs, abs=1e-3)
        normed = [lp / len(c) for lp, c in zip(logprobs, sample["doc"]["choices"])]
        right.append(logprobs.index(max(logprobs)) == sample["target"])
        right_normed.append(normed.index(max(normed)) == sample["target"])
    assert len(right) == LIMIT and choice["acc,none"] == pytest.approx(sum(right) / LIMIT)
    assert choice["acc_norm,none"] == pytest.approx(sum(right_normed) / LIMIT)
    rows = lm.request_stats
    assert [r["sample_id"] for r in rows] == list(range(LIMIT))
    for row, sample in zip(rows, sorted(results["samples"][GENERATION_TASK], key=lambda s: s["doc_id"])):
        assert 0 < row["new_tokens"] <= MAX_GEN_TOKS and row["tokens_per_s"] > 0 and row["ttft_s"] > 0
        assert row["text"] == sample["resps"][0][0] and row["decoder"] == "vanilla" and row["parity"] is None


def test_generations_equal_vanilla(runner, task_manager, vanilla_run):
    """On the generation task only: the multiple-choice task is scored by log-likelihood, which runs no decoder,
    so its responses would be equal whatever the decoder did."""
    expected, _ = vanilla_run
    lm = FastDecodeLM(runner=runner, decoder="adadecode", parity=True, **adadecode_settings(runner))
    results = evaluate(lm, task_manager, (GENERATION_TASK,))
    assert responses(results, GENERATION_TASK) == responses(expected, GENERATION_TASK)
    assert [(r["parity"]["match"], r["parity"]["class"]) for r in lm.request_stats] == [(True, "exact")] * LIMIT
    assert all(r["decoder"] == "adadecode" for r in lm.request_stats)
    assert sum(r["stats"]["rejected"] for r in lm.request_stats) > 0  # rollbacks happened


def test_batch_size_in_model_args_decodes_requests_together_with_vanillas_generations(runner, task_manager,
                                                                                       vanilla_run):
    expected, _ = vanilla_run
    lm = FastDecodeLM(runner=runner, decoder="adadecode", parity=True, batch_size="2", **adadecode_settings(runner))
    results = evaluate(lm, task_manager, (GENERATION_TASK,))
    assert responses(results, GENERATION_TASK) == responses(expected, GENERATION_TASK)
    assert [(r["batch"]["size"], r["batch"]["sequences"]) for r in lm.request_stats] == [(2, 2)] * LIMIT
    assert all(r["parity"]["class"] in ("exact", "near_tie") for r in lm.request_stats)


def test_a_batch_size_that_is_not_a_whole_number_is_refused_before_loading():
    with pytest.raises(HarnessError, match="batch_size must be a whole number of sequences, 1 or more, not 'auto'"):
        FastDecodeLM(pretrained="/nonexistent/model.gguf", batch_size="auto")


def request(kind: str, args: tuple) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=args, idx=0, metadata=("unit", 0, 1))


def test_sampling_requests_draw_reproducibly_per_request(runner):
    """do_sample/temperature/top_p/top_k reach the decoder: one seed gives the same texts, another seed others;
    parity (greedy only) is skipped and the row records the settings."""
    kwargs = {"until": [], "max_gen_toks": 8, "do_sample": True, "temperature": 1.5, "top_p": 0.95, "top_k": 50}
    requests = [request("generate_until", (f"Name a colour number {i}:", kwargs)) for i in range(3)]
    first = FastDecodeLM(runner=runner, parity=True, decoder="pld")
    texts = first.generate_until(requests)
    assert FastDecodeLM(runner=runner, decoder="pld").generate_until(requests) == texts
    assert FastDecodeLM(runner=runner, decoder="pld", seed=1).generate_until(requests) != texts
    greedy = FastDecodeLM(runner=runner, decoder="pld").generate_until(
        [request("generate_until", (f"Name a colour number {i}:", {"until": [], "max_gen_toks": 8})) for i in range(3)])
    assert greedy != texts
    row = first.request_stats[0]
    assert row["parity"] is None and row["sampling"] == {"greedy": False, "temperature": 1.5, "top_p": 0.95,
                                                          "top_k": 50, "seed": 0}


def test_sampling_is_refused_by_a_greedy_only_decoder(runner, monkeypatch):
    from decoders.hf_generate import HFGenerate

    monkeypatch.setattr(HFGenerate, "samples", False)  # every registered decoder samples; a plugin may not
    lm = FastDecodeLM(runner=runner, decoder="hf_generate")
    with pytest.raises(HarnessError, match="greedily only"):
        lm.generate_until([request("generate_until", ("Hello", {"until": ["\n"], "do_sample": True}))])


def test_loglikelihoods_agree_with_greedy_generation(runner):
    lm = FastDecodeLM(runner=runner)
    prompt = lm.apply_chat_template([{"role": "user", "content": "Name a primary colour."}])
    assert "<|im_start|>user" in prompt and lm.tokenizer_name
    greedy_text = lm.generate_until([request("generate_until", (prompt, {"until": [], "max_gen_toks": 6}))])[0]
    (greedy_logprob, is_greedy), (other_logprob, other_greedy) = lm.loglikelihood(
        [request("loglikelihood", (prompt, greedy_text)), request("loglikelihood", (prompt, greedy_text + " zebra"))])
    assert is_greedy and not other_greedy and other_logprob < greedy_logprob < 0
    text = "The quick brown fox jumps over the lazy dog."
    (rolling,) = lm.loglikelihood_rolling([request("loglikelihood_rolling", (text,))])
    ((from_empty_context, _),) = lm.loglikelihood([request("loglikelihood", ("", text))])
    assert rolling == pytest.approx(from_empty_context, abs=1e-3)


def test_a_mistyped_decoder_setting_in_model_args_is_refused_before_loading():
    with pytest.raises(HarnessError, match="layerskip has no setting 'speculatio'; its settings: exit_layer"):
        FastDecodeLM(pretrained="/nonexistent/model.gguf", decoder="layerskip", speculatio=2)


def test_lm_eval_classifies_a_divergence_as_a_run_does(runner, shared_data, monkeypatch):
    """A decoder that leaves vanilla's output at token 3, counted as not exact on the runner and with the float32
    threshold raised so that the divergence is a near tie: the backend's parity (margin, threshold, class) equals
    the run's on the same sample."""
    import dataclasses

    from decoders.pld import PromptLookup
    from harness.checks import parity
    from harness.core.decoding import StopCondition
    from harness.run.benchmark import Measurer
    from tasks.base import build_task

    generate = PromptLookup.generate

    def diverging(self, prompt_ids, stop, **kwargs):
        generation = generate(self, prompt_ids, stop, **kwargs)
        tokens = list(generation.tokens)
        tokens[3] += 1
        return dataclasses.replace(generation, tokens=tokens)

    monkeypatch.setattr(PromptLookup, "generate", diverging)
    monkeypatch.setattr(PromptLookup, "exact_on_runner", False)  # else an exact runner allows no near tie
    monkeypatch.setitem(parity.NEAR_TIE_MARGIN, runner.dtype, 1e9)
    task = build_task("xsum", str(shared_data))
    sample = task.samples(1)[0]
    prompt_ids = task.prompt_ids(sample, runner.tokenizer)
    stop = StopCondition(8, frozenset(runner.eos_token_ids), (), runner.tokenizer)
    reference = DECODERS.get("vanilla")(runner).generate(prompt_ids, stop).tokens
    run_row = Measurer(runner, telemetry=False).row("pld", PromptLookup(runner), task, sample, 0, prompt_ids, stop,
                                                    reference)
    lm = FastDecodeLM(runner=runner, decoder="pld", parity=True, telemetry=False)
    backend_row, = lm._generate(task.name, [SequenceJob(prompt_ids, stop)])
    assert run_row["parity"]["class"] == "near_tie" and run_row["parity"]["first_divergence"] == 3
    assert backend_row["parity"] == run_row["parity"]
