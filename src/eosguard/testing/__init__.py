"""Test material, outside the runtime layers (no runtime module imports it): tokenizers of every tested family rebuilt
on real vocabularies with their real templates, TRL's templates on SmolLM2's tokenizer, and the tables of both.
"""
