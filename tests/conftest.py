"""Test configuration: hypothesis profiles.

``dev`` (the default) is quick; ``ci`` is thorough and deterministic: 1,000 examples
per property, derandomized so that a red CI run is reproducible; ``thorough`` explores 10,000
fresh random examples per property, for hunting bugs before a release (about 15 minutes).
``HYPOTHESIS_PROFILE`` selects one; without it, ``ci`` is used when ``CI`` is set (as it is in
CI), else ``dev``.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci",
    max_examples=1000,
    deadline=None,
    derandomize=True,
    print_blob=True,
    # Fleets of up to 200 pairs are slow to generate by design.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=10_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)
