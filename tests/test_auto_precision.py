"""--precision auto: on a GPU the fp16 plan; on the CPU, per stage, the fastest graph whose plan passed its gate."""

from __future__ import annotations

import pytest
from smoothdino.edge.engines.manifest import Manifest
from smoothdino.export.stage_precision import (
    INT8_PLAN,
    choose_auto_plan,
    export_plan,
    fastest,
)

from .conftest import SMALL


def _spec(**kw):
    from smoothdino.export import ExportSpec

    # no --calibration: synthetic gate and calibration pairs, so the test runs without NYUv2
    return ExportSpec(**{"arch": "vits14", "adapter": "temporal", "size": SMALL, "precision": "auto",
                         "backend": "onnx", "random_weights": True, "calibration_frames": 2, **kw})


# -- choosing, with hand-built figures --------------------------------------------------------------

def test_choose_auto_plan_takes_int8_only_where_it_is_clearly_faster():
    timings = {"encoder": {"fp32": 30.0, "int8": 45.0}, "adapter": {"fp32": 1.0}, "decoder": {"fp32": 120.0, "int8": 40.0}}
    assert choose_auto_plan(timings) == {"encoder": "fp32", "adapter": "fp32", "decoder": "int8"}
    # int8 must clearly win: 3 % faster is within timing noise, 10 % is not
    assert fastest({"fp32": 100.0, "int8": 97.0}) == "fp32"
    assert fastest({"fp32": 100.0, "int8": 90.0}) == "int8"


def test_auto_resolves_to_fp16_on_gpus_and_int8_candidates_on_the_cpu():
    from smoothdino.export.exporter import export_target, formats_for

    spec = _spec(backend="tensorrt-rtx")
    assert export_target(spec) == "gpu"
    assert export_plan(spec.precision, target=export_target(spec)) == {s: "fp16" for s in INT8_PLAN["gpu"]}
    assert formats_for(spec) == ["onnx", "onnx-fp16", "tensorrt"]  # no INT8 graphs for a GPU auto
    cpu = _spec()
    assert export_target(cpu) == "cpu"
    assert export_plan("auto", target="cpu") == INT8_PLAN["cpu"]  # the candidate beside the fp32 graphs
    assert formats_for(cpu) == ["onnx", "onnx-int8"]  # FP16 graphs are for GPUs


def test_fingerprint_records_auto_and_its_calibration():
    fingerprint = _spec().fingerprint()
    assert fingerprint["precision"] == "auto"
    assert fingerprint["calibration"] is not None  # auto may choose INT8 stages, whose scales come from these frames


# -- a real CPU export --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def auto_export(tmp_path_factory):
    from smoothdino.export import export_model

    out = tmp_path_factory.mktemp("auto") / "temporal"
    _, report = export_model(_spec(), out)
    return out, report


def test_auto_on_cpu_records_timings_that_justify_its_choice(auto_export):
    out, _ = auto_export
    manifest = Manifest.load(out)
    auto = manifest.gate["auto"]
    assert set(auto["stage_ms"]) == set(manifest.stage_names)
    assert set(auto["stage_ms"]["encoder"]) == {"fp32", "int8"} and set(auto["stage_ms"]["adapter"]) == {"fp32"}
    gate = auto["int8_gate"]  # run only when some stage's int8 graph took under 95 % of its fp32 graph's time
    clearly_faster = {stage for stage, ms in auto["stage_ms"].items() if ms.get("int8", 1e9) < 0.95 * ms["fp32"]}
    assert (gate["passed"] is None) == (not clearly_faster), gate
    expected = {stage: "int8" if stage in clearly_faster and gate["passed"] else "fp32" for stage in auto["stage_ms"]}
    assert manifest.stage_precisions == expected
    assert manifest.precision == auto["chosen"]
    assert manifest.gate["passed"] and manifest.gate["stage_precision"] == expected
    assert manifest.fingerprint["precision"] == "auto"
    import json

    assert json.loads((out / "gate.json").read_text())["calibration"]["auto"]["chosen"] == auto["chosen"]

    from smoothdino.edge.pipeline import DepthPipeline

    with DepthPipeline(manifest, backend="onnxruntime") as pipeline:
        for stage, precision in expected.items():
            assert pipeline.engines[stage].path == manifest.onnx_path(stage, precision)


def test_auto_export_is_reused(auto_export, monkeypatch):
    from smoothdino.export import exporter

    out, _ = auto_export

    def refuse(*args, **kwargs):
        raise AssertionError("re-exported an up-to-date auto export")

    monkeypatch.setattr(exporter, "export_model", refuse)
    assert exporter.ensure_export(_spec(), out).fingerprint["precision"] == "auto"


# -- the verdict and the timings forced --------------------------------------------------------------

def _forced(monkeypatch, int8_passes: bool, timings: dict) -> list[str]:
    """run_gate with the verdict of INT8 candidates forced; the graph timings replaced by `timings`. Returns the
    list of the gated candidates' precisions, filled as the export runs."""
    from smoothdino.export import exporter

    real_gate = exporter.run_gate
    gated = []

    def gate(candidate, reference, pairs, tolerance):
        report = real_gate(candidate, reference, pairs, tolerance)
        gated.append((candidate.precision, sum(reference.runs.values())))  # and how often the reference ran
        if "int8" in candidate.precision:
            report.passed, report.reasons = int8_passes, [] if int8_passes else ["forced failure"]
        return report

    def time_graphs(graphs, feeds, **kw):
        assert {s: set(p) for s, p in graphs.items()} == {"encoder": {"fp32", "int8"}, "adapter": {"fp32"},
                                                          "decoder": {"fp32", "int8"}}
        return timings

    monkeypatch.setattr(exporter, "run_gate", gate)
    monkeypatch.setattr(exporter, "time_stage_graphs", time_graphs)
    return gated


TIMINGS = {"encoder": {"fp32": 30.0, "int8": 45.0}, "adapter": {"fp32": 1.0}, "decoder": {"fp32": 120.0, "int8": 40.0}}


def test_auto_keeps_the_faster_int8_decoder_and_the_faster_fp32_encoder(tmp_path, monkeypatch):
    from smoothdino.export import export_model

    gated = _forced(monkeypatch, int8_passes=True, timings=TIMINGS)
    manifest, report = export_model(_spec(), tmp_path / "mix")
    assert manifest.stage_precisions == {"encoder": "fp32", "adapter": "fp32", "decoder": "int8"}
    assert Manifest.load(tmp_path / "mix").precision == "encoder=fp32,adapter=fp32,decoder=int8"
    assert report.passed and "int8" in report.candidate  # the mix itself was gated
    assert [p for p, _ in gated] == ["encoder=fp32,adapter=fp32,decoder=int8"]  # once: the final verdict is its
    assert gated[0][1] > 0  # against the FP32 reference's own run


def test_auto_skips_the_int8_gate_where_int8_is_not_clearly_faster(tmp_path, monkeypatch):
    """A CPU without fast INT8 (no VNNI): int8 graphs within timing noise of fp32 are not worth a gate."""
    from smoothdino.export import export_model

    timings = {"encoder": {"fp32": 30.0, "int8": 31.0}, "adapter": {"fp32": 1.0}, "decoder": {"fp32": 120.0, "int8": 118.0}}
    gated = _forced(monkeypatch, int8_passes=True, timings=timings)
    manifest, report = export_model(_spec(), tmp_path / "fp32")
    assert manifest.precision == "fp32" and report.passed
    assert gated == [("fp32", 0)]  # only the final verdict on the fp32 plan, the reference itself: run once
    assert manifest.gate["auto"]["int8_gate"]["passed"] is None
    assert "no stage is faster in int8" in manifest.gate["auto"]["int8_gate"]["skipped"]


def test_auto_falls_back_to_fp32_when_the_int8_gate_fails(tmp_path, monkeypatch, capsys):
    from smoothdino.export import export_model

    gated = _forced(monkeypatch, int8_passes=False, timings=TIMINGS)
    manifest, report = export_model(_spec(), tmp_path / "fp32")
    assert [p for p, _ in gated] == ["encoder=fp32,adapter=fp32,decoder=int8", "fp32"]  # the fastest, then fp32
    assert manifest.stage_precisions == {"encoder": "fp32", "adapter": "fp32", "decoder": "fp32"}
    assert manifest.precision == "fp32" and report.passed  # the export as a whole passes: it is the fp32 plan
    assert manifest.gate["auto"]["int8_gate"]["passed"] is False
    captured = capsys.readouterr()
    assert "int8 plan failed its gate" in captured.err + captured.out  # one notice says why
