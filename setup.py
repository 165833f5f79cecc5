"""Packaging for dakter_hf: DAKTer (diffusion-based data augmentation and knowledge transfer with
generated soft labels) for SAR oil-spill segmentation, built on the Hugging Face ecosystem."""

from setuptools import find_packages, setup


# torch is pinned only in the Makefile (development / CI use the local CPU build); users may take any
# newer torch.
install_requires = [
    "torch>=2.1",
    "diffusers>=0.30",
    "transformers>=4.40",
    "accelerate>=0.30",
    "datasets>=2.19",
    "huggingface-hub>=0.23",
    "evaluate>=0.4",
    "safetensors>=0.4",
    "filelock>=3.0",
    "numpy",
    "Pillow",
    "tqdm",
    "matplotlib",
]

# `app`: the Gradio app (`dakter app`) and the Playwright driver of its browser test (which uses the system
# chromium, never a downloaded browser). `trackers`: every experiment tracker the images are logged to (the tests of
# wandb and trackio skip without them). `dev`: what the test suite needs.
extras = {
    "test": ["pytest>=7"],
    "app": ["gradio>=5", "playwright>=1.40"],
    "tensorboard": ["tensorboard"],
    "trackers": ["tensorboard", "wandb", "trackio"],
}
extras["dev"] = ["pytest>=7", "ruff", *extras["app"], *extras["tensorboard"]]

setup(
    name="dakter_hf",
    version="0.1.0.dev0",
    description="DAKTer: joint SAR image + soft-label diffusion and knowledge distillation, for diffusers/transformers",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=install_requires,
    extras_require=extras,
    entry_points={"console_scripts": ["dakter=dakter_hf.commands.dakter:main",
                                      "dakter-generate=dakter_hf.commands.generate:main",
                                      "dakter-calibrate=dakter_hf.commands.calibrate:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
