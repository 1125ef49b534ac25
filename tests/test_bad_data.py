"""Bad data is a one-line error naming the fix, before the model loads."""
import json

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


@pytest.mark.parametrize("question, held", [(None, "null"), (["What is", "1 + 1?"], "a list"), (7, "a number")])
def test_a_field_of_the_wrong_type_names_file_row_and_field_instead_of_sending_its_repr(tmp_path, question, held):
    (tmp_path / "gsm8k").mkdir()
    rows = [{"question": "What is 1 + 1?", "answer": "#### 2"}, {"question": question, "answer": "#### 2"}]
    (tmp_path / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    one_line_error(run_cli("--tasks", "gsm8k", "--data", str(tmp_path), "--train-rows", "0", *NO_MODEL),
                   "gsm8k/test.jsonl line 2: field 'question' holds " + held + ", not text", "fix the row")


def test_a_list_of_texts_holding_another_type_is_refused(tmp_path):
    (tmp_path / "mbpp").mkdir()
    row = {"task_id": 1, "text": "Write f.", "test_list": ["assert f() == 1", None]}
    (tmp_path / "mbpp" / "test.jsonl").write_text(json.dumps(row) + "\n")
    one_line_error(run_cli("--tasks", "mbpp", "--data", str(tmp_path), "--train-rows", "0", *NO_MODEL),
                   "mbpp/test.jsonl line 1: field 'test_list' holds a list holding null, not a list of texts")
