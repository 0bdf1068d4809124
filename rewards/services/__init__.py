"""Writes and workflows of the rewards app, one module per workflow.

- `runs`: checking a run's options, starting it, running it in a worker, reclaiming and retrying;
- `training_data`: the comparisons and features a run trains on, streamed from the database;
- `training`: fitting and evaluating the reward model;
- `model_versions`: the model card, saving a version, activating a model.
"""
