"""Test helpers, one module per area; tests import them as ``from tests.helpers.<module> import ...``.

cli: running codetune as a user does, what an error must look like, a free port. server: a real
server in a thread, run folders to serve. dataset: sample corpora and builds. evaluate: a dataset in
the build contract. fim: a tokenizer per FIM family. train: datasets and launchers for training.
recipes, recipe_files: example recipes and the inputs they read. projects: a small source tree. collect: source
trees for collect tests.
"""
