"""train-teacher's model config file: any field of a teacher's config by name, checked."""

import pytest

from pointdistill.models import create_model
from pointdistill.models.teacher_options import TeacherOptions, read_model_fields, teacher_spec

SMALL_SSG = """
level_widths: [[8, 8, 16], [16, 16, 32]]
global_widths: [32, 64]
neighbours: [8, 16]
"""


def test_a_model_config_file_sets_a_teachers_own_fields(tmp_path):
    path = tmp_path / "ssg.yaml"
    path.write_text(SMALL_SSG)
    spec = teacher_spec("pointnet2_ssg", 5, TeacherOptions(centres=(32, 8), model_fields=read_model_fields(str(path))))
    assert spec["level_widths"] == [[8, 8, 16], [16, 16, 32]] and spec["global_widths"] == [32, 64]
    assert spec["centres"] == [32, 8] and spec["neighbours"] == [8, 16] and spec["num_classes"] == 5
    assert create_model(spec).spec == spec
    (tmp_path / "dgcnn.json").write_text('{"dropout": 0.2}')  # JSON is YAML
    assert teacher_spec("dgcnn", 5, TeacherOptions(model_fields=read_model_fields(str(tmp_path / "dgcnn.json"))))[
        "dropout"] == 0.2


def test_model_config_mistakes_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"unknown fields \['level_width'\]"):
        teacher_spec("pointnet2_ssg", 5, TeacherOptions(model_fields={"level_width": [[8]]}))
    with pytest.raises(ValueError, match="centres set both by an option and by the model config"):
        teacher_spec("pointnet2_ssg", 5, TeacherOptions(centres=(32, 8), model_fields={"centres": [64, 16]}))
    with pytest.raises(ValueError, match="num_classes comes from the dataset"):
        teacher_spec("pointnet", 5, TeacherOptions(model_fields={"num_classes": 3}))
    with pytest.raises(ValueError, match="dropout must be in"):  # the config's own checks still run
        teacher_spec("pointnet", 5, TeacherOptions(model_fields={"dropout": 1.5}))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="list.yaml: a model config is a mapping"):
        read_model_fields(str(tmp_path / "list.yaml"))
