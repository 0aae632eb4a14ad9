"""Test configuration: hypothesis profiles.

``dev`` (the default) is quick; ``ci`` is thorough and deterministic: at least 2,000 examples
per property, derandomized so that a red CI run is reproducible. ``HYPOTHESIS_PROFILE`` selects
one (``dev.py test`` selects ``ci`` when ``CI`` is set).
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci",
    max_examples=2000,
    deadline=None,
    derandomize=True,
    print_blob=True,
    # Fleets of up to 200 pairs are slow to generate by design.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
