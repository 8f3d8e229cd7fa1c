"""`mmgen serve`: a local web page and JSON API over a trained run (text to image, captions, inpainting)."""
