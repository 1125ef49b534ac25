"""The benchmark loop on the real embedded model: interleaving, parity, per-sample errors, settings, resume."""
import json

from decoders.vanilla import Vanilla
from harness.run.benchmark import BenchConfig, run_benchmark
from harness.core.decoding import DECODERS, Generation
from tasks.gsm8k import GSM8K

BUILT = []


@DECODERS.register("test_copy")
class Copy(Vanilla):
    """Vanilla under another name: must match vanilla everywhere."""

    def __init__(self, runner, task=None, **settings):
        super().__init__(runner, task=task)
        BUILT.append((task, settings))


@DECODERS.register("test_planted")
class Planted(Vanilla):
    """Vanilla with its third token replaced: parity must report index 2."""

    def _generate(self, prompt_ids, stop, on_first_token):
        gen = super()._generate(prompt_ids, stop, on_first_token)
        return Generation(gen.tokens[:2] + [gen.tokens[2] + 1] + gen.tokens[3:], gen.stats)


@DECODERS.register("test_broken")
class Broken(Vanilla):
    """Fails on its second generation: that row records the error and the run goes on."""

    calls = 0

    def _generate(self, prompt_ids, stop, on_first_token):
        Broken.calls += 1
        if Broken.calls == 2:
            raise RuntimeError("planted failure")
        return super()._generate(prompt_ids, stop, on_first_token)


def test_interleaved_run_with_parity_errors_settings_and_resume(runner, shared_data, tmp_path):
    config = BenchConfig(out_dir=tmp_path, limit=2, max_new_tokens=4, warmup=0,
                         decoder_settings={"test_copy": {"depth": 3, "fast": True}})
    names = ["test_copy", "test_planted", "test_broken"]
    run_benchmark(runner, names, [GSM8K(str(shared_data))], config)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    order = ["vanilla", *names]
    assert [r["decoder"] for r in rows] == order * 2  # interleaved per sample, vanilla first
    assert [r["sample_index"] for r in rows] == [0] * 4 + [1] * 4
    assert BUILT == [("gsm8k", {"depth": 3, "fast": True})]  # built once per task, with its settings
    by = {(r["decoder"], r["sample_index"]): r for r in rows}
    for i in (0, 1):
        assert by[("vanilla", i)]["parity"] is None and by[("vanilla", i)]["new_tokens"] == 4
        assert by[("test_copy", i)]["parity"] == {"match": True, "first_divergence": None, "class": "exact",
                                                   "margin": None, "threshold": 0.0 if runner.exact_chunks else 1e-3}
        assert by[("test_copy", i)]["tokens"] == by[("vanilla", i)]["tokens"]
        planted = by[("test_planted", i)]["parity"]
        assert (planted["match"], planted["first_divergence"], planted["class"]) == (False, 2, "mismatch")
        assert planted["margin"] > planted["threshold"]
        assert set(by[("vanilla", i)]["quality"]) == {"exact_match"}
        timing = by[("vanilla", i)]
        assert 0 < timing["ttft_s"] < timing["total_s"] and timing["tokens_per_s"] > 0
        assert timing["memory"]["rss_peak_bytes"] > 0 and timing["memory"]["nvml_peak_bytes"] is None
    assert by[("test_broken", 1)]["error"] == "RuntimeError: planted failure" and by[("test_broken", 1)]["tokens"] is None
    assert by[("test_broken", 0)]["error"] is None

    config.limit = 3  # the same run resumed with a higher limit: only the third sample is new
    run_benchmark(runner, names, [GSM8K(str(shared_data))], config)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    keys = [(r["decoder"], r["sample_id"]) for r in rows]
    assert len(keys) == len(set(keys)) == 12
    assert [r["sample_index"] for r in rows[8:]] == [2] * 4
