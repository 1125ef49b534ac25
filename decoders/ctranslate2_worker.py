"""The CTranslate2 peer's own process: `python ctranslate2_worker.py MODEL DEVICE INDEX COMPUTE_TYPE THREADS`.

CTranslate2 ships its own OpenMP runtime; in torch's process the two runtimes' threads compete for the same cores
and slow both (measured: vanilla and CTranslate2 alternating in one process each lost up to half their speed), so
the peer decodes here, importing nothing but CTranslate2. One JSON object a line on stdin, answers on stdout:
`{"prompt": [token strings], "max_length": n, "end": [ids]}` streams `{"id": i}` per token and waits for a line
"1" (go on) or "0" (stop: the caller's stop condition is met); `{"batch": [[token strings], ...], ...}` answers
`{"ids": [[...], ...]}`. It first prints `{"ready": true}`.
"""
import json
import sys


def main(model: str, device: str, index: str, compute_type: str, threads: str) -> None:
    import ctranslate2

    generator = ctranslate2.Generator(model, device=device, device_index=int(index), compute_type=compute_type,
                                      intra_threads=int(threads))
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        options = {"max_length": request["max_length"], "sampling_topk": 1, "end_token": request["end"] or None}
        if "batch" in request:
            results = generator.generate_batch(request["batch"], include_prompt_in_result=False,
                                               return_end_token=True, **options)
            print(json.dumps({"ids": [r.sequences_ids[0] for r in results]}), flush=True)
            continue
        for step in generator.generate_tokens(request["prompt"], **options):
            print(json.dumps({"id": step.token_id}), flush=True)
            if sys.stdin.readline().strip() != "1":
                break
        print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
