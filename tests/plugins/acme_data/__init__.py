"""A user's own package of datamill plug-ins, outside ``tasks/``: a document filter, a corpus
rule and a stage, each one file, each named from a recipe by import path."""
