"""What proves the stop token trained and used: the findings registry, the collator guard, the training pipelines the
doctor runs, the doctor, the stop-rate evaluation, and collated rows as readable tokens. Imports the layers below.
"""
