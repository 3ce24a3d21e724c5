"""himap-lmms: visual-token pruning (HiMAP, FastV) for LLaVA, evaluated in stock lmms-eval."""

__version__ = "0.1.0"
