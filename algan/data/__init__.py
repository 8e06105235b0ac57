"""Data layer: MVTec-AD, MTD, COIL-100, a user's folder and feature arrays, split and pre-processed as in the paper."""
from .common import ENV_VAR, DataError, resolve_root
from .datasets import DATASETS, load_dataset
from .decode import clear_cache, load_images
from .features import FeatureSplit, FeatureSplits, load_features
from .mvtec import MVTEC_CATEGORIES, MVTEC_COUNTS, TEXTURES
from .splits import ImageSplit, Splits
from .transforms import AUGMENTATIONS, GRAYSCALE, add_extra_channels, augment

__all__ = [
    "AUGMENTATIONS", "DATASETS", "ENV_VAR", "GRAYSCALE", "MVTEC_CATEGORIES", "MVTEC_COUNTS", "TEXTURES",
    "DataError", "FeatureSplit", "FeatureSplits", "ImageSplit", "Splits",
    "add_extra_channels", "augment", "clear_cache", "load_dataset", "load_features", "load_images", "resolve_root",
]
