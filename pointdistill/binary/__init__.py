"""Binary networks: quantizers, binary layers, aggregation (max, EMA)."""

from pointdistill.binary.aggregation import AGGREGATIONS, create_aggregation, ema_offset
from pointdistill.binary.layers import (
    BinaryLinear, binary_layers, binary_weight_signs, flipped_share, initialize_binary_scales, set_training_progress,
)
from pointdistill.binary.quantizers import QUANTIZERS, Quantizer, create_quantizer, register_quantizer, sign

__all__ = [
    "AGGREGATIONS", "QUANTIZERS", "BinaryLinear", "Quantizer", "binary_layers", "binary_weight_signs",
    "create_aggregation", "create_quantizer", "ema_offset", "flipped_share", "initialize_binary_scales",
    "register_quantizer", "set_training_progress", "sign",
]
