"""`mcnet-rt serve`: a browser page sends its camera over WebRTC and gets its avatar back, several callers per model.

- `server`: the aiohttp application (page, API, WebRTC offers; also `mcnet-rt cluster`'s ingress), the callers'
  `Engine` (scheduler, peers, answering an offer; one per cluster replica) and `serve()`, the command's entry point;
- `peer`: one caller's peer connection: camera frames in, avatar frames out, a control/stats data channel;
- `scheduler`: batches the latest frame of every session through `process_batch` (late frames are dropped);
- `security`: the bind policy (loopback, or a token), the token and Host checks and the response headers;
- `limits`: what a caller may send and hold (sizes, JSON depth, idle and request timeouts), and the JSON parser;
- `avatars`: uploaded images checked by content and size, and the bundled sample faces;
- `static/`: the page (plain HTML/JS/CSS, no build step, nothing from other hosts).
"""
