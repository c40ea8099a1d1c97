"""The export stage: a run or model written for the runtimes people run locally (GGUF + an Ollama Modelfile)."""
