"""pointdistill: distil full-precision point-cloud networks into binary students from records.

The Python API (pointdistill.api), loaded on first use so that ``import pointdistill`` stays
light: ``load_model`` (a teacher or student checkpoint -> a module returning logits),
``load_engine`` (an exported .pdbn -> the bit-packed engine on NumPy points), ``open_records``
(a record store, read-only), ``load_pretrained`` (a released model from the zoo, verified).
"""

__version__ = "0.1.0"
__all__ = ["load_engine", "load_model", "load_pretrained", "open_records"]


def __getattr__(name: str):
    if name in __all__:
        from pointdistill import api

        return getattr(api, name)
    raise AttributeError(f"module 'pointdistill' has no attribute {name!r}")
