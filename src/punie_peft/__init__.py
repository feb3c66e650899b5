"""Punie's PyTorch backend: the same TrainConfig trained with PEFT + TRL, on CPU, one GPU or many.

Installed with the `cuda` extra and found by the core through the `punie.backends` entry point
`peft`. Importing this package is cheap: torch, transformers, peft and trl are imported only where
a function needs them, so `punie backends` can list it even where they are missing.
"""
