"""The one check of a list flag against its known names (--baselines, --methods,
--attacks, --defenses), so every program words the error the same way."""


def check_choices(flag, names, known, allow_empty=False, unique=True):
    """Raises ValueError naming `flag` when a name is not in `known`, when one is given
    twice (unless not `unique`), or, unless `allow_empty`, when none is given."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{flag}: unknown {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(known)}")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if unique and repeated:
        raise ValueError(f"{flag}={','.join(names)} repeats {', '.join(repeated)}: each is "
                         "run once")
    if not names and not allow_empty:
        raise ValueError(f"{flag}: give at least one name")
