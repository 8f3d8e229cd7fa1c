"""Metrics over generations: `fid` (Frechet distance of image features) and `caption` (COCO caption scores),
and the `mmgen eval` command."""
