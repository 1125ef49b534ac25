"""Trained-head storage and the self-distillation data they are trained on."""
import pytest
import torch

from harness.core.errors import MissingHeads
from harness.core.heads import ExitHead, heads_file, load_heads, save_heads
from harness.core.self_distillation import collect_hidden_states, greedy_continuations


def test_heads_file_location_follows_model_kind_and_task(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path))
    assert heads_file("org/model", "adadecode", "xsum") == tmp_path / "heads" / "org--model" / "adadecode-xsum.safetensors"


def test_save_load_round_trip_keeps_tensors_and_metadata(tmp_path):
    tensors = {"exit.10": torch.randn(4, 4), "exit.20": torch.randn(4, 4)}
    metadata = {"model": "m", "layers": [10, 20], "steps": 3, "data": {"task": "xsum", "rows": [0, 8]}}
    path = save_heads(tmp_path / "sub" / "adadecode-xsum.safetensors", tensors, metadata)
    loaded, meta = load_heads(path)
    assert meta == metadata
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)


def test_missing_heads_say_which_and_the_cli_names_the_training_command(tmp_path):
    from run import cli_message

    with pytest.raises(MissingHeads, match="no trained medusa heads for humaneval") as caught:
        load_heads(tmp_path / "medusa-humaneval.safetensors")
    assert "run.py" not in str(caught.value)  # the core names no command line; the CLI does
    assert cli_message(caught.value).endswith("train them with: python run.py train-heads --decoder medusa "
                                              "--task humaneval")


def test_untrained_exit_head_is_the_logit_lens(runner):
    head = ExitHead(runner.hidden_size)
    hidden = torch.randn(1, 3, runner.hidden_size)
    with torch.no_grad():
        assert torch.allclose(runner.logits(head(hidden)), runner.logits(hidden), atol=1e-5)
    assert [name for name, _ in head.named_parameters()] == ["transform.weight"]


def test_continuations_are_the_models_greedy_tokens_and_states_line_up(runner):
    prompts = [runner.tokenizer("The capital of France is")["input_ids"],
               runner.tokenizer("def add(a, b):\n    return")["input_ids"]]
    continuations = greedy_continuations(runner, prompts, max_new_tokens=6)
    with torch.inference_mode():
        for ids, cont in zip(prompts, continuations):
            alone = runner.model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False)[0, len(ids):]
            assert cont == alone.tolist()[: len(cont)]
    sequences = [p + c for p, c in zip(prompts, continuations)]
    last = runner.n_layers
    states = collect_hidden_states(runner, sequences, [len(p) for p in prompts], [10, last])
    assert states[10].shape == states[last].shape == (sum(map(len, continuations)), runner.hidden_size)
    # The final-layer states, through the final norm and lm head, predict exactly the generated tokens.
    with torch.inference_mode():
        predicted = runner.logits(states[last][None]).argmax(-1).tolist()
    assert predicted == [t for c in continuations for t in c]
