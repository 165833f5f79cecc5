"""`benchmarks/bench_step_profile.py`: operator families, the Amdahl bound, and one real profiled step per setting."""

import json

import pytest

from repo_scripts import load_script


@pytest.fixture(scope="module")
def profile_script():
    return load_script("benchmarks/bench_step_profile.py")


def test_operator_families(profile_script):
    family = profile_script.family
    assert family("aten::convolution_backward") == "convolution"
    assert family("aten::mkldnn_convolution") == "convolution"
    assert family("aten::_scaled_dot_product_flash_attention_for_cpu_backward") == "matmul_attention"
    assert family("aten::addmm") == "matmul_attention"  # not the element-wise `add`
    assert family("aten::native_group_norm_backward") == "normalization"
    assert family("aten::silu_backward") == "activation"
    assert family("aten::copy_") == "elementwise_and_casts"
    assert family("aten::upsample_nearest2d") == "other"


def test_amdahl_bound(profile_script):
    # 80% of the baseline is compute; compute runs 2x faster, the rest 1x: the bound is 1 / (0.2 + 0.4).
    baseline = {"total_s": 1.0, "families_s": {"convolution": 0.6, "matmul_attention": 0.2, "other": 0.2}}
    candidate = {"total_s": 0.6, "families_s": {"convolution": 0.3, "matmul_attention": 0.1, "other": 0.2}}
    bound = profile_script.amdahl(baseline, candidate, target=1.8)
    assert bound["compute_speedup"] == pytest.approx(2.0)
    assert bound["step_speedup_if_only_compute_speeds_up"] == pytest.approx(1 / 0.6)
    assert bound["measured_step_speedup"] == pytest.approx(1 / 0.6)
    # 1.8x at 2x compute needs (1 - 1/1.8) / (1 - 1/2) = 0.889 of the step to be compute.
    assert bound["compute_share_needed_for_1.8x"] == pytest.approx((1 - 1 / 1.8) / 0.5)
    # A compute speed-up below the target can never reach it: the share needed exceeds 1.
    slow = {"total_s": 0.8, "families_s": {"convolution": 0.45, "matmul_attention": 0.15, "other": 0.2}}
    assert profile_script.amdahl(baseline, slow, target=1.8)["compute_share_needed_for_1.8x"] > 1


def test_profiles_the_generator_step(profile_script, tmp_path):
    output = tmp_path / "profile.json"
    result = profile_script.main(["--workload", "train", "--settings", "fp32", "fp32+channels_last", "--steps", "1",
                                  "--warmup", "0", "--threads", "1", "--output", str(output)])
    assert json.loads(output.read_text())["profiles"].keys() == {"fp32", "fp32+channels_last"}
    fp32 = result["profiles"]["fp32"]
    assert fp32["total_s"] == pytest.approx(sum(fp32["families_s"].values()))
    assert max(fp32["families_s"], key=fp32["families_s"].get) in ("convolution", "matmul_attention")
    assert "amdahl" in result["profiles"]["fp32+channels_last"] and "amdahl" not in fp32


def test_rejects_no_steps(profile_script):
    with pytest.raises(SystemExit):
        profile_script.main(["--steps", "0"])
