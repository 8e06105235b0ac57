"""ALGAN: anomaly detection by generating pseudo-anomalous data via latent variables."""
from .config import ALGANConfig, ModelConfig, TrainConfig, profile
from .data import load_dataset, load_features
from .detector import ALGAN
from .models.knn import PixelKNN

__all__ = ["ALGAN", "ALGANConfig", "ModelConfig", "PixelKNN", "TrainConfig", "load_dataset", "load_features",
           "profile"]
__version__ = "0.1.0"
