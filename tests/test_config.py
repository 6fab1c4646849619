"""Run configs: presets, YAML overrides, and errors that name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from apis.config import ConfigError, dump_config, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_shipped_configs_load():
    for path in sorted(CONFIGS.rglob("*.yaml")):  # configs/real/ too
        cfg = load_config(path)
        assert cfg.loop.steps >= 1, path


def test_overrides_apply_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: tiny\nmodel: {backbone: {name: resnet18, pretrained: false}, train_min_sizes: [96]}\n"
                    "initial: {iterations: 7, lr: 1}\nloop: {seeds: [3, 4]}\n")
    cfg = load_config(path)
    assert cfg.model.backbone.name == "resnet18" and cfg.model.backbone.pretrained is False
    assert cfg.model.train_min_sizes == (96,)
    assert cfg.initial.iterations == 7 and cfg.initial.lr == 1.0 and isinstance(cfg.initial.lr, float)
    assert cfg.loop.seeds == [3, 4]
    assert cfg.finetune.iterations == load_config().finetune.iterations  # untouched
    dump_config(cfg, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == cfg


@pytest.mark.parametrize("text, fragment", [
    ("loop: {stratgies: [random]}", "stratgies"),
    ("initial: {iterations: many}", "initial.iterations"),
    ("preset: huge", "huge"),
    ("[1, 2]", "mapping"),
    ("loop: {steps: [", "YAML"),
    ("loop: {box_start_pairwise: -1}", "loop.box_start_pairwise must be ≥ 0"),
    ("loop: {p0_pairwise: -0.5}", "loop.p0_pairwise must be ≥ 0"),
])
def test_bad_config_names_key_and_file(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert fragment in str(e.value)
    if fragment != "huge":
        assert str(path) in str(e.value)


def test_configs_demo_yaml_is_what_the_demo_runs():
    from pathlib import Path

    from apis.config import DEMO_OVERRIDES

    demo_yaml = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    assert load_config(demo_yaml) == load_config(None, DEMO_OVERRIDES)


def test_review_keys_load_and_bad_values_name_the_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("loop: {review: {per_step: 27, accept_iou: 0.8}, review_points: 3}\ncost: {review_seconds: 1.5}\n")
    cfg = load_config(path)
    assert (cfg.loop.review.per_step, cfg.loop.review.accept_iou, cfg.loop.review_points) == (27, 0.8, 3)
    assert cfg.cost.review_seconds == 1.5
    default = load_config()
    assert (default.loop.review.per_step, default.loop.review_points, default.cost.review_seconds) == (0, 2, 3.0)
    dump_config(cfg, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == cfg
    for text, fragment in [("loop: {review: {per_stp: 1}}", "per_stp"),
                           ("loop: {review: {accept_iou: 1.5}}", "loop.review.accept_iou"),
                           ("loop: {review: {per_step: -1}}", "loop.review.per_step"),
                           ("loop: {review_points: -2}", "loop.review_points")]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")) as e:
            load_config(path)
        assert str(path) in str(e.value)
