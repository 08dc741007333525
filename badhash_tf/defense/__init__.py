"""Defenses against backdoors in deep hashing: query-time transforms, training-set
inspection, model repair and query-time detection, and the harness that runs them."""
