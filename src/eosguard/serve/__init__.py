"""From training to serving: GGUF stop metadata read and rewritten, `doctor --gguf`, llama.cpp's converter with the stop
metadata proven (`export`), serving engines (llama.cpp, any OpenAI-compatible endpoint), and the one evaluation entry
for every engine (`evaluation`). Imports the layers below.
"""
