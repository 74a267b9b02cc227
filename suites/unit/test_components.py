"""Components one by one, where the target exposes them."""
import pytest
import torch


def test_text_encoders_give_pooled_and_per_token_states(target):
    if not target.capabilities.components:
        pytest.skip(f"{target.name} does not expose its components")
    txt, vec, _ = target.encode(["a cat holding a sign", "a red fox"])
    assert vec.ndim == 2 and vec.shape[0] == 2              # CLIP pooled: (B, projection dim)
    assert txt.ndim == 3 and txt.shape[:2] == (2, target.max_sequence_length)  # T5: (B, L, d)
    assert torch.isfinite(vec).all() and torch.isfinite(txt).all()
