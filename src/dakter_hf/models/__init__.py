"""Models: [`JointUNet2DModel`], the joint image + label denoiser (one model per file)."""

from .joint_unet_2d import JointUNet2DModel, JointUNet2DOutput


__all__ = ["JointUNet2DModel", "JointUNet2DOutput"]
