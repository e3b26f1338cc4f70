"""Tokenizer, token shards from a snapshot, model config, DeepSpeed pretraining and DPO, MLflow tracking."""
