"""passes.apply --report: report.json against its JSON Schema, index.html, provenance, intermediates."""
import json
import re
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import onnx.parser
import pytest
from scan_testing import TINY_MODEL_TEXT

from pipelines import PassFailed, VerificationFailed, compile_model
from passes.report.provenance import read_provenance
from passes.report.schema import SCHEMA_VERSION, load_schema

def validate(report: dict) -> None:
    jsonschema.validate(report, load_schema(), cls=jsonschema.Draft202012Validator)


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "naive.onnx"
    onnx.save(onnx.parser.parse_model(TINY_MODEL_TEXT), path)
    x = np.linspace(-3, 3, 6, dtype=np.float32).reshape(2, 3)
    np.savez(tmp_path / "naive.ref.npz", x=x, y=np.maximum(x + np.array([2.0, 3.0, 4.0], np.float32), 0))
    return path


def test_schema_is_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(load_schema())
    assert load_schema()["properties"]["schema_version"]["const"] == SCHEMA_VERSION


@pytest.mark.parametrize("pipeline", ["seed", "cpu", "tpu"])
def test_micro_report_follows_schema(pipeline, micro_report):
    report = json.loads((micro_report(pipeline) / "report.json").read_text())
    validate(report)
    assert report["status"] == "ok" and report["totals"]["rerolled_scans"] == 5
    (reroll,) = [record for record in report["run"]["passes"] if record["name"] == "reroll-scans"]
    assert reroll["index"] == {"seed": 1, "cpu": 2, "tpu": 2}[pipeline]   # cpu and tpu run unroll-loops first
    assert reroll["regions"]["regions"] == 5
    assert reroll["checker"] == "ok" and reroll["shape_inference"] == "ok"
    assert report["verification"]["ok"] and report["verification"]["tolerance"] == report["tolerance"]


def test_micro_index_html(micro_report):
    page = (micro_report("seed") / "index.html").read_text()
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r'(src|href)="(?!#|data:)', page)
    assert "<svg" in page and "reroll-scans" in page
    assert re.search(r'<span class="chip minus">−[\d,]+ Gather</span>', page)
    assert re.search(r'<span class="chip plus">\+[\d,]+ CumSum</span>', page)
    assert 'tr class="unchanged"' in page  # eliminate-dead-nodes changes nothing after re-rolling
    assert "×2 identical" in page  # the two 16-step scans of stage 3


def test_provenance_survives_to_the_written_model(micro_report):
    output = micro_report("seed").parent / "seed.onnx"
    provenance = read_provenance(onnx.load(str(output), load_external_data=False))
    rerolled = {name: props for name, props in provenance.items() if name.startswith("reroll_scans/")}
    assert rerolled and all(props == {"pass": "reroll-scans", "pass_index": "1"} for props in rerolled.values())
    assert {props["pass"] for props in provenance.values()} <= {"reroll-scans", "lower-einsum", "fold-constants", "simplify"}
    # The stem's first Conv is the exporter's, untouched by every pass.
    assert "/patch_embed/patch_embed.0/Conv" not in provenance


def test_keep_intermediates_with_report(tiny, tmp_path):
    report_dir = tmp_path / "report"
    compile_model(tiny, "eliminate-dead-nodes,fold-constants", output=tmp_path / "out.onnx", report=report_dir,
                  keep_intermediates=True)
    report = json.loads((report_dir / "report.json").read_text())
    validate(report)
    paths = [entry["intermediate"] for entry in report["run"]["passes"]]
    assert paths == ["intermediates/01-eliminate-dead-nodes.onnx", "intermediates/02-fold-constants.onnx"]
    folded = onnx.load(str(report_dir / paths[1]))
    assert [node.op_type for node in folded.graph.node] == ["Add", "Relu"]
    # The Add that now reads a folded constant was rewired by fold-constants.
    assert {props["pass"] for props in read_provenance(folded).values()} == {"fold-constants"}
    assert (report_dir / "index.html").is_file()


def test_failed_verification_still_writes_a_valid_report(tiny, tmp_path):
    report_dir = tmp_path / "report"
    with pytest.raises(VerificationFailed, match="output 'y' rel L2"):
        compile_model(tiny, "eliminate-dead-nodes,fold-constants", output=tmp_path / "out.onnx", report=report_dir,
                      reference=_wrong_reference(tmp_path))
    assert not (tmp_path / "out.onnx").exists()
    report = json.loads((report_dir / "report.json").read_text())
    validate(report)
    assert report["status"] == "verification-failed" and not report["verification"]["ok"]
    page = (report_dir / "index.html").read_text()
    assert "verification-failed" in page and "FAIL" in page
    assert not (tmp_path / "out.onnx").exists()


def _wrong_reference(directory: Path) -> Path:
    x = np.linspace(-3, 3, 6, dtype=np.float32).reshape(2, 3)
    path = directory / "wrong.npz"
    np.savez(path, x=x, y=np.zeros((2, 3), np.float32) + 7)
    return path


def test_failed_pass_still_writes_a_valid_report(tiny, tmp_path):
    from passes.base import Pass
    from passes.registry import register_pass, unregister_pass

    @register_pass
    class Explodes(Pass):
        name = "test-report-explodes"

        def run(self, graph, ctx):
            raise RuntimeError("node 'shifted' (Add): cannot handle this")

    report_dir = tmp_path / "report"
    try:
        with pytest.raises(PassFailed, match=r"pass 'test-report-explodes' failed after \[eliminate-dead-nodes\]"):
            compile_model(tiny, "eliminate-dead-nodes,test-report-explodes", output=tmp_path / "out.onnx",
                          report=report_dir)
    finally:
        unregister_pass(Explodes.name)
    report = json.loads((report_dir / "report.json").read_text())
    validate(report)
    assert report["status"] == "pass-failed" and "test-report-explodes" in report["error"]
    assert [entry["name"] for entry in report["run"]["passes"]] == ["eliminate-dead-nodes"]
    assert "pass-failed" in (report_dir / "index.html").read_text()
