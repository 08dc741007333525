"""The one check of a list flag against its known names (--baselines, --methods,
--defenses), so every program words the error the same way."""


def check_choices(flag, names, known, allow_empty=False):
    """Raises ValueError naming `flag` when a name is not in `known` (or, unless
    `allow_empty`, when no name is given)."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{flag}: unknown {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(known)}")
    if not names and not allow_empty:
        raise ValueError(f"{flag}: give at least one name")
