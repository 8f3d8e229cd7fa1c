"""The `shapes_vqa` dataset: visual questions about Shapes scenes with exact, balanced answers (docs/vqa.md)."""
