"""Federated fine-tuning with Flower: hospitals train together without pooling images."""
