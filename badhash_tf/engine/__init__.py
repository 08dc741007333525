"""The experiment engine: configuration checked once into a plan, stages and cells decided
by their own records, the shared stages, attack and defense cells."""
