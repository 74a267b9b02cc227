"""The included reference FLUX: a compact transformer and sampler, text and VAE parts as published."""
from targets.reference.target import ReferenceTarget

__all__ = ["ReferenceTarget"]
