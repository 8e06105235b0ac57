"""The baselines (GAN baselines, feature baselines, CutPaste) and ALGAN's networks."""
from .cutpaste import CutPaste

__all__ = ["CutPaste"]
