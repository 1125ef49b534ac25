class HarnessError(Exception):
    """A user-facing error: its message is one line that names the fix. `run.py` prints it without a traceback."""


class SettingError(HarnessError):
    """A setting's value is refused. The message names the setting plainly (`temperature must be ...`); each front
    end names it in its own terms (the command line as `--temperature`, lm-eval as it is passed there)."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting} {problem}")
        self.setting, self.problem = setting, problem


class MissingHeads(HarnessError):
    """Trained heads a decoder needs are not there. The message says which are missing; each front end says how to
    train them in its own terms. `model` (the runner's name) and `data` (the local data the run reads), where the
    raiser knows them, say what they are missing for, so the training can read the same."""

    def __init__(self, problem: str, kind: str, task: str | None, exit_layers: tuple[int, ...] = (),
                 model: str | None = None, data: str | None = None) -> None:
        super().__init__(problem)
        self.kind, self.task, self.exit_layers = kind, task, tuple(exit_layers)
        self.model, self.data = model, data
