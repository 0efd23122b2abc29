"""tfrrl.analysis: singular spectra, Information Abundance (Tencent §7.2), frequency buckets,
the Diversity Index (Crocodile Eq. 1–2), expert-output collection and ``tfrrl analyze`` end to
end. Expected values are worked out by hand in the comments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.conftest import TINY_MODEL
from tfrrl.analysis import diversity, spectrum


# -- spectrum / IA -----------------------------------------------------------------------------
def test_ia_of_a_rank_one_matrix_is_one():
    # u vᵀ with u = (1, 2, 3), v = (1, 2): σ = (‖u‖‖v‖, 0) = (√14·√5, 0) → IA = σ₁/σ₁ = 1.
    m = np.outer([1.0, 2.0, 3.0], [1.0, 2.0])
    sigma = spectrum.singular_values(m)
    assert sigma[0] == pytest.approx(math.sqrt(70.0))
    assert sigma[1] == pytest.approx(0.0, abs=1e-12)
    assert spectrum.information_abundance(m) == pytest.approx(1.0)


def test_ia_of_orthogonal_rows_of_equal_norm_is_the_rank():
    # Rows (1,1,0,0), (1,−1,0,0), (0,0,1,1): pairwise orthogonal, each of norm √2
    # → M Mᵀ = 2·I₃, so σ = (√2, √2, √2) and IA = 3·√2 / √2 = 3 = rank.
    m = np.array([[1, 1, 0, 0], [1, -1, 0, 0], [0, 0, 1, 1]], dtype=float)
    np.testing.assert_allclose(spectrum.singular_values(m), [math.sqrt(2)] * 3)
    assert spectrum.information_abundance(m) == pytest.approx(3.0)
    # A scaled identity too: 5·I₄ → σ = (5, 5, 5, 5), IA = 4.
    assert spectrum.information_abundance(5 * np.eye(4)) == pytest.approx(4.0)


def test_singular_values_of_a_hand_made_2x2():
    # A = [[3, 0], [4, 5]]: AᵀA = [[25, 20], [20, 25]], eigenvalues 45 and 5
    # → σ = (√45, √5) = (3√5, √5) ≈ (6.708, 2.236);
    # IA = (3√5 + √5) / 3√5 = 4/3.
    a = np.array([[3.0, 0.0], [4.0, 5.0]])
    np.testing.assert_allclose(spectrum.singular_values(a), [3 * math.sqrt(5), math.sqrt(5)])
    assert spectrum.information_abundance(a) == pytest.approx(4.0 / 3.0)
    summary = spectrum.spectrum_summary(a)
    assert summary["rows"] == 2 and summary["dim"] == 2
    assert summary["ia"] == pytest.approx(4.0 / 3.0)


def test_centered_ia_and_rank_of_non_negative_rows():
    # Rows (2, 0), (0, 2), (2, 0), (0, 2): MᵀM = diag(8, 8) → σ = (√8, √8), raw IA 2, rank 2.
    # Minus the mean (1, 1): (1, −1), (−1, 1), … all on one direction → centred IA 1.
    m = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    s = spectrum.spectrum_summary(m)
    assert s["ia"] == pytest.approx(2.0) and s["rank"] == 2
    assert s["ia_centered"] == pytest.approx(1.0)
    # A dead unit (an all-zero column) lowers the rank, not the other σ: (3, 0, 0), (0, 4, 0).
    dead = spectrum.spectrum_summary(np.array([[3.0, 0.0, 0.0], [0.0, 4.0, 0.0]]))
    assert dead["rank"] == 2 and dead["ia"] == pytest.approx((4 + 3) / 4)


def test_ia_of_a_zero_matrix_is_undefined():
    assert math.isnan(spectrum.information_abundance(np.zeros([3, 2])))
    assert spectrum.finite_or_none(float("nan")) is None
    with pytest.raises(ValueError, match="2-D"):
        spectrum.singular_values(np.zeros([2, 2, 2]))


def test_per_bucket_split_on_a_hand_made_frequency_table():
    # entity row → training count: 3→1, 4→5, 5→10, 6→50, 7→2; edges (5, 20):
    #   "<5"      : counts 1, 2   → rows 3, 7
    #   "[5,20)"  : counts 5, 10  → rows 4, 5
    #   ">=20"    : count 50      → row 6
    rows, counts = [3, 4, 5, 6, 7], [1, 5, 10, 50, 2]
    buckets = spectrum.split_rows_by_frequency(rows, counts, [5, 20])
    assert list(buckets) == ["<5", "[5,20)", ">=20"]
    assert buckets["<5"].tolist() == [3, 7]
    assert buckets["[5,20)"].tolist() == [4, 5]
    assert buckets[">=20"].tolist() == [6]
    # Per-bucket IA on a table whose rows 3, 7 are parallel (IA 1) and rows 4, 5 orthogonal
    # with equal norms (IA 2).
    table = np.zeros([8, 2])
    table[3], table[7] = [1, 1], [2, 2]
    table[4], table[5], table[6] = [1, 0], [0, 1], [3, 4]
    spectra = spectrum.per_bucket_spectra(table, buckets)
    assert spectra["<5"]["ia"] == pytest.approx(1.0)
    assert spectra["[5,20)"]["ia"] == pytest.approx(2.0)
    assert spectra[">=20"]["ia"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="increasing"):
        spectrum.bucket_of([1, 2], [5, 5])


def test_quantile_bucket_edges():
    # counts 1…10, 5 groups: the "higher" quantiles at q = .2, .4, .6, .8 sit at sorted
    # positions ⌈9q⌉ = 2, 4, 6, 8 → values 3, 5, 7, 9; each group then holds 2 entities.
    counts = list(range(1, 11))
    edges = spectrum.bucket_edges_by_quantile(counts, 5)
    assert edges == [3.0, 5.0, 7.0, 9.0]
    buckets = spectrum.split_rows_by_frequency(list(range(10)), counts, edges)
    assert list(buckets) == ["<3", "[3,5)", "[5,7)", "[7,9)", ">=9"]
    assert [len(v) for v in buckets.values()] == [2, 2, 2, 2, 2]


# -- Diversity Index ---------------------------------------------------------------------------
def _outputs_with_norms(norms):
    """Expert outputs [n, M, 2] whose L2 norms are ``norms`` (vectors (0.6 x, 0.8 x))."""
    norms = np.asarray(norms, dtype=float)
    return np.stack([0.6 * norms, 0.8 * norms], axis=-1)


def test_diversity_index_af_and_sf_on_a_hand_made_example():
    # Experts: 0 shared, 1 specific to domain 0, 2 specific to domain 1; τ_t = 2, τ_b = 0.5.
    #   sample 0: norms (3, 2.5, 0.1) → AF: 3 ≥ 2 and 0.1 ≤ 0.5 → 1;
    #             SF(0→1): 2.5 ≥ 2 and 0.1 ≤ 0.5 → 1
    #   sample 1: norms (1, 1, 1)     → AF 0;                          SF 0
    #   sample 2: norms (0.2, 0.3, 2) → AF: 2 ≥ 2 and 0.2 ≤ 0.5 → 1;  SF: 0.3 < 2 → 0
    #   sample 3: norms (2, 0.5, 1)   → AF: 2 ≥ 2 and 0.5 ≤ 0.5 → 1;  SF: 0.5 < 2 → 0
    # D_con = {0, 1, 2, 3}: DI^AF = 3/4, DI^SF = 1/4;  D_con = {0, 1}: DI^AF = DI^SF = 1/2.
    norms = diversity.expert_norms(_outputs_with_norms(
        [[3, 2.5, 0.1], [1, 1, 1], [0.2, 0.3, 2], [2, 0.5, 1]]))
    np.testing.assert_allclose(norms[0], [3, 2.5, 0.1])
    all4, first2 = [0, 1, 2, 3], [0, 1]
    assert diversity.diversity_index_af(norms, all4, 2.0, 0.5) == pytest.approx(0.75)
    assert diversity.diversity_index_sf(norms, all4, 1, 2, 2.0, 0.5) == pytest.approx(0.25)
    assert diversity.diversity_index_af(norms, first2, 2.0, 0.5) == pytest.approx(0.5)
    assert diversity.diversity_index_sf(norms, first2, 1, 2, 2.0, 0.5) == pytest.approx(0.5)
    assert math.isnan(diversity.diversity_index_af(norms, [], 2.0, 0.5))
    with pytest.raises(ValueError, match="below"):
        diversity.diversity_index_af(norms, all4, 1.0, 1.0)
    # The report: pair (0→1) on all four samples, (1→0) on sample 2 only:
    # (1→0) AF = 1; SF(1→0) uses expert 2 ≥ 2 (yes) and expert 1 = 0.3 ≤ 0.5 (yes) → 1.
    report = diversity.diversity_report(norms, {(0, 1): np.array(all4), (1, 0): np.array([2])},
                                        2.0, 0.5, domain_expert=[1, 2],
                                        domain_names=["a", "b"])
    rows = {(r["i"], r["j"]): r for r in report["pairs"]}
    assert rows[("a", "b")]["af"] == pytest.approx(0.75)
    assert rows[("a", "b")]["sf"] == pytest.approx(0.25)
    assert rows[("b", "a")]["af"] == pytest.approx(1.0)
    assert rows[("b", "a")]["sf"] == pytest.approx(1.0)
    assert report["af_mean"] == pytest.approx(0.875)
    assert report["sf_mean"] == pytest.approx(0.625)
    no_sf = diversity.diversity_report(norms, {(0, 1): np.array(all4)}, 2.0, 0.5)
    assert no_sf["pairs"][0]["sf"] is None and no_sf["sf_mean"] is None


def test_thresholds_from_percentiles():
    # norms 0, 1, …, 10: the 80th percentile is 8, the 20th is 2 (linear interpolation).
    assert diversity.thresholds_from_percentiles(np.arange(11.0)) == (8.0, 2.0)
    with pytest.raises(ValueError):
        diversity.thresholds_from_percentiles(np.arange(11.0), 20, 80)


def test_conflict_samples_on_a_hand_made_history():
    # Samples (user, domain, category): 0 (u10, d0, c5), 1 (u11, d0, c6), 2 (u12, d1, c5),
    # 3 (u10, d1, c7). History: u10 chose c8 in d1 and c7 in d0; u11 chose c6 in d1;
    # u12 chose c9 in d0.
    # key = category:
    #   (0→1): s0: u10 active in d1, never c5 there → in; s1: u11 chose c6 in d1 → out → [0]
    #   (1→0): s2: u12 active in d0, never c5 → in; s3: u10 chose c7 in d0 → out → [2]
    # key = user (no key check): every sample whose user is active in the other domain:
    #   (0→1): u10, u11 active in d1 → [0, 1];  (1→0): u12, u10 active in d0 → [2, 3]
    s_users, s_domains, s_cats = [10, 11, 12, 10], [0, 0, 1, 1], [5, 6, 5, 7]
    h_users, h_domains, h_cats = [10, 11, 12, 10], [1, 1, 0, 0], [8, 6, 9, 7]
    by_cat = diversity.conflict_samples(s_users, s_domains, h_users, h_domains, 2,
                                        s_cats, h_cats)
    assert by_cat[(0, 1)].tolist() == [0] and by_cat[(1, 0)].tolist() == [2]
    by_user = diversity.conflict_samples(s_users, s_domains, h_users, h_domains, 2)
    assert by_user[(0, 1)].tolist() == [0, 1] and by_user[(1, 0)].tolist() == [2, 3]
    with pytest.raises(ValueError, match="both"):
        diversity.conflict_samples(s_users, s_domains, h_users, h_domains, 2, s_cats, None)


# -- on a trained tiny run ---------------------------------------------------------------------
EPOCHS, STEPS = 2, 3


@pytest.fixture(scope="module")
def tiny_run(small_synthetic_prepared, tmp_path_factory):
    """The rrl backbone trained 2 epochs × 3 steps with one checkpoint per epoch."""
    from tfrrl import config
    from tfrrl.training import trainer

    run = tmp_path_factory.mktemp("analysis") / "run"
    exp = config.load_experiment(None, TINY_MODEL + [
        "name=tiny_analysis", f"train.epochs={EPOCHS}", f"train.steps_per_epoch={STEPS}",
        "train.eval_steps=1", "train.save_epoch_checkpoints=true"])
    model, _ = trainer.train(exp, str(small_synthetic_prepared), str(run), verbose=0)
    return {"run": run, "model": model, "data": str(small_synthetic_prepared)}


def test_epoch_checkpoints_are_kept(tiny_run):
    from tfrrl.artifacts import run_folder

    found = run_folder.epoch_checkpoints(str(tiny_run["run"]))
    assert [e for e, _ in found] == list(range(1, EPOCHS + 1))


def test_tfrrl_analyze_end_to_end(tiny_run, capsys):
    from tfrrl_cli import main as cli

    out = tiny_run["run"] / "analysis_out"
    assert cli.main(["analyze", "--run", str(tiny_run["run"]), "--out", str(out),
                     "--max-examples", "200"]) == 0
    printed = capsys.readouterr().out
    assert "Information Abundance" in printed and "Diversity Index" in printed
    result = json.loads((out / "analysis.json").read_text())
    dim = 8  # TINY_MODEL embedding_dim
    ent = result["tables"]["entity_id"]
    assert ent["dim"] == dim and 1.0 <= ent["ia"] <= dim
    assert len(ent["singular_values"]) == dim
    assert list(result["frequency_buckets"]["tables"]) == ["entity_id"]
    buckets = result["frequency_buckets"]["tables"]["entity_id"]
    assert len(buckets) >= 2 and all(1.0 <= b["ia"] <= dim for b in buckets.values())
    experts = result["experts"]
    assert experts["source"] == "e_s/e_d"
    domains = result["domains"]
    assert experts["names"] == ["shared"] + [f"specific_{d}" for d in domains]
    assert experts["examples"] == 200
    assert set(experts["per_domain"]["shared"]) <= set(domains)
    div = result["diversity"]
    k = len(domains)
    assert len(div["pairs"]) == k * (k - 1)  # ordered pairs
    assert div["sf_available"] and div["tau_b"] < div["tau_t"]
    for row in div["pairs"]:
        for form in ("af", "sf"):
            assert row[form] is None or 0.0 <= row[form] <= 1.0
    assert [c["epoch"] for c in result["checkpoints"]] == list(range(1, EPOCHS + 1))
    assert set(result["checkpoints"][0]["experts"]) == set(experts["names"])
    for png in ("spectra_tables.png", "spectra_experts.png", "ia_checkpoints.png",
                "diversity.png"):
        assert (out / png).stat().st_size > 1000, png
    # benchmarks/collapse.py on two runs (here the same analysis twice, --reuse).
    from benchmarks import collapse as bench

    bench_out = tiny_run["run"] / "bench"
    for name in ("rrl", "again"):
        (bench_out / name).mkdir(parents=True)
        (bench_out / name / "analysis.json").write_text(json.dumps(result))
    assert bench.main(["--runs", f"rrl={tiny_run['run']},again={tiny_run['run']}", "--out",
                       str(bench_out), "--reuse"]) == 0
    md = (bench_out / "collapse.md").read_text()
    assert "| entity_id | " in md and "DI^AF" in md and "| rrl | shared (e_s/e_d) |" in md
    for png in ("collapse_spectra.png", "collapse_ia_checkpoints.png",
                "collapse_diversity.png"):
        assert (bench_out / png).stat().st_size > 1000, png
    with pytest.raises(SystemExit):
        bench.parse_runs("a=x,a=y")
    # A table filter and explicit bucket edges.
    out2 = tiny_run["run"] / "analysis_filtered"
    assert cli.main(["analyze", "--run", str(tiny_run["run"]), "--out", str(out2),
                     "--max-examples", "64", "--tables", "entity_id,user_id",
                     "--bucket-edges", "5,20", "--no-checkpoints",
                     "--conflict-key", "user"]) == 0
    result2 = json.loads((out2 / "analysis.json").read_text())
    assert sorted(result2["tables"]) == ["entity_id", "user_id"]
    assert result2["frequency_buckets"]["edges"] == [5.0, 20.0]
    assert result2["checkpoints"] == []
    with pytest.raises(KeyError, match="no embedding table"):
        cli.main(["analyze", "--run", str(tiny_run["run"]), "--out", str(out2),
                  "--tables", "nope", "--no-checkpoints"])


def test_expert_outputs_key_of_a_backbone_dict(tiny_run, monkeypatch):
    """A backbone returning ``expert_outputs`` [B, C, M, d] (multi-embedding, STEM, Crocodile,
    ADI) is read as is, with its ``expert_names`` and ``domain_expert_index``."""
    import tensorflow as tf

    from tfrrl.analysis import collect, report
    from tfrrl.data.reader import PreparedDataset

    model, data = tiny_run["model"], PreparedDataset(tiny_run["data"])
    backbone = model.backbone
    original = backbone.call

    def fake(r, domain_index, e_did, training=False):
        out = dict(original(r, domain_index, e_did, training=training))
        base = r[..., :4]
        out = {"scores": out["scores"],  # no e_s / e_d: only the new key
               "expert_outputs": tf.stack([base, 2.0 * base, r[..., 4:8]], axis=2)}
        return out

    monkeypatch.setattr(backbone, "call", fake)
    monkeypatch.setattr(backbone, "expert_names", ["a", "b", "c"], raising=False)
    monkeypatch.setattr(backbone, "domain_expert_index", [0, 1, 2, -1], raising=False)
    got = collect.collect_expert_outputs(model, data, max_examples=40, batch_size=16)
    assert got.source == "expert_outputs" and got.names == ["a", "b", "c"]
    assert got.outputs.shape == (40, 3, 4)
    np.testing.assert_allclose(got.outputs[:, 1], 2.0 * got.outputs[:, 0], rtol=1e-6)
    # b = 2·a row by row: the same singular directions, so the same IA.
    assert spectrum.information_abundance(got.outputs[:, 1]) == pytest.approx(
        spectrum.information_abundance(got.outputs[:, 0]))
    history = collect.training_history(data, int(model.num_domains))
    result = report.analyze_model(model, data, tables=["entity_id"], max_examples=40,
                                  history=history)
    assert result["experts"]["source"] == "expert_outputs"
    pairs = result["diversity"]["pairs"]
    # Domain 3 has no specific expert (−1): SF only for pairs between domains 0, 1 and 2.
    assert all((r["sf"] is None) == ("d3" in (r["i"], r["j"])) or r["conflict_samples"] == 0
               for r in pairs)


def test_tower_input_fallback_and_no_expert_message(tiny_run, monkeypatch):
    """Without ``expert_outputs`` / ``e_s``+``e_d`` the towers' input is read; without towers
    either, a clear message."""
    from tfrrl.analysis import collect, report
    from tfrrl.data.reader import PreparedDataset

    model, data = tiny_run["model"], PreparedDataset(tiny_run["data"])
    original = model.backbone.call
    monkeypatch.setattr(model.backbone, "call",
                        lambda *a, **k: {"scores": original(*a, **k)["scores"]})
    got = collect.collect_expert_outputs(model, data, max_examples=32, batch_size=16)
    assert got.source == "tower_input" and got.names == ["tower_input"]
    assert got.outputs.shape[:2] == (32, 1) and np.abs(got.outputs).sum() > 0
    monkeypatch.setattr(collect, "_towers", lambda backbone: [])
    with pytest.raises(collect.NoExpertOutputs, match="exposes no expert output"):
        collect.collect_expert_outputs(model, data, max_examples=8, batch_size=8)
    result = report.analyze_model(model, data, tables=["entity_id"], max_examples=8)
    assert "exposes no expert output" in result["experts"]["message"]
