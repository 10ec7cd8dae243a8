"""Network building blocks: embeddings, the temporal selective SSM, spatial global attention, the block, heads."""
