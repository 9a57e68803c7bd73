"""Frames -> labels -> outputs: streaming prediction from a checkpoint or an export, timelines, files."""
