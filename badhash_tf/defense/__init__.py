"""Defenses against backdoors in deep hashing, one file per kind, each registering its
specs: query-time transforms, training-set inspection, model repair, query-time detection
and model inspection (engine/defenses.py runs them as cells)."""
