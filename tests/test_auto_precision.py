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

def _forced(monkeypatch, int8_passes: bool, timings: dict) -> dict:
    """run_gate with the verdict of INT8 candidates forced; the speed probe's timings replaced by `timings`.
    Returns what happened, filled as the export runs: `gated` (each gated plan, and whether its reference was the
    recorded FP32 run), `calibrated` (the stages each calibration quantized), `references` (FP32 reference runs)."""
    from smoothdino.export import exporter

    real_gate, real_calibrate, real_record = exporter.run_gate, exporter.calibrate_int8, exporter.record_run
    seen = {"gated": [], "calibrated": [], "references": 0}

    def gate(candidate, reference, pairs, tolerance, **kw):
        report = real_gate(candidate, reference, pairs, tolerance, **kw)
        seen["gated"].append((candidate.precision, isinstance(reference, exporter.RecordedRun)))
        if "int8" in candidate.precision:
            report.passed, report.reasons = int8_passes, [] if int8_passes else ["forced failure"]
        return report

    def time_graphs(graphs, feeds, **kw):
        # only the INT8-candidate stages' probes are timed, the encoder in turns with its FP32 graph; the decoder's
        # and the adapter's FP32 times are their best runs in the recorded reference
        assert {s: set(p) for s, p in graphs.items()} == {"encoder": {"fp32", "int8"}, "decoder": {"int8"}}
        assert all(p.name.endswith(".probe.int8.onnx") for s in graphs for k, p in graphs[s].items() if k == "int8")
        for _ in range(kw["repeats"] + 1):  # the runs it stands for, as the progress bar counts them
            for s in graphs:
                for p in graphs[s]:
                    kw["progress"](s, p)
        return {s: {p: timings[s][p] for p in graphs[s]} for s in graphs}

    def calibrate(ctx, stages, count):
        seen["calibrated"].append(list(stages))
        return real_calibrate(ctx, stages, count)

    def record(pipeline, pairs, **kw):
        seen["references"] += 1
        assert pipeline.precision == "fp32"
        return real_record(pipeline, pairs, **kw)

    def reference_ms(reference, stages):
        measured = real_reference_ms(reference, stages)
        assert set(measured) == set(stages) and all(ms > 0 for ms in measured.values())
        return {s: timings[s]["fp32"] for s in stages}

    real_reference_ms = exporter.reference_stage_ms
    monkeypatch.setattr(exporter, "run_gate", gate)
    monkeypatch.setattr(exporter, "time_stage_graphs", time_graphs)
    monkeypatch.setattr(exporter, "reference_stage_ms", reference_ms)
    monkeypatch.setattr(exporter, "calibrate_int8", calibrate)
    monkeypatch.setattr(exporter, "record_run", record)
    return seen


TIMINGS = {"encoder": {"fp32": 30.0, "int8": 45.0}, "adapter": {"fp32": 1.0}, "decoder": {"fp32": 120.0, "int8": 40.0}}


def test_auto_keeps_the_faster_int8_decoder_and_the_faster_fp32_encoder(tmp_path, monkeypatch):
    """The encoder's INT8 probe is slower than its FP32 graph: the encoder is never calibrated, and the manifest
    says so; only the decoder is calibrated, its plan gated once, against the FP32 reference run once."""
    from smoothdino.export import export_model

    seen = _forced(monkeypatch, int8_passes=True, timings=TIMINGS)
    manifest, report = export_model(_spec(), tmp_path / "mix")
    assert manifest.stage_precisions == {"encoder": "fp32", "adapter": "fp32", "decoder": "int8"}
    assert Manifest.load(tmp_path / "mix").precision == "encoder=fp32,adapter=fp32,decoder=int8"
    assert report.passed and "int8" in report.candidate  # the mix itself was gated
    assert seen["gated"] == [("encoder=fp32,adapter=fp32,decoder=int8", True)]  # once, against the recorded FP32 run
    assert seen["calibrated"] == [["decoder"]] and seen["references"] == 1
    assert not (tmp_path / "mix" / "encoder.int8.onnx").exists()
    assert not list((tmp_path / "mix").glob("*.probe.*"))  # probe graphs never land in the export
    auto = manifest.gate["auto"]
    assert auto["calibrated"] == ["decoder"] and set(auto["not_calibrated"]) == {"encoder"}
    assert "not calibrated" in auto["not_calibrated"]["encoder"]
    assert auto["calibration_pairs"] == len(report.calibration["calibration_pairs"]) >= 1
    gate_frames = {f for pair in report.calibration["gate_pairs"] for f in pair}
    assert not gate_frames & {f for pair in report.calibration["calibration_pairs"] for f in pair}  # held out


def test_auto_skips_calibration_and_the_int8_gate_where_int8_is_not_clearly_faster(tmp_path, monkeypatch, capsys):
    """A CPU without fast INT8 (no VNNI): int8 graphs within timing noise of fp32 are not calibrated nor gated;
    the FP32 plan's verdict is its recorded reference run (one run of the pipeline in all)."""
    from smoothdino.export import export_model

    timings = {"encoder": {"fp32": 30.0, "int8": 31.0}, "adapter": {"fp32": 1.0}, "decoder": {"fp32": 120.0, "int8": 118.0}}
    seen = _forced(monkeypatch, int8_passes=True, timings=timings)
    manifest, report = export_model(_spec(), tmp_path / "fp32")
    assert manifest.precision == "fp32" and report.passed
    assert seen["gated"] == [("fp32", True)] and seen["calibrated"] == [] and seen["references"] == 1
    assert not list((tmp_path / "fp32").glob("*int8*"))
    auto = manifest.gate["auto"]
    assert auto["int8_gate"]["passed"] is None and "no stage is faster in int8" in auto["int8_gate"]["skipped"]
    assert auto["calibrated"] == [] and set(auto["not_calibrated"]) == {"encoder", "decoder"}
    captured = capsys.readouterr()
    assert "auto: chose fp32" in captured.err + captured.out and "not calibrated" in captured.err + captured.out


def test_auto_falls_back_to_fp32_when_the_int8_gate_fails(tmp_path, monkeypatch, capsys):
    from smoothdino.export import export_model

    seen = _forced(monkeypatch, int8_passes=False, timings=TIMINGS)
    manifest, report = export_model(_spec(), tmp_path / "fp32")
    # the fastest, then fp32, whose verdict is the FP32 reference's recorded run: the pipeline ran once in FP32
    assert seen["gated"] == [("encoder=fp32,adapter=fp32,decoder=int8", True), ("fp32", True)]
    assert seen["references"] == 1
    assert manifest.stage_precisions == {"encoder": "fp32", "adapter": "fp32", "decoder": "fp32"}
    assert manifest.precision == "fp32" and report.passed  # the export as a whole passes: it is the fp32 plan
    assert manifest.gate["auto"]["int8_gate"]["passed"] is False
    captured = capsys.readouterr()
    assert "int8 plan failed its gate" in captured.err + captured.out  # one notice says why


def test_the_meter_is_told_every_step_and_the_work_it_planned(tmp_path, monkeypatch):
    """The progress bar's figures: each step named, and the work done adds up to the work planned (what the
    export decided not to do taken back), so its time-left estimate ends at zero, not before, not after."""
    from smoothdino.export import export_model
    from smoothdino.export.exporter import ExportMeter

    class Meter(ExportMeter):
        def __init__(self):
            super().__init__(lambda m: None)
            self.steps, self.decisions = [], []

        def step(self, text):
            self.steps.append(text)

        def decision(self, text):
            self.decisions.append(text)

    for timings in (TIMINGS, {s: {p: 1.0 for p in ms} for s, ms in TIMINGS.items()}):  # int8 pays / does not
        _forced(monkeypatch, int8_passes=True, timings=timings)
        meter = Meter()
        export_model(_spec(), tmp_path / str(len(meter.steps)) / str(id(timings)), progress=meter)
        assert meter.total > 0 and abs(meter.done - meter.total) < 1e-6 * meter.total, (meter.done, meter.total)
        assert any("FP32 reference" in s for s in meter.steps) and any("speed probe" in s for s in meter.steps)
        assert len(meter.decisions) == 1 and meter.decisions[0].startswith("auto: chose")
