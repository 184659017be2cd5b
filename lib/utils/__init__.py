"""Small helpers shared by the detector: image blobs, timers, box overlaps."""
