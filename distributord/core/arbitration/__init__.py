"""Arbitration: several programs share one fleet (``spec/arbitration.md``)."""
