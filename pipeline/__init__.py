"""yolo-gru-actions: video -> frames -> features -> cached sequences -> GRU -> labels -> outputs.

Grouped by stage: ``data`` (videos, datasets, the YOLO features, tracking, the cache), ``model`` (the GRU and
its Lightning module), ``inference`` (streaming prediction, timelines, outputs, export), ``live`` (camera,
live loop, MJPEG) and ``teach`` (the browser app). ``cli``, ``errors`` and ``options`` serve the scripts.
"""
