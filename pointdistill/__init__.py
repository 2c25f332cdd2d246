"""pointdistill: distil full-precision point-cloud networks into binary students from records."""

__version__ = "0.1.0"
