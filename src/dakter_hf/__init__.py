"""dakter_hf: DAKTer for the Hugging Face ecosystem.

One diffusion model jointly generates SAR images and per-pixel soft labels; any student segmentation model then
learns from real pairs (cross-entropy) and generated pairs (knowledge distillation on the soft labels).
"""

__version__ = "0.1.0.dev0"
