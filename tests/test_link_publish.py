"""Data safety of a link run (beam_pipelines/publish.py): no overwrite without --overwrite,
the object-store overwrite, and a crashed run that publishes nothing."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import IN_MEMORY


def test_refuses_to_overwrite(hand_built_prepared):
    from beam_pipelines.run import OutputExistsError, run

    with pytest.raises(OutputExistsError):
        run(str(hand_built_prepared["raw"]), str(hand_built_prepared["out"]),
            beam_args=IN_MEMORY)


def test_overwrite_on_an_object_store_deletes_the_old_folder_recursively(
        hand_built_prepared, monkeypatch):
    # On gs:// there is no rename: --overwrite deletes the old _SUCCESS, then the old dataset.
    # Beam's GCS delete is recursive only for a path ending in "/" (gcsfilesystem.delete); a
    # bare "gs://b/data" matches no object and would leave every old shard in place.
    from beam_pipelines import publish, runner
    from beam_pipelines.run import run
    from tfrrl.data import link_spec

    spec = link_spec.load(str(hand_built_prepared["raw"]))
    deleted = []
    monkeypatch.setattr(publish, "is_local", lambda path: False)
    monkeypatch.setattr(publish.fileio, "exists", lambda path: True)
    monkeypatch.setattr(publish.fileio, "glob", lambda pattern: ["gs://b/data/part-0"])
    # (apache-beam[gcp] is not installed here, so Beam cannot join gs:// paths itself.)
    monkeypatch.setattr(publish.fileio, "join", lambda base, *parts: "/".join((base,) + parts))
    monkeypatch.setattr(publish.FileSystems, "delete", deleted.extend)

    def stop(*_args, **_kwargs):
        raise RuntimeError("stop before running the pipeline")

    monkeypatch.setattr(runner, "default_pipeline_options", stop)
    with pytest.raises(RuntimeError, match="stop before"):
        run(str(hand_built_prepared["raw"]), "gs://b/data", spec=spec, overwrite=True)
    assert deleted == ["gs://b/data/_SUCCESS", "gs://b/data/"]


def test_a_local_claim_creates_the_parent_and_a_hidden_staging_name(tmp_path):
    # The parent of out exists once the output is claimed, so a run that fails before its
    # first write leaves the same folders as one that fails after (Beam's steps run in no fixed
    # order, and the injected crash can come first). The staging folder is made by the first write.
    from beam_pipelines import publish

    out = tmp_path / "a" / "b" / "out"
    work = publish.claim_output(str(out), overwrite=False)
    assert os.listdir(tmp_path / "a" / "b") == []
    assert os.path.dirname(work) == str(out.parent)
    assert os.path.basename(work).startswith(".out.tmp-")


def _crashing_pipeline(real_build):
    """build_pipeline plus a step that raises, so the run dies after writing part of its
    output (a stand-in for a worker crash)."""
    import apache_beam as beam

    def build(p, *args, **kwargs):
        real_build(p, *args, **kwargs)

        def boom(_):
            raise RuntimeError("injected crash")

        _ = p | "Crash" >> beam.Create([0]) | "Boom" >> beam.Map(boom)

    return build


def test_crashed_run_publishes_nothing_and_keeps_the_old_dataset(hand_built_prepared, tmp_path,
                                                                 monkeypatch):
    from beam_pipelines import one_pass
    from beam_pipelines.run import run

    raw = str(hand_built_prepared["raw"])
    monkeypatch.setattr(one_pass, "build_pipeline",
                        _crashing_pipeline(one_pass.build_pipeline))
    # A fresh output: nothing at out, no staging folder left beside it.
    fresh = tmp_path / "fresh" / "out"
    with pytest.raises(Exception, match="injected crash"):
        run(raw, str(fresh), beam_args=IN_MEMORY)
    assert not fresh.exists() and os.listdir(fresh.parent) == []
    # --overwrite of a complete dataset by a run that crashes: the old one is untouched.
    old = tmp_path / "old"
    shutil.copytree(hand_built_prepared["out"], old)
    before = sorted(str(p.relative_to(old)) for p in old.rglob("*"))
    with pytest.raises(Exception, match="injected crash"):
        run(raw, str(old), beam_args=IN_MEMORY, overwrite=True)
    assert sorted(str(p.relative_to(old)) for p in old.rglob("*")) == before
    assert sorted(os.listdir(tmp_path)) == ["fresh", "old"]
    # A run that succeeds replaces it (published by rename; nothing temporary left).
    monkeypatch.undo()
    (old / "stale.txt").write_text("from the old dataset")
    run(raw, str(old), beam_args=IN_MEMORY, overwrite=True)
    assert (old / "_SUCCESS").exists() and not (old / "stale.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["fresh", "old"]
