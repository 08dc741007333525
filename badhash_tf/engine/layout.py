"""The layout of a run directory: every path a program writes or reads, named once.

An attack run (pipeline, a bench dataset's seed, a frontier's budget): the shared stages
(surrogate/, labcln/, reference_victim/), one directory per attack (its generator/,
poison/, victim/ and variant.json), the reports; with several seeds one layout per seed
(seed_N/), a frontier's budgets inside a seed (psnr_B/), a bench's datasets and seeds
(<dataset>/seed_N/), defenses beside the run (defenses/<attack>/<defense>/).
"""

import dataclasses
import os

BADHASH = "badhash"  # the attack itself, beside its baselines
VARIANT_JSON = "variant.json"  # a finished attack: its config, target and figures
TRIGGERED_QUERIES = "triggered_queries.npz"  # its triggered queries, for defenses
SAMPLES = "samples.npz"  # originals and poisoned copies shown in samples.png
HASH_SPACE = "hash_space.npz"  # the victim's database and query codes, for hash_space.png
DEFENSE_JSON = "defense.json"
RUN_JSON = "run.json"  # which program made the run directory
REPORTS = ("report.json", "report.md", "samples.png", "hash_space.png", "summary.json",
           "summary.md", "flags.json")


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """Paths under `root`."""
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

    def variant_file(self, name, filename):
        return self._path(name, filename)

    def generator(self, name=BADHASH):
        return self._path(name, "generator")

    def poison(self, name=BADHASH):
        return self._path(name, "poison")

    def victim(self, name=BADHASH):
        return self._path(name, "victim")

    @property
    def run_json(self):
        return self._path(RUN_JSON)

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

    def budget(self, budget):
        """A frontier budget's attack runs inside a seed's directory: psnr_B."""
        return RunLayout(self._path(f"psnr_{budget:g}"))

    def dataset(self, name):
        """A bench dataset's directory (its seeds inside)."""
        return RunLayout(self._path(name))

    @property
    def defenses(self):
        return self._path("defenses")

    def defense(self, variant, name, output_dir=None):
        """One defense of one attack variant (`variant`: its path relative to the run)."""
        return os.path.join(output_dir or self.defenses, variant, name)
