"""Reports built from a run folder's result files (`meta.json`, `results.jsonl`): tables, plots, regression gates.

Nothing here imports the runner, the decoders or the model: a report can be made on any machine from the files alone.
"""
