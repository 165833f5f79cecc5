"""The remote-code files a Hub repository carries to be loaded without dakter_hf installed.

* the committed copy under `pipelines/dakter/` is what `utils/make_hub_pipeline.py` generates from the package;
* the files import nothing from dakter_hf, and the model file is named after the library in `model_index.json`;
* in a process where `import dakter_hf` fails, `DiffusionPipeline.from_pretrained(dir, custom_pipeline=...,
  trust_remote_code=True)` loads a saved pipeline that carries them and generates what the package generates.

`run_without_dakter_hf` and `make_tiny_pipeline` are shared with `test_pipeline_hub.py` (the same check from a Hub
repository).
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, DiffusionPipeline

from dakter_hf import DAKTerMaskToImagePipeline, DAKTerPipeline, DAKTerSegmentationPipeline, JointUNet2DModel
from dakter_hf.remote_code import add_remote_code, remote_code_files

from repo_scripts import load_script


SEED, BATCH_SIZE, STEPS = 0, 2, 4
OUTPUT_FIELDS = ("images", "soft_labels", "labels")


def _load_generator_script():
    return load_script("utils/make_hub_pipeline.py")


ID2LABEL = {0: "sea", 1: "oil_spill", 2: "look_alike"}


def make_tiny_pipeline() -> DAKTerPipeline:
    torch.manual_seed(0)
    unet = JointUNet2DModel(sample_size=16, num_classes=3, block_out_channels=(8, 16),
                            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, layers_per_block=1)
    # Zero-initialised exchange convolutions would hide a broken exchange path: give them weights.
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "_to_" in name:
                param.normal_(0, 0.1)
    return DAKTerPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50), id2label=ID2LABEL)


def generate(pipe) -> dict[str, np.ndarray]:
    out = pipe(batch_size=BATCH_SIZE, generator=torch.Generator().manual_seed(SEED), num_inference_steps=STEPS,
               output_type="np")
    return {name: np.asarray(getattr(out, name)) for name in OUTPUT_FIELDS}


# Runs in a fresh interpreter: blocks every `dakter_hf` import before anything else is imported, proves it, then
# loads the pipeline with diffusers' generic loader and remote code, generates and saves the outputs.
_NO_DAKTER_SCRIPT = r"""
import importlib.abc, json, sys

class NoDakter(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "dakter_hf" or name.startswith("dakter_hf."):
            raise ImportError(f"{name} is blocked: this process must work without dakter_hf")

sys.meta_path.insert(0, NoDakter())
try:
    import dakter_hf
except ImportError:
    pass
else:
    sys.exit("`import dakter_hf` succeeded although it is blocked: the check would prove nothing")

import numpy as np, torch
from diffusers import DiffusionPipeline

args = json.loads(sys.argv[1])
pipe = DiffusionPipeline.from_pretrained(args["source"], custom_pipeline=args["custom_pipeline"],
                                         trust_remote_code=True)
kwargs = dict(args["call"])
if args["inputs"]:
    with np.load(args["inputs"]) as arrays:
        kwargs.update({name: arrays[name] for name in arrays.files})
out = pipe(generator=torch.Generator().manual_seed(args["seed"]), num_inference_steps=args["steps"],
           output_type="np", **kwargs)
np.savez(args["output"], **{name: np.asarray(getattr(out, name)) for name in args["fields"]})
with open(args["output"] + ".json", "w") as f:
    json.dump({"pipeline": type(pipe).__module__, "unet": type(pipe.unet).__module__, "id2label": pipe.id2label,
               "dakter_modules": sorted(m for m in sys.modules if m.split(".")[0] == "dakter_hf")}, f)
"""


def run_without_dakter_hf(source: str, tmp_path: Path, custom_pipeline: str = "pipeline_dakter",
                          env: dict | None = None, inputs: dict[str, np.ndarray] | None = None,
                          fields: tuple[str, ...] = OUTPUT_FIELDS) -> tuple[dict[str, np.ndarray], dict]:
    """Load `source` (a directory or a Hub repo id) with remote code in a process without dakter_hf; generate.

    The pipeline is called with `inputs` (arrays, e.g. `masks` or `images` of a conditional pipeline) or, without
    them, with `batch_size=BATCH_SIZE`. Returns the output `fields` and what the process loaded (module names).
    """
    output = str(tmp_path / "remote_output.npz")
    inputs_file = ""
    if inputs:
        inputs_file = str(tmp_path / "remote_inputs.npz")
        np.savez(inputs_file, **inputs)
    args = dict(source=source, custom_pipeline=custom_pipeline, seed=SEED, steps=STEPS, fields=list(fields),
                call={} if inputs else {"batch_size": BATCH_SIZE}, inputs=inputs_file, output=output)
    # A private modules cache: diffusers copies remote code there (by default under ~/.cache/huggingface).
    process_env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf_modules"), **(env or {})}
    result = subprocess.run([sys.executable, "-c", _NO_DAKTER_SCRIPT, json.dumps(args)], env=process_env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"remote-code process failed:\n{result.stdout}\n{result.stderr[-4000:]}"
    with np.load(output) as arrays:
        outputs = {name: arrays[name] for name in fields}
    return outputs, json.loads(Path(output + ".json").read_text())


def assert_same_outputs(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    for name in ("images", "soft_labels"):
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-5, rtol=0, err_msg=name)
    # Hard labels are the argmax of the soft labels: they may only differ where two classes tie within 1e-5.
    top2 = np.sort(expected["soft_labels"], axis=-1)[..., -2:]
    ties = (top2[..., 1] - top2[..., 0]) < 1e-5
    assert np.array_equal(actual["labels"][~ties], expected["labels"][~ties])


def assert_loaded_remote_code(loaded: dict) -> None:
    assert loaded["dakter_modules"] == []
    assert loaded["id2label"] == {str(k): v for k, v in ID2LABEL.items()}  # through JSON
    assert loaded["pipeline"].startswith("diffusers_modules.")
    assert loaded["unet"].startswith("diffusers_modules.")


# ---- the generated files --------------------------------------------------------------------------------------


def test_committed_remote_code_is_up_to_date():
    make_hub_pipeline = _load_generator_script()
    stale = make_hub_pipeline.stale_files(make_hub_pipeline.DEFAULT_OUTPUT_DIR)
    assert stale == [], f"pipelines/dakter/ is out of date ({stale}): run `python utils/make_hub_pipeline.py`."


def test_check_mode_detects_stale_and_extra_files(tmp_path, capsys):
    make_hub_pipeline = _load_generator_script()
    assert make_hub_pipeline.main(["--output_dir", str(tmp_path)]) == 0
    assert make_hub_pipeline.main(["--check", "--output_dir", str(tmp_path)]) == 0
    edited = tmp_path / "pipeline_dakter.py"
    edited.write_text(edited.read_text() + "\n# hand edit\n")
    (tmp_path / "unet" / "old_name.py").write_text("")
    assert make_hub_pipeline.main(["--check", "--output_dir", str(tmp_path)]) == 1
    assert "pipeline_dakter.py" in capsys.readouterr().out
    assert make_hub_pipeline.main(["--output_dir", str(tmp_path)]) == 0  # regenerates and removes the extra file
    assert make_hub_pipeline.stale_files(tmp_path) == []


@pytest.mark.parametrize("path", sorted(remote_code_files()))
def test_remote_code_is_self_contained(path):
    source = remote_code_files()[path]
    tree = ast.parse(source)
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level], "relative import"
    assert not [m for m in imported if m.split(".")[0] == "dakter_hf"]
    compile(source, path, "exec")


def test_remote_code_files_match_model_index(tmp_path):
    make_tiny_pipeline().save_pretrained(tmp_path)
    library, class_name = json.loads((tmp_path / "model_index.json").read_text())["unet"]
    assert library == "dakter_hf.models.joint_unet_2d"  # saved pipelines record this path forever
    files = remote_code_files()
    assert set(files) == {"pipeline_dakter.py", "pipeline_dakter_mask_to_image.py", "pipeline_dakter_segmentation.py",
                          f"unet/{library}.py"}
    assert f"class {class_name}(" in files[f"unet/{library}.py"]
    assert "class DAKTerPipeline(" in files["pipeline_dakter.py"]
    assert "class DAKTerMaskToImagePipeline(" in files["pipeline_dakter_mask_to_image.py"]
    assert "class DAKTerSegmentationPipeline(" in files["pipeline_dakter_segmentation.py"]


def test_add_remote_code(tmp_path):
    with pytest.raises(ValueError, match="model_index.json"):
        add_remote_code(tmp_path)
    make_tiny_pipeline().save_pretrained(tmp_path)
    written = add_remote_code(tmp_path)
    assert sorted(Path(p).relative_to(tmp_path).as_posix() for p in written) == sorted(remote_code_files())
    for path, text in remote_code_files().items():
        assert (tmp_path / path).read_text() == text


# ---- loading ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_with_remote_code(tmp_path_factory):
    """A saved tiny pipeline carrying the remote code, and what the installed package generates from it."""
    directory = tmp_path_factory.mktemp("pipeline_with_remote_code")
    pipe = make_tiny_pipeline()
    pipe.save_pretrained(directory)
    add_remote_code(directory)
    return directory, generate(pipe)


def test_remote_code_requires_trust(saved_with_remote_code):
    directory, _ = saved_with_remote_code
    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(directory, custom_pipeline="pipeline_dakter")


def test_load_without_dakter_hf_generates_identically(saved_with_remote_code, tmp_path):
    directory, expected = saved_with_remote_code
    outputs, loaded = run_without_dakter_hf(str(directory), tmp_path)
    assert_loaded_remote_code(loaded)
    assert_same_outputs(outputs, expected)


def test_installed_pipeline_ignores_remote_code(saved_with_remote_code):
    directory, expected = saved_with_remote_code
    pipe = DAKTerPipeline.from_pretrained(directory)
    assert type(pipe.unet) is JointUNet2DModel
    assert_same_outputs(generate(pipe), expected)


@pytest.mark.parametrize("custom_pipeline", ["pipeline_dakter_mask_to_image", "pipeline_dakter_segmentation"])
def test_conditional_pipelines_load_without_dakter_hf(saved_with_remote_code, tmp_path, custom_pipeline):
    directory, _ = saved_with_remote_code
    if custom_pipeline == "pipeline_dakter_segmentation":
        pipeline_cls, fields = DAKTerSegmentationPipeline, ("soft_labels", "labels")
        inputs = {"images": np.random.default_rng(0).integers(0, 256, (BATCH_SIZE, 20, 24, 1), dtype=np.uint8)}
    else:
        pipeline_cls, fields = DAKTerMaskToImagePipeline, OUTPUT_FIELDS
        inputs = {"masks": np.random.default_rng(0).integers(0, 3, (BATCH_SIZE, 16, 16))}
    installed = pipeline_cls.from_pretrained(directory)
    out = installed(generator=torch.Generator().manual_seed(SEED), num_inference_steps=STEPS, output_type="np",
                    **inputs)
    outputs, loaded = run_without_dakter_hf(str(directory), tmp_path, custom_pipeline=custom_pipeline, inputs=inputs,
                                            fields=fields)
    assert_loaded_remote_code(loaded)
    for name in fields:
        np.testing.assert_allclose(outputs[name], np.asarray(getattr(out, name)), atol=1e-5, rtol=0, err_msg=name)
