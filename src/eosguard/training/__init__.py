"""Training parts: collators, packing, the labelled-positions loss, the run's config, the `Trainer` subclass and `fit`,
crash-safe checkpoints, the saved folder that stops by itself, and distributed helpers. Imports the layers below.
"""
