"""Glue for training frameworks; each submodule imports its framework, the core never does."""
