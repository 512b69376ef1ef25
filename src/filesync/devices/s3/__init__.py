"""The S3 target (target.py, whose module doc says how the engine's contract maps onto S3), with the multipart upload's
bookkeeping in multipart.py and the per-endpoint probe of what a store verifies in store.py."""
