"""Training that needs the evaluators inside it: GRPO rewarded by the eval scorers, and the
selection of checkpoints by a held-out suite (`select_by`) for any method.

It sits above `punie.eval` and `punie.serve` (tests/test_layers.py), and reuses the training
worker's pieces below it: `punie.train.setup`, `loop`, `checkpoint`, `grpo`, `rollout`.
"""
