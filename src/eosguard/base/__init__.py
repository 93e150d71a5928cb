"""The bottom layer: user errors and exit codes, folders written whole, tokenizers and models loaded safely, progress.

Imports nothing of eosguard's; every other layer may import it.
"""
