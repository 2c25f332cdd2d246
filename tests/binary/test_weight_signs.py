import torch
from torch import nn

from pointdistill.binary import BinaryLinear, binary_weight_signs, flipped_share


def test_the_signs_are_the_forwards_weight_patterns_and_a_flip_counts_once():
    torch.manual_seed(0)
    model = nn.Sequential(BinaryLinear(8, 4, "lsr"), nn.Hardtanh(), BinaryLinear(4, 3, "bnn"))
    before = binary_weight_signs(model)
    first, second = model[0], model[2]
    pattern = first.quantizer.weight_factors(first.weight)[0]  # LSR: sign(W - mean W)
    assert before.dtype == torch.bool and before.shape == (8 * 4 + 4 * 3,)
    assert torch.equal(before[:32], pattern.reshape(-1) > 0)
    assert flipped_share(before, binary_weight_signs(model)) == 0.0
    with torch.no_grad():
        second.weight[1, 2] = -second.weight[1, 2]  # BNN: sign(W), so exactly one sign changes
    assert flipped_share(before, binary_weight_signs(model)) == 1 / 44
