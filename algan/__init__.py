"""ALGAN: anomaly detection by generating pseudo-anomalous data via latent variables."""
from importlib import import_module

__all__ = ["ALGAN", "ALGANConfig", "ModelConfig", "PixelKNN", "TrainConfig", "load_dataset", "load_features",
           "profile"]
__version__ = "0.1.0"

# Imported on first use (PEP 562), so `import algan.cli` (and `algan --help`) does not load torch.
_LAZY = {"ALGAN": ".detector", "ALGANConfig": ".config", "ModelConfig": ".config", "PixelKNN": ".models.knn",
         "TrainConfig": ".config", "load_dataset": ".data", "load_features": ".data", "profile": ".config"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'algan' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
