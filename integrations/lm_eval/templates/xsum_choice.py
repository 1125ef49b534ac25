"""Builds the choices of `fastdecode_xsum_choice`: each article's own summary among those of its block of four rows."""
import datasets

N_CHOICES = 4


def add_choices(dataset: datasets.Dataset) -> datasets.Dataset:
    """Adds `choices` (the real summaries of rows 4k..4k+3, in file order) and `gold` (the row's own position)."""
    summaries = dataset["summary"]

    def choose(row: dict, index: int) -> dict:
        start = index - index % N_CHOICES
        return {"choices": [summaries[(start + k) % len(summaries)] for k in range(N_CHOICES)],
                "gold": index % N_CHOICES}

    return dataset.map(choose, with_indices=True)
