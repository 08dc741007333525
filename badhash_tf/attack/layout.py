"""The layout of a run directory: every path a pipeline (or probes) run writes, named once
for the experiment, the export and the tests."""

import dataclasses
import os

BASELINE_VARIANT = "badhash"  # the attack itself, beside its baselines


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """Paths under `root`: the shared stages (surrogate, LabCLN, reference victim), one
    directory per variant (its generator, poisoned set and backdoored victim), the reports,
    and with several seeds one RunLayout per seed."""
    root: str

    def _path(self, *parts):
        return os.path.join(self.root, *parts)

    @property
    def surrogate(self):
        return self._path("surrogate")

    @property
    def labcln(self):
        return self._path("labcln")

    @property
    def reference_victim(self):
        return self._path("reference_victim")

    def variant(self, name):
        return self._path(name)

    def generator(self, name=BASELINE_VARIANT):
        return self._path(name, "generator")

    def poison(self, name=BASELINE_VARIANT):
        return self._path(name, "poison")

    def victim(self, name=BASELINE_VARIANT):
        return self._path(name, "victim")

    @property
    def flags_json(self):
        return self._path("flags.json")

    @property
    def report_json(self):
        return self._path("report.json")

    @property
    def report_md(self):
        return self._path("report.md")

    @property
    def samples_png(self):
        return self._path("samples.png")

    @property
    def hash_space_png(self):
        return self._path("hash_space.png")

    @property
    def summary_json(self):
        return self._path("summary.json")

    @property
    def summary_md(self):
        return self._path("summary.md")

    def seed(self, seed):
        return RunLayout(self._path(f"seed_{seed}"))
