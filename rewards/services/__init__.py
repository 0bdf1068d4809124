"""Writes and workflows of the rewards app, one module per workflow.

- `runs`: checking a run's options, starting it, running it in a worker, reclaiming and retrying;
- `training_data`: the comparisons and features a run trains on, streamed from the database;
- `training`: fitting and evaluating the reward model;
- `heads`: the per-criterion heads option, the ratings they train on and their fits;
- `model_versions`: the model card, saving a version, activating a model.
"""
