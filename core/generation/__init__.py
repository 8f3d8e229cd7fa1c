"""The generation pipeline: tasks build requests, a sampler fills them, a reranker and a refiner may follow."""
