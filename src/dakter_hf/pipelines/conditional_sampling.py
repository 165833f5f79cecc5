"""Conditional sampling of a joint DAKTer model: one modality known, the other one denoised.

Two ways, chosen by `conditioning`:

* `"replacement"` works with every checkpoint. The joint state (image and label channels) is denoised as in
  joint sampling, but before every model call the known modality's channels are overwritten with the known value
  noised to the current timestep (fresh noise each time), and at the end with the known value itself. Optional
  RePaint-style resampling (Lugmayr et al., CVPR 2022) lets the unknown part catch up with the known one: after
  every `jump_length` steps, the state is noised back to where those steps began and the steps are run again,
  `jump_n_sample` times in all (1 = no resampling; the paper used 10 and 10, i.e. about 10x the model calls).
* `"exact"` needs a model trained with `per_modality_timesteps=True`: the known modality is fed clean at
  timestep 0 and only the other modality's channels are denoised, so the model samples the learnt conditional.

`"auto"` picks `"exact"` for models with per-modality timesteps and `"replacement"` otherwise.
"""

import copy
from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import randn_tensor


CONDITIONING_MODES = ("auto", "replacement", "exact")
MODALITIES = ("image", "label")


@dataclass
class ConditionalSample:
    """
    The result of [`ConditionalSamplingMixin.sample_conditionally`].

    Args:
        image (`torch.Tensor`): the final `(B, C, H, W)` image channels in [-1, 1] (the known image itself when
            the image was given).
        label (`torch.Tensor`): the final scaled label channels `(B, K, H, W)` (the known label itself when the
            label was given).
        label_logits (`torch.Tensor`): the label logits `(B, K, H, W)` of the last model call.
    """

    image: torch.Tensor
    label: torch.Tensor
    label_logits: torch.Tensor


class ConditionalSamplingMixin:
    """The conditional denoising loop shared by the mask -> image and image -> label pipelines.

    It needs the methods of [`DAKTerPipelineMixin`] (scheduler conversion) and of [`DiffusionPipeline`].
    """

    def resolve_conditioning(self, conditioning: str, jump_length: int, jump_n_sample: int) -> str:
        """Check the conditioning options and return the mode actually used (`"replacement"` or `"exact"`)."""
        if conditioning not in CONDITIONING_MODES:
            raise ValueError(f"`conditioning` must be one of {CONDITIONING_MODES}, got {conditioning!r}.")
        per_modality = bool(self.unet.config.get("per_modality_timesteps", False))
        if conditioning == "auto":
            conditioning = "exact" if per_modality else "replacement"
        if conditioning == "exact" and not per_modality:
            raise ValueError(
                "`conditioning='exact'` needs a model trained with per-modality timesteps (`per_modality_timesteps` "
                "in its config); use 'replacement' (optionally with `jump_n_sample` > 1) for this checkpoint."
            )
        for name, value in (("jump_length", jump_length), ("jump_n_sample", jump_n_sample)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if conditioning == "exact" and jump_n_sample > 1:
            raise ValueError("Resampling (`jump_n_sample` > 1) applies to `conditioning='replacement'` only.")
        return conditioning

    def _noise_levels(self, scheduler, t: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(a, s)` with `scheduler.add_noise(x, eps, t) = a * x + s * eps` (the scheduler's own state space)."""
        one, zero = torch.ones(1, device=reference.device), torch.zeros(1, device=reference.device)
        step = t.reshape(1)
        return scheduler.add_noise(one, zero, step), scheduler.add_noise(zero, one, step)

    def _renoise(self, scheduler, state, t_low, t_high, generator) -> torch.Tensor:
        """Diffuse `state` forward from the noise level of `t_low` to that of the larger `t_high`."""
        a_low, s_low = self._noise_levels(scheduler, t_low, state)
        a_high, s_high = self._noise_levels(scheduler, t_high, state)
        ratio = a_high / a_low
        extra = (s_high**2 - (ratio * s_low) ** 2).clamp(min=0).sqrt()
        noise = randn_tensor(state.shape, generator=generator, device=state.device, dtype=state.dtype)
        return ratio.to(state) * state + extra.to(state) * noise

    @torch.no_grad()
    def sample_conditionally(
        self,
        known: torch.Tensor,
        known_modality: str,
        conditioning: str,
        num_inference_steps: int,
        generator=None,
        eta: float = 0.0,
        jump_length: int = 10,
        jump_n_sample: int = 1,
    ) -> ConditionalSample:
        r"""
        Denoise the unknown modality given the known one.

        Args:
            known (`torch.Tensor`): the known modality in model space: `(B, C, H, W)` images in [-1, 1], or
                `(B, K, H, W)` scaled labels `b * (2 p - 1)` (p the per-class probabilities).
            known_modality (`str`): `"image"` or `"label"`.
            conditioning (`str`): `"replacement"` or `"exact"` (see the module docstring; resolve `"auto"` with
                [`~ConditionalSamplingMixin.resolve_conditioning`] first).
            num_inference_steps (`int`): scheduler steps.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): with a list (one per sample),
                sample i depends only on generator i.
            eta (`float`, *optional*, defaults to 0.0): DDIM's eta, for schedulers that accept it.
            jump_length, jump_n_sample (`int`, *optional*, defaults to 10 and 1): RePaint resampling (replacement
                only): every `jump_length` steps are run `jump_n_sample` times.

        Returns:
            [`ConditionalSample`]
        """
        if known_modality not in MODALITIES:
            raise ValueError(f"`known_modality` must be one of {MODALITIES}, got {known_modality!r}.")
        config = self.unet.config
        channels = config.image_channels
        device = self._execution_device
        known = known.to(device=device, dtype=self.unet.dtype)
        batch_size = known.shape[0]
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        exact = conditioning == "exact"
        resampling = jump_n_sample > 1
        if resampling and len(torch.unique(self.scheduler.timesteps)) != len(self.scheduler.timesteps):
            raise ValueError(
                f"Resampling (`jump_n_sample` > 1) needs a scheduler with one model call per timestep; "
                f"{type(self.scheduler).__name__} repeats timesteps."
            )
        # Resampling rewinds the scheduler (multistep solvers keep a history): it works on copies of it.
        scheduler = copy.deepcopy(self.scheduler) if resampling else self.scheduler
        known_slice = slice(0, channels) if known_modality == "image" else slice(channels, None)
        unknown_channels = config.num_classes if known_modality == "image" else channels
        state_channels = unknown_channels if exact else channels + config.num_classes
        state = randn_tensor((batch_size, state_channels, *known.shape[2:]), generator=generator, device=device,
                             dtype=self.unet.dtype) * scheduler.init_noise_sigma
        step_kwargs = self.step_kwargs(generator, eta)
        timesteps = scheduler.timesteps
        num_steps = len(timesteps)
        label_logits = None

        def denoise(state, t):
            nonlocal label_logits
            if exact:
                model_input = scheduler.scale_model_input(state, t)
                zero = torch.zeros_like(t)
                if known_modality == "image":
                    _, label_logits = self.unet(known, model_input, zero, return_dict=False, label_timestep=t)
                    clean = self.clean_label(label_logits)
                else:
                    image_pred, label_logits = self.unet(model_input, known, t, return_dict=False,
                                                         label_timestep=zero)
                    clean = self.clean_image(model_input, image_pred, t)
            else:
                noise = randn_tensor(known.shape, generator=generator, device=device, dtype=known.dtype)
                state = state.clone()
                state[:, known_slice] = scheduler.add_noise(known, noise, t.reshape(1))
                model_input = scheduler.scale_model_input(state, t)
                image_pred, label_logits = self.unet(model_input[:, :channels], model_input[:, channels:], t,
                                                     return_dict=False)
                clean = torch.cat([self.clean_image(model_input[:, :channels], image_pred, t),
                                   self.clean_label(label_logits)], dim=1)
            model_output = self.to_scheduler_prediction(model_input, clean, t)
            return scheduler.step(model_output, t, state, **step_kwargs).prev_sample

        chunks = [(i, min(i + jump_length, num_steps)) for i in range(0, num_steps, jump_length)]
        repeats = [jump_n_sample if resampling and end < num_steps else 1 for _, end in chunks]
        with self.progress_bar(total=sum((end - i) * r for (i, end), r in zip(chunks, repeats))) as bar:
            for (begin, end), repeat in zip(chunks, repeats):
                snapshot = copy.deepcopy(scheduler) if repeat > 1 else None
                for r in range(repeat):
                    if r > 0:  # back to the noise level where the chunk began, with the scheduler as it was then
                        state = self._renoise(scheduler, state, timesteps[end], timesteps[begin], generator)
                        scheduler = copy.deepcopy(snapshot)
                    for j in range(begin, end):
                        state = denoise(state, timesteps[j])
                        bar.update()

        if exact:
            image, label = (known, state) if known_modality == "image" else (state, known)
        else:
            state = state.clone()
            state[:, known_slice] = known  # the known modality ends exactly at its given value
            image, label = state[:, :channels], state[:, channels:]
        return ConditionalSample(image=image, label=label, label_logits=label_logits)
