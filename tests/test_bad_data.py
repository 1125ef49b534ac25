"""Bad data is a one-line error naming the fix, before the model loads."""
import pytest
from test_bench_cli import NO_MODEL, one_line_error, run_cli

from harness.core.errors import HarnessError
from tasks.sources import read_jsonl


def test_a_non_utf8_data_file_names_its_line_and_the_fix(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_bytes(b'{"question": "a"}\n{"question": "caf\xe9"}\n')
    with pytest.raises(HarnessError, match=r"line 2: not UTF-8 text \(byte 0xe9 at column 18\); save the file as UTF-8"):
        read_jsonl(path)


def test_a_data_path_that_does_not_exist_is_refused_also_for_humaneval(tmp_path):
    one_line_error(run_cli("--tasks", "humaneval", "--limit", "1", "--data", str(tmp_path / "nowhere")),
                   "nowhere does not exist", "--data ../shared/data")


def test_a_data_folder_without_the_mbpp_rows_humaneval_trains_on_is_refused_before_the_model_loads(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    one_line_error(run_cli("--tasks", "humaneval", "--limit", "1", "--data", str(tmp_path), *NO_MODEL),
                   f"{tmp_path}/mbpp/test.jsonl not found", "humaneval's heads train on MBPP's rows")
