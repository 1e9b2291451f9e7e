"""Fused Triton kernels, each beside its PyTorch reference, and the patcher that swaps them into HF models."""
