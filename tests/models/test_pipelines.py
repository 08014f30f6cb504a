"""Loading a diffusers pipeline from a folder, safely, with a fingerprint of what was audited."""

from __future__ import annotations

import json
import shutil

import pytest

from imgextract.errors import InputError
from imgextract.models.pipelines import fingerprint_path, load_pipeline, native_size, resolve_model, set_scheduler


def test_a_tiny_folder_loads_with_its_fingerprint(tiny_model, tiny_pipeline_dir):
    assert tiny_model.kind == "folder" and tiny_model.fingerprint == fingerprint_path(tiny_pipeline_dir)
    assert native_size(tiny_model.pipe) == (32, 32)
    assert set_scheduler(tiny_model.pipe, "ddim") == "DDIMScheduler"
    with pytest.raises(InputError, match="unknown scheduler"):
        set_scheduler(tiny_model.pipe, "nope")


def test_changed_weights_change_the_fingerprint(tmp_path, tiny_pipeline_dir):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_pipeline_dir, copy)
    assert fingerprint_path(copy) == fingerprint_path(tiny_pipeline_dir)
    cfg = json.loads((copy / "scheduler" / "scheduler_config.json").read_text())
    cfg["steps_offset"] = 0
    (copy / "scheduler" / "scheduler_config.json").write_text(json.dumps(cfg))
    assert fingerprint_path(copy) != fingerprint_path(tiny_pipeline_dir)


@pytest.mark.parametrize("model, words", [("./nowhere", "does not exist"), ("a/b/c", "does not exist")])
def test_models_that_are_not_there_are_refused_without_a_download(model, words):
    with pytest.raises(InputError, match=words):
        resolve_model(model)


def test_a_folder_without_model_index_is_refused(tmp_path):
    with pytest.raises(InputError, match="model_index.json"):
        load_pipeline(str(tmp_path))
