"""Blow-up guards: lowerings that multiply weights or nodes stop here and say so, instead of
writing a model that does not fit in memory (a 73x73 dense kernel for a 960->256 conv is 5 GB)."""

MAX_LOWERED_WEIGHTS = 64_000_000
MAX_LOWERED_NODES = 1024
