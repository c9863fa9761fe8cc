"""`mcnet-rt cluster`: serve's page on a Ray cluster. Ray is imported only here (and only by this command).

- `replica`: the engine deployment, one replica per GPU: serve's Engine (model, batching scheduler, WebRTC peers);
  a call is one open streaming request, so Ray's router places each caller on a replica with a free slot;
- `calls`: the ingress's side of a call: forward the offer, wait a bounded time for a slot (503 and Retry-After
  when every GPU is full), follow the call until its replica ends it;
- `deploy`: the deployment's options from the command line, deploying it, and the command itself.
"""
