"""`JointUNet2DModel`: the joint image + label denoiser of DAKTer."""

import logging
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block, get_up_block
from diffusers.utils import BaseOutput
from torch import nn

from .attention_processor import Float32BackwardAttnProcessor


SUPPORTED_DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D")
SUPPORTED_UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D")
ARCHITECTURES = ("dual", "concat")
#: What diffusers' `ModelMixin.to(dtype)` logs for every model cast to a dtype, one with no module to keep in fp32 too.
_EMPTY_FP32_MODULES_WARNING = "that should be kept in float32: []"
PREDICTION_TYPES = ("sample", "epsilon")


@dataclass
class JointUNet2DOutput(BaseOutput):
    """
    Output of [`JointUNet2DModel`].

    Args:
        image (`torch.Tensor` of shape `(batch_size, image_channels, height, width)`):
            The image prediction: the clean image x0 (`prediction_type="sample"`) or the noise (`"epsilon"`).
        label_logits (`torch.Tensor` of shape `(batch_size, num_classes, height, width)`):
            Per-pixel class logits of the clean label.
    """

    # Defaults let `BaseOutput` rebuild the output from a dict, as Accelerate's mixed precision does to cast it.
    image: torch.Tensor = None
    label_logits: torch.Tensor = None


class UNetBranch(nn.Module):
    """One UNet (time embedding, encoder, middle, decoder) built from diffusers blocks.

    It is run level by level by [`JointUNet2DModel`], so that two branches can exchange features between levels.
    """

    def __init__(self, in_channels, out_channels, block_out_channels, down_block_types, up_block_types,
                 layers_per_block, attention_head_dim, norm_num_groups, dropout, act_fn, second_timestep=False):
        super().__init__()
        time_embed_dim = block_out_channels[0] * 4
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim)
        # With per-modality timesteps, the other modality's noise level enters through a second embedding whose last
        # layer starts at zero: at initialisation the branch sees exactly the single-timestep embedding.
        self.second_time_embedding = None
        if second_timestep:
            self.second_time_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim)
            nn.init.zeros_(self.second_time_embedding.linear_2.weight)
            nn.init.zeros_(self.second_time_embedding.linear_2.bias)
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        common = dict(temb_channels=time_embed_dim, resnet_eps=1e-5, resnet_act_fn=act_fn,
                      resnet_groups=norm_num_groups, dropout=dropout)

        self.down_blocks = nn.ModuleList()
        output_channel = block_out_channels[0]
        for i, block_type in enumerate(down_block_types):
            input_channel, output_channel = output_channel, block_out_channels[i]
            self.down_blocks.append(
                get_down_block(block_type, num_layers=layers_per_block, in_channels=input_channel,
                               out_channels=output_channel, add_downsample=i < len(block_out_channels) - 1,
                               attention_head_dim=attention_head_dim or output_channel, downsample_padding=1,
                               **common)
            )
        self.mid_block = UNetMidBlock2D(in_channels=block_out_channels[-1], temb_channels=time_embed_dim,
                                        dropout=dropout, resnet_eps=1e-5, resnet_act_fn=act_fn,
                                        attention_head_dim=attention_head_dim or block_out_channels[-1],
                                        resnet_groups=norm_num_groups)

        self.up_blocks = nn.ModuleList()
        reversed_channels = list(reversed(block_out_channels))
        output_channel = reversed_channels[0]
        for i, block_type in enumerate(up_block_types):
            prev_output_channel, output_channel = output_channel, reversed_channels[i]
            input_channel = reversed_channels[min(i + 1, len(block_out_channels) - 1)]
            self.up_blocks.append(
                get_up_block(block_type, num_layers=layers_per_block + 1, in_channels=input_channel,
                             out_channels=output_channel, prev_output_channel=prev_output_channel,
                             add_upsample=i < len(block_out_channels) - 1,
                             attention_head_dim=attention_head_dim or output_channel, **common)
            )
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=1e-5)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)
        for module in self.modules():  # float32 attention in CPU training under autocast (see the processor)
            if isinstance(module, Attention):
                module.set_processor(Float32BackwardAttnProcessor(module.processor))

    def embed_time(self, timesteps: torch.Tensor, dtype: torch.dtype,
                   second_timesteps: torch.Tensor | None = None) -> torch.Tensor:
        """The branch's timestep embedding `(B, time_embed_dim)` of `timesteps` `(B,)`.

        A branch built with `second_timestep=True` adds the embedding of `second_timesteps` `(B,)` (the other
        modality's timesteps) to it.
        """
        emb = self.time_embedding(self.time_proj(timesteps).to(dtype))
        if self.second_time_embedding is not None:
            emb = emb + self.second_time_embedding(self.time_proj(second_timesteps).to(dtype))
        return emb

    def head(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The output head: group norm, SiLU and a 3x3 convolution to the branch's output channels."""
        return self.conv_out(self.conv_act(self.conv_norm_out(hidden_states)))


def zero_conv(channels: int) -> nn.Conv2d:
    """A 1x1 convolution initialised to zero: an exchange path that starts closed."""
    conv = nn.Conv2d(channels, channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class _DropEmptyFP32ModulesWarning(logging.Filter):
    """Drops the `ModelMixin.to` warning whose list of modules to keep in float32 is empty (nothing can be cast
    wrongly then); a warning that names modules passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _EMPTY_FP32_MODULES_WARNING not in record.getMessage()


class JointUNet2DModel(ModelMixin, ConfigMixin):
    r"""
    A joint denoiser of a SAR image and its segmentation label (DAKTer's generator).

    It takes a noisy image and a noisy scaled one-hot label at one timestep and predicts the clean image (or the
    noise) and the per-pixel class logits of the clean label.

    With `per_modality_timesteps=True` (after UniDiffuser, Bao et al. 2023) image and label may carry different noise
    levels: `forward(image, label, timestep, label_timestep=...)`. Every branch then embeds its own modality's
    timestep as usual and adds the embedding of the other modality's timestep through a second time embedding whose
    output layer starts at zero, so that at initialisation the model computes exactly what the single-timestep
    model computes. Trained with one modality sometimes clean (timestep 0), the model gives exact conditionals:
    p(image | label) with the clean label at `label_timestep=0`, p(label | image) with the clean image at
    `timestep=0`. Without the option (the default, and every checkpoint saved before it existed) the model has no
    extra parameters and the label shares the image's timestep.

    Two architectures:

    * `"dual"` (default, the paper's design after JointNet): an image branch and a label branch, each a full UNet,
      exchanging features in both directions after every encoder level, the middle block and every decoder level
      through 1x1 convolutions initialised to zero, so that at initialisation each branch is an independent UNet.
    * `"concat"`: one UNet over the channel-concatenated image and label (the paper's "DDPM" joint baseline).

    This model inherits from [`~diffusers.ModelMixin`]: `save_pretrained` / `from_pretrained` use safetensors, and
    `enable_gradient_checkpointing()` makes every block (a level's ResNets, attentions and sampler) and output head of
    every branch recompute its activations in the backward pass, keeping only the blocks' inputs and outputs (0.44x
    the peak memory of a 256-pixel training step for about a fifth more compute, see BENCHMARKS.md; off by default,
    inactive without gradients).

    Parameters:
        sample_size (`int` or `tuple[int, int]`, *optional*, defaults to 64): height and width of the samples.
        image_channels (`int`, *optional*, defaults to 1): image channels (SAR is single-channel).
        num_classes (`int`, *optional*, defaults to 2): number of label classes K (>= 2).
        label_scale (`float`, *optional*, defaults to 1.0): the SNR balancing factor b (> 0) by which the one-hot
            label (in {-1, +1}) is scaled before noising; see [`estimate_balancing_factor`].
        architecture (`str`, *optional*, defaults to `"dual"`): `"dual"` or `"concat"`.
        prediction_type (`str`, *optional*, defaults to `"sample"`): what the image output predicts, `"sample"`
            (the clean image x0, the paper's loss) or `"epsilon"` (the noise). The label output is always logits.
        block_out_channels (`tuple[int]`, *optional*): output channels of each resolution level.
        layers_per_block (`int`, *optional*, defaults to 2): ResNet layers per encoder level.
        down_block_types (`tuple[str]`, *optional*): `"DownBlock2D"` or `"AttnDownBlock2D"` per level.
        up_block_types (`tuple[str]`, *optional*): `"UpBlock2D"` or `"AttnUpBlock2D"` per level.
        attention_head_dim (`int`, *optional*, defaults to 8): attention head dimension.
        norm_num_groups (`int`, *optional*, defaults to 32): groups of the group normalisations.
        dropout (`float`, *optional*, defaults to 0.0): dropout probability.
        act_fn (`str`, *optional*, defaults to `"silu"`): activation function.
        per_modality_timesteps (`bool`, *optional*, defaults to `False`): accept a separate timestep for the label
            (`label_timestep` of `forward`); see above.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int | tuple[int, int] = 64,
        image_channels: int = 1,
        num_classes: int = 2,
        label_scale: float = 1.0,
        architecture: str = "dual",
        prediction_type: str = "sample",
        block_out_channels: tuple[int, ...] = (64, 128, 128, 256),
        layers_per_block: int = 2,
        down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        attention_head_dim: int | None = 8,
        norm_num_groups: int = 32,
        dropout: float = 0.0,
        act_fn: str = "silu",
        per_modality_timesteps: bool = False,
    ):
        super().__init__()
        self.gradient_checkpointing = False  # a training-time switch (`enable_gradient_checkpointing`), not config
        self._check_config(sample_size, image_channels, num_classes, label_scale, architecture, prediction_type,
                           block_out_channels, layers_per_block, down_block_types, up_block_types, norm_num_groups)
        branch_kwargs = dict(block_out_channels=tuple(block_out_channels), down_block_types=down_block_types,
                             up_block_types=up_block_types, layers_per_block=layers_per_block,
                             attention_head_dim=attention_head_dim, norm_num_groups=norm_num_groups,
                             dropout=dropout, act_fn=act_fn, second_timestep=bool(per_modality_timesteps))
        if architecture == "dual":
            self.image_branch = UNetBranch(image_channels, image_channels, **branch_kwargs)
            self.label_branch = UNetBranch(num_classes, num_classes, **branch_kwargs)
            # One exchange pair per encoder level, one for the middle block, one per decoder level.
            level_channels = list(block_out_channels) + [block_out_channels[-1]] + list(reversed(block_out_channels))
            self.label_to_image = nn.ModuleList(zero_conv(c) for c in level_channels)
            self.image_to_label = nn.ModuleList(zero_conv(c) for c in level_channels)
        else:
            channels = image_channels + num_classes
            self.joint_branch = UNetBranch(channels, channels, **branch_kwargs)

    def to(self, *args, **kwargs):
        """`ModelMixin.to`, without diffusers' warning that "modules ... should be kept in float32: []": diffusers logs
        it for any model cast to a dtype, even with no such module (`model.to(torch.bfloat16)`, `pipe.to(...)`,
        `Pipeline.from_pipe(pipe)`). A warning that names modules still shows."""
        model_logger = logging.getLogger(ModelMixin.__module__)
        drop = _DropEmptyFP32ModulesWarning()
        model_logger.addFilter(drop)
        try:
            return super().to(*args, **kwargs)
        finally:
            model_logger.removeFilter(drop)

    @staticmethod
    def _check_config(sample_size, image_channels, num_classes, label_scale, architecture, prediction_type,
                      block_out_channels, layers_per_block, down_block_types, up_block_types, norm_num_groups):
        if architecture not in ARCHITECTURES:
            raise ValueError(f"`architecture` must be one of {ARCHITECTURES}, got {architecture!r}.")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"`prediction_type` must be one of {PREDICTION_TYPES}, got {prediction_type!r}.")
        if num_classes < 2:
            raise ValueError(f"`num_classes` must be >= 2 (a background and at least one class), got {num_classes}.")
        if image_channels < 1:
            raise ValueError(f"`image_channels` must be >= 1, got {image_channels}.")
        if not label_scale > 0:
            raise ValueError(f"`label_scale` (the balancing factor b) must be > 0, got {label_scale}.")
        if layers_per_block < 1:
            raise ValueError(f"`layers_per_block` must be >= 1, got {layers_per_block}.")
        if not (len(block_out_channels) == len(down_block_types) == len(up_block_types)):
            raise ValueError(
                f"`block_out_channels`, `down_block_types` and `up_block_types` must have one entry per level, got "
                f"{len(block_out_channels)}, {len(down_block_types)} and {len(up_block_types)}."
            )
        for name, types, allowed in (("down_block_types", down_block_types, SUPPORTED_DOWN_BLOCKS),
                                     ("up_block_types", up_block_types, SUPPORTED_UP_BLOCKS)):
            unknown = [t for t in types if t not in allowed]
            if unknown:
                raise ValueError(f"`{name}` entries must be among {allowed}, got {unknown}.")
        bad_widths = [c for c in block_out_channels if c % norm_num_groups]
        if bad_widths:
            raise ValueError(
                f"Every entry of `block_out_channels` must be divisible by `norm_num_groups`={norm_num_groups}, "
                f"got {bad_widths}."
            )
        factor = 2 ** (len(block_out_channels) - 1)
        sizes = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
        if any(s < 1 or s % factor for s in sizes):
            raise ValueError(
                f"`sample_size` {sample_size} must be divisible by the total down-sampling factor {factor} "
                f"({len(block_out_channels)} resolution levels)."
            )

    def forward(
        self,
        image: torch.Tensor,
        label: torch.Tensor,
        timestep: torch.Tensor | float | int,
        return_dict: bool = True,
        *,
        label_timestep: torch.Tensor | float | int | None = None,
    ) -> JointUNet2DOutput | tuple:
        r"""
        Args:
            image (`torch.Tensor`): the noisy image, `(batch, image_channels, height, width)`.
            label (`torch.Tensor`): the noisy scaled label, `(batch, num_classes, height, width)`.
            timestep (`torch.Tensor` or `float` or `int`): the timestep, one for the batch or one per sample; the
                image's timestep when `label_timestep` is given.
            return_dict (`bool`, *optional*, defaults to `True`): return a [`JointUNet2DOutput`] or a tuple.
            label_timestep (`torch.Tensor` or `float` or `int`, *optional*, keyword-only): the label's timestep, one
                for the batch or one per sample (only with `per_modality_timesteps=True`); defaults to `timestep`.

        Returns:
            [`JointUNet2DOutput`] or `tuple`: the image prediction and the label logits.
        """
        config = self.config
        if image.dim() != 4 or image.shape[1] != config.image_channels:
            raise ValueError(
                f"`image` must have shape (batch, {config.image_channels}, height, width), got {tuple(image.shape)}."
            )
        if label.dim() != 4 or label.shape[1] != config.num_classes or label.shape[0] != image.shape[0] \
                or label.shape[2:] != image.shape[2:]:
            raise ValueError(
                f"`label` must have shape ({image.shape[0]}, {config.num_classes}, {image.shape[2]}, "
                f"{image.shape[3]}) to match `image`, got {tuple(label.shape)}."
            )
        per_modality = config.get("per_modality_timesteps", False)
        if label_timestep is not None and not per_modality:
            raise ValueError(
                "`label_timestep` needs a model built with `per_modality_timesteps=True`; this model takes one "
                "timestep for image and label."
            )
        timesteps = self._batch_timesteps(timestep, image, "timestep")
        label_timesteps = timesteps if label_timestep is None else self._batch_timesteps(label_timestep, image,
                                                                                          "label_timestep")
        second = label_timesteps if per_modality else None

        if config.architecture == "dual":
            img, lbl = self.image_branch, self.label_branch
            # Each branch embeds its own modality's timestep (and, per modality, the other one's as the second).
            embs = (img.embed_time(timesteps, self.dtype, label_timesteps if per_modality else None),
                    lbl.embed_time(label_timesteps, self.dtype, timesteps if per_modality else None))
            image_out, label_logits = self._run_levels((img.conv_in(image), lbl.conv_in(label)), embs)
        else:
            joint = self.joint_branch
            (out,) = self._run_levels((joint.conv_in(torch.cat([image, label], dim=1)),),
                                      (joint.embed_time(timesteps, self.dtype, second),))
            image_out, label_logits = out.split([config.image_channels, config.num_classes], dim=1)

        if not return_dict:
            return (image_out, label_logits)
        return JointUNet2DOutput(image=image_out, label_logits=label_logits)

    @staticmethod
    def _batch_timesteps(timestep, image: torch.Tensor, name: str) -> torch.Tensor:
        """`timestep` (a number, `(1,)` or `(batch,)`) as a `(batch,)` tensor on the image's device."""
        timesteps = torch.as_tensor(timestep, device=image.device)
        if timesteps.dim() == 0:
            timesteps = timesteps[None]
        if timesteps.dim() != 1 or timesteps.shape[0] not in (1, image.shape[0]):
            raise ValueError(
                f"`{name}` must be a number or hold one value per sample ({image.shape[0]}), got shape "
                f"{tuple(timesteps.shape)}."
            )
        return timesteps.expand(image.shape[0])

    def _branches(self) -> tuple[UNetBranch, ...]:
        return (self.image_branch, self.label_branch) if self.config.architecture == "dual" else (self.joint_branch,)

    def _set_gradient_checkpointing(self, enable: bool = True,
                                    gradient_checkpointing_func=torch.utils.checkpoint.checkpoint) -> None:
        # Whole blocks are checkpointed here (`_run_levels`), so the blocks' own per-ResNet checkpointing stays off.
        self.gradient_checkpointing = enable
        self._gradient_checkpointing_func = gradient_checkpointing_func

    def _run_levels(self, hiddens: tuple, embs: tuple) -> tuple:
        """Encoder levels, middle block and decoder levels of every branch (after `conv_in`), then the heads.

        With gradient checkpointing, every block (a level's ResNets, attentions and sampler) and every head of every
        branch is one segment: only the segments' inputs and outputs (the skip connections among them) are kept for
        the backward pass, which recomputes one segment at a time. The exchanges between the branches (1x1
        convolutions of segment outputs) keep nothing else.
        """
        branches = self._branches()
        skips = tuple((h,) for h in hiddens)
        for level in range(len(branches[0].down_blocks)):
            outs = [self._segment(b.down_blocks[level], h, e) for b, h, e in zip(branches, hiddens, embs)]
            hiddens = self._exchange(level, tuple(h for h, _ in outs))
            # The exchanged features also feed the decoder through the last skip connection of the level.
            skips = tuple(s + res[:-1] + (h,) for s, (_, res), h in zip(skips, outs, hiddens))
        level += 1
        hiddens = self._exchange(level, tuple(self._segment(b.mid_block, h, e)
                                              for b, h, e in zip(branches, hiddens, embs)))
        for up_level in range(len(branches[0].up_blocks)):
            n = len(branches[0].up_blocks[up_level].resnets)
            res, skips = tuple(s[-n:] for s in skips), tuple(s[:-n] for s in skips)
            level += 1
            hiddens = self._exchange(level, tuple(self._segment(b.up_blocks[up_level], h, r, e)
                                                  for b, h, r, e in zip(branches, hiddens, res, embs)))
        return tuple(self._segment(b.head, h) for b, h in zip(branches, hiddens))

    def _segment(self, function, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(function, *args)
        return function(*args)

    def _exchange(self, level: int, hiddens: tuple) -> tuple:
        if self.config.architecture != "dual":
            return hiddens
        h_i, h_l = hiddens
        return (h_i + self.label_to_image[level](h_l), h_l + self.image_to_label[level](h_i))
