"""The library marks the user's mistakes with :class:`tfrrl.errors.UserError` subclasses whose
messages say what is wrong and what to do: the experiment config (tfrrl/config/experiment.py),
the raw-input contract (tfrrl/data/link_spec.py), the run folder and the prepared dataset
(tfrrl/artifacts/). Pure Python: no TensorFlow."""

from __future__ import annotations

import pytest

from tfrrl import config
from tfrrl.artifacts import prepared, run_folder
from tfrrl.data.link_spec import DatasetSpec, LinkSpecError
from tfrrl.errors import UserError


def test_config_errors_are_user_errors_and_keep_their_builtin_types(tmp_path):
    with pytest.raises(config.ConfigNotFoundError) as missing:
        config.load_experiment(str(tmp_path / "nope.yaml"))
    assert isinstance(missing.value, (UserError, FileNotFoundError, ValueError))
    with pytest.raises(config.ConfigError, match=r"unknown config keys at train: \['epoch'\] "
                                                 r"\(did you mean train.epochs\?\)"):
        config.load_experiment(None, ["train.epoch=3"])
    with pytest.raises(config.ConfigError, match="must be KEY=VALUE"):
        config.load_experiment(None, ["train.epochs"])
    with pytest.raises(config.ConfigError, match="model.embedding_dim is a value, not a section"):
        config.load_experiment(None, ["model.embedding_dim.x=1"])
    with pytest.raises(config.ConfigError, match="model.expert_units must be a list"):
        config.load_experiment(None, ["model.expert_units=64"])
    # A config's own check of a value (tfrrl/config/backbones.py) arrives as a ConfigError.
    with pytest.raises(config.ConfigError, match="model.multi_embedding.gate must be"):
        config.load_experiment(None, ["model.multi_embedding.gate=nope"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [\n", encoding="utf-8")
    with pytest.raises(config.ConfigError, match="is not valid YAML"):
        config.load_experiment(str(bad))
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n", encoding="utf-8")
    with pytest.raises(config.ConfigError, match="must hold a mapping"):
        config.load_experiment(str(listed))


SPEC = """
impressions: {path: interactions.csv, columns: {timestamp: null, click: null}}
entity_types:
  item: {path: items.csv, id_column: item_id, fields: {category: genre}}
"""


def test_link_spec_mistakes_name_the_section_and_the_keys():
    assert DatasetSpec.from_yaml(SPEC).entity_types["item"].id_column == "item_id"
    cases = {
        SPEC.replace("path: items.csv", "pth: items.csv"):
            "entity type 'item': unknown keys ['pth']",
        SPEC + "  video: {path: v.csv, link: {column: item}}\n":
            "entity type 'video' link: missing keys ['entity_type']",
        SPEC.replace("path: interactions.csv, ", ""): "impressions: missing keys ['path']",
        SPEC.replace("category: genre", "categroy: genre"):
            "unknown unified entity fields ['categroy']",
        SPEC + "labels: click\n": "unknown keys in link spec: ['labels']",
        "impressions: {path: [\n": "not valid YAML",
        "- a\n": "a link spec is a mapping",
        "impressions: {path: a.csv}\n": "needs an 'entity_types' section",
    }
    for text, message in cases.items():
        with pytest.raises(LinkSpecError) as err:
            DatasetSpec.from_yaml(text)
        assert message in str(err.value)
        assert isinstance(err.value, UserError) and isinstance(err.value, ValueError)


def test_link_spec_file_errors_name_the_file(tmp_path):
    from tfrrl.data import link_spec

    (tmp_path / "link_spec.yaml").write_text("impressions: {pth: x}\nentity_types: {item: }\n",
                                             encoding="utf-8")
    with pytest.raises(LinkSpecError, match=r"link_spec.yaml: impressions: unknown keys"):
        link_spec.load(str(tmp_path))


def test_run_folder_and_prepared_dataset_checks(tmp_path):
    with pytest.raises(run_folder.RunFolderError, match="does not exist"):
        run_folder.check_run_folder(str(tmp_path / "missing"))
    with pytest.raises(run_folder.RunFolderError, match="is not a run folder"):
        run_folder.check_run_folder(str(tmp_path))
    (tmp_path / run_folder.CONFIG_FILE).write_text("name: x\n", encoding="utf-8")
    assert run_folder.check_run_folder(str(tmp_path)) == str(tmp_path)
    with pytest.raises(run_folder.RunFolderError, match="pass the prepared dataset explicitly"):
        run_folder.data_dir_of(str(tmp_path))
    with pytest.raises(FileNotFoundError):  # still the built-in type callers may catch
        run_folder.read_json(str(tmp_path), run_folder.HISTORY_FILE)

    data = tmp_path / "data"
    with pytest.raises(prepared.PreparedDatasetError, match="does not exist"):
        prepared.check_prepared(str(data))
    data.mkdir()
    with pytest.raises(prepared.PreparedDatasetError, match="not a prepared dataset"):
        prepared.check_prepared(str(data))
    (data / prepared.STATS_FILE).write_text("{}", encoding="utf-8")
    with pytest.raises(prepared.PreparedDatasetError, match="incomplete"):
        prepared.check_prepared(str(data))
    (data / prepared.SUCCESS_FILE).write_text("", encoding="utf-8")
    assert prepared.check_prepared(str(data)) == str(data)
    assert prepared.check_prepared("gs://bucket/data") == "gs://bucket/data"  # unchecked
