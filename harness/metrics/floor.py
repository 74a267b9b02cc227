"""The noise floor: how far apart the reference's own images are under a change that should not move them (the
first image of a batch of two against the image alone: the contract makes them equal, but a batch of two may
take other kernels, so they differ by rounding where the dtype and the device round). A target's distance from
the reference is then read as a multiple of what this hardware and dtype already give:
`"quality.lpips.over_floor" = { max = 3 }` is "no worse than three times the floor"."""
from __future__ import annotations

RESOLUTION = 1e-6  # the smallest floor divided by (a floor of exactly 0 cannot be)


def over(distance: float, floor: float) -> float:
    """DISTANCE as a multiple of FLOOR. An unbiased estimate (CMMD) can come out below 0 when nothing differs:
    its size is the floor. A floor under RESOLUTION (the batch changed nothing, as in fp32 on a CPU) counts as
    RESOLUTION: an exact target's 0 stays 0, and any distance at all is a large multiple, as it should be where
    the floor is exact."""
    return distance / max(abs(floor), RESOLUTION)
