"""The runtime path shared by every front end (animate, live, serve), benchmark and exporter.

- `step.FrameStep`: the one per-frame step, a pure function of tensors (driving image -> prediction);
  `step.prepare_source` / `step.motion_reference`: what the step takes besides the driving image, computed once.
  Exporters import `step` alone, so exporting never loads the face stack;
- `session.Session` / `session.process_batch`: one caller's state (face crop, reference, smoothing, held pose, stats)
  around the step, and the one batched per-frame function of animate, live and serve;
- `stats`: percentiles and bounded per-stage timings; `source_store`: the disk store of prepared sources;
- `live`: the camera -> sink loop.

Import the submodule you need; this package itself imports nothing.
"""
