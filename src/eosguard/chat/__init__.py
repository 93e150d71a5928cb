"""Chat templates and rendering: a template read into what closes each kind of reply (`templates`), where each reply
is trained (`placement`, `layouts`), the one renderer of ids and labels (`render`), tokenizer setup, and
conversations to counted training examples (`examples`). Imports `base` and `data`.
"""
