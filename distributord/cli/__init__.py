"""The commands: ``distributord`` (run, sim, demo) and ``distributorctl``."""
