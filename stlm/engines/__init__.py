"""Training engines (LightningModules) that own loss, masking, metrics, inverse scaling and optimizers."""
