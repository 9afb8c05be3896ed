"""rrpo: self-align video LLMs with Refined Regularized Preference Optimization."""

__version__ = "0.1.0"
