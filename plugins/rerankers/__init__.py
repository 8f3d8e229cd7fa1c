"""Rerankers of generated candidates (the CLIP reranker registers with the clip plugin)."""
