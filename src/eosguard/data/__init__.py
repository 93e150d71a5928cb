"""Conversations: the data model with each record's validation (messages, tool calls, reasoning) and the readers of
JSONL files and `datasets` folders, with file and line. Imports `base` only.
"""
