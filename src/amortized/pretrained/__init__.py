"""Pretrained checkpoints shipped with the package, made by ``scripts/pretrain.py``.

Each ``<name>.pt`` has a ``<name>.json`` card recording the learner, training settings, the task
prior it was meta-trained on, the training time and its evaluation.
"""
