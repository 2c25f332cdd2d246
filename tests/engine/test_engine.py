"""The bit-packed engine: exact against the PyTorch student, C kernels bit for bit against the
NumPy reference on both dispatch paths, and model files that fail loudly when bad."""

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from pointdistill.data import load_dataset
from pointdistill.engine import Engine, ExportError, ModelFileError, available_kernels, export_student, load_network
from pointdistill.engine import save_network
from pointdistill.engine.runtime import KERNEL_ENV
from pointdistill.models import Checkpoint, create_model, model_spec
from pointdistill.models.binary_pointnet import BinaryPointNetConfig

SIGN_QUANTIZERS = ["bnn", "lsr", "irnet", "bireal"]
COMPILED = [k for k in available_kernels() if k != "numpy"]


def random_student(quantizer: str, aggregation: str, seed: int = 0, **fields) -> Checkpoint:
    """A student whose BatchNorm statistics, affine parameters and LSR scales are random (some
    negative), so every folding case (negative scale, flipped bits) occurs."""
    torch.manual_seed(seed)
    config = BinaryPointNetConfig(num_classes=10, quantizer=quantizer, aggregation=aggregation,
                                  **({"point_widths": (64, 64, 100, 130), "head_widths": (70, 33)} | fields))
    spec = model_spec("binary_pointnet", config)
    model = create_model(spec)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-3, 3)
            module.running_var.uniform_(0.5, 4)
            module.weight.data.uniform_(-1.5, 1.5)
            module.bias.data.uniform_(-1, 1)
        if hasattr(module, "alpha"):
            module.alpha.data.uniform_(-1, 1)
    for name, parameter in model.named_parameters():
        if "thresholds" in name:
            parameter.data.uniform_(-0.5, 0.5)
    return Checkpoint(spec, model.state_dict(), [f"c{i}" for i in range(10)], {"num_points": 200})


@pytest.fixture(scope="module")
def real_clouds(shapes_dir):
    return load_dataset(shapes_dir, "test", 200).points[:6]


ARCHITECTURES = {"plain": {}, "shortcuts": {"shortcuts": True, "point_widths": (64, 64, 128, 130)},
                 # real pooled values, a narrowing, a widening and a narrowing head shortcut
                 "head shortcuts": {"head_shortcuts": True, "point_widths": (64, 64, 100, 130),
                                    "head_widths": (65, 130, 26)},
                 "learned thresholds": {"shortcuts": True, "head_shortcuts": True, "learned_thresholds": True,
                                        "point_widths": (64, 64, 128, 130), "head_widths": (65, 130, 26)}}
# random_student's seed per architecture (else 0). With thresholds, seed 0 puts one value that an lsr+max
# layer reads of the real clouds 1.2e-7 from its threshold, where PyTorch's and the engine's float orders
# round to either side; the engine's exactness is against the NumPy reference, bit for bit, below.
SEEDS = {"learned thresholds": 1}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("aggregation", ["max", "ema"])
@pytest.mark.parametrize("quantizer", SIGN_QUANTIZERS)
def test_engine_logits_equal_the_pytorch_student_and_kernels_match_the_reference_bit_for_bit(
        quantizer, aggregation, architecture, real_clouds):
    checkpoint = random_student(quantizer, aggregation, SEEDS.get(architecture, 0), **ARCHITECTURES[architecture])
    model = checkpoint.build_model()
    network = export_student(checkpoint)
    noise = np.random.default_rng(1).standard_normal((5, 200, 3)).astype(np.float32)
    for clouds in (noise, real_clouds):
        with torch.no_grad():
            expected = model(torch.from_numpy(clouds)).logits.numpy()
        reference_trace = []
        logits = Engine(network, "numpy")(clouds, reference_trace)
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
        for kernel in COMPILED:
            trace = []
            np.testing.assert_array_equal(Engine(network, kernel)(clouds, trace), logits)
            for index, (bits, oracle) in enumerate(zip(trace, reference_trace)):
                assert bits.dtype == oracle.dtype and np.array_equal(bits, oracle), f"{kernel}: layer {index}"


@pytest.mark.parametrize("shortcuts, head_shortcuts", [(False, False), (True, False), (True, True)],
                         ids=["plain", "shortcuts", "head shortcuts"])
def test_a_trained_student_exports_and_predicts_like_pytorch(shortcuts, head_shortcuts, recorded_store, shapes_dir,
                                                             tmp_path):
    from pointdistill.distill import StudentJob, StudentTrainConfig, run_student_job
    from pointdistill.losses import LossConfig
    from pointdistill.models import load_checkpoint

    job = StudentJob(store=recorded_store, dataset=shapes_dir, out=str(tmp_path / "student"), quantizer="lsr",
                     aggregation="ema", shortcuts=shortcuts, head_shortcuts=head_shortcuts,
                     loss=LossConfig(kd_weight=0.5, reg_weight=0.01),
                     train=StudentTrainConfig(epochs=2, batch_size=16, device="cpu", lr=0.01))
    summary = run_student_job(job, progress=False)
    assert summary["student"]["shortcuts"] is shortcuts and summary["student"]["head_shortcuts"] is head_shortcuts
    student = summary["outputs"]["checkpoint"]
    model_file = tmp_path / "student.pdbn"
    run = subprocess.run([sys.executable, "-m", "flows.cli", "export", student, "-o", str(model_file)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    checkpoint = load_checkpoint(student)
    test_set = load_dataset(shapes_dir, "test", checkpoint.dataset["num_points"])
    with torch.no_grad():
        expected = checkpoint.build_model()(torch.from_numpy(test_set.points)).logits.numpy()
    network = load_network(model_file)
    assert (network.layers[0].kind == "stem_real") is shortcuts
    assert ("binary_pool_real" in [layer.kind for layer in network.layers]) is head_shortcuts
    np.testing.assert_allclose(Engine(network)(test_set.points), expected, rtol=1e-5, atol=1e-5)
    assert summary["final_test_overall_accuracy"] == pytest.approx(np.mean(expected.argmax(1) == test_set.labels))
    predicted = subprocess.run([sys.executable, "-m", "flows.cli", "predict", str(model_file), shapes_dir,
                                "--out", str(tmp_path / "predictions.csv")], capture_output=True, text=True,
                               timeout=300)
    assert predicted.returncode == 0, predicted.stderr
    accuracy = np.mean(expected.argmax(1) == test_set.labels)
    assert f"overall accuracy {accuracy:.4f}" in predicted.stderr
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert len(rows) == len(test_set) + 1


@pytest.mark.skipif(not COMPILED, reason="the C extension is not built")
def test_the_environment_variable_forces_every_path_and_refuses_one_that_cannot_run(monkeypatch):
    from pointdistill.engine.runtime import FASTEST_FIRST

    network = export_student(random_student("lsr", "ema"))
    assert Engine(network).kernel == COMPILED[0]
    for kernel in [*COMPILED, "numpy"]:
        monkeypatch.setenv(KERNEL_ENV, kernel)
        assert Engine(network).kernel == kernel
    for kernel in set(FASTEST_FIRST) - set(COMPILED):  # e.g. neon on x86, avx512 on an AVX2-only CPU
        monkeypatch.setenv(KERNEL_ENV, kernel)
        with pytest.raises(RuntimeError, match=f"{kernel!r} cannot run here; available"):
            Engine(network)
    monkeypatch.setenv(KERNEL_ENV, "fastest")
    with pytest.raises(ValueError, match=KERNEL_ENV):
        Engine(network)


def test_odd_widths_and_point_counts_pad_correctly():
    checkpoint = random_student("bnn", "ema", seed=3, point_widths=(5, 7, 130), head_widths=(65,))
    model, network = checkpoint.build_model(), export_student(checkpoint)
    for n in (1, 3, 64, 65):
        clouds = np.random.default_rng(n).standard_normal((2, n, 3)).astype(np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(clouds)).logits.numpy()
        for kernel in ["numpy", *COMPILED]:
            np.testing.assert_allclose(Engine(network, kernel)(clouds), expected, rtol=1e-5, atol=1e-5)


def test_xnor_students_are_refused_with_the_reason():
    with pytest.raises(ExportError, match="xnor.*plain signs"):
        export_student(random_student("xnor", "max"))


@pytest.fixture()
def model_file(tmp_path):
    path = tmp_path / "model.pdbn"
    save_network(path, export_student(random_student("lsr", "ema")))
    return path


def test_bad_model_files_give_clear_errors(model_file, tmp_path):
    blob = model_file.read_bytes()
    assert load_network(model_file).num_classes == 10

    def written(name, data):
        path = tmp_path / name
        path.write_bytes(data)
        return path

    with pytest.raises(ModelFileError, match="truncated"):
        load_network(written("truncated.pdbn", blob[: len(blob) - 100]))
    with pytest.raises(ModelFileError, match="truncated"):
        load_network(written("header-cut.pdbn", blob[:40]))
    with pytest.raises(ModelFileError, match="version 5; this pointdistill reads versions 1, 2, 3, 4$"):
        load_network(written("v5.pdbn", blob[:4] + struct.pack("<I", 5) + blob[8:]))
    with pytest.raises(ModelFileError, match=r"not a pointdistill binary network \(.pdbn\) file$"):
        load_network(written("other.pdbn", b"GIF8" + blob[4:]))
    with pytest.raises(ModelFileError, match="looks like a PyTorch checkpoint: make the model file with `pointdistill export"):
        load_network(written("student.pt", b"PK\x03\x04" + blob[4:]))  # torch.save writes a zip
    damaged = bytearray(blob)
    damaged[-10] ^= 0xFF
    with pytest.raises(ModelFileError, match="checksum"):
        load_network(written("damaged.pdbn", bytes(damaged)))
    # A header whose shapes disagree with the layer sizes: same length, so offsets stay valid.
    header_length = struct.unpack_from("<Q", blob, 8)[0]
    header = json.loads(blob[16:16 + header_length])
    header["layers"][2]["in"] = 65
    patched = json.dumps(header).encode()
    patched += b" " * (header_length - len(patched))
    with pytest.raises(ModelFileError, match=r"layer 2 \(binary\) takes 65 inputs but layer 1 gives 64"):
        load_network(written("shape.pdbn", blob[:16] + patched + blob[16 + header_length:]))
    with pytest.raises(ModelFileError, match="cannot read"):
        load_network(tmp_path / "missing.pdbn")


def test_cli_names_a_bad_model_file_and_exits_2(tmp_path):
    bad = tmp_path / "bad.pdbn"
    bad.write_bytes(b"PDBN\x01\x00\x00\x00")
    clouds = tmp_path / "clouds.npy"
    np.save(clouds, np.zeros((1, 16, 3), dtype=np.float32))
    run = subprocess.run([sys.executable, "-m", "flows.cli", "predict", str(bad), str(clouds)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and f"{bad}: " in run.stderr


SHORTCUTS = {"shortcuts": True, "point_widths": (64, 64, 128, 130)}
HEAD_SHORTCUTS = {"shortcuts": True, "head_shortcuts": True, "point_widths": (64, 64, 128, 256),
                  "head_widths": (128, 64, 128)}


def test_shortcuts_take_format_version_2_head_shortcuts_3_and_a_plain_student_keeps_version_1(tmp_path):
    """Readers of version 1 go on reading every student without shortcuts, readers of version 2
    every student without head shortcuts; a file says the version its layers need, and one that
    claims less is refused."""
    for fields, version in (({}, 1), (HEAD_SHORTCUTS, 3), (SHORTCUTS, 2)):
        network = export_student(random_student("lsr", "ema", **fields))
        path = tmp_path / f"v{version}.pdbn"
        save_network(path, network)
        assert struct.unpack_from("<I", path.read_bytes(), 4)[0] == version == network.version
        assert [layer.kind for layer in load_network(path).layers] == [layer.kind for layer in network.layers]
    assert [layer.kind for layer in network.layers][:4] == ["stem_real", "binary_shortcut", "binary_shortcut",
                                                            "binary_pool"]
    claimed = tmp_path / "claimed.pdbn"
    for version, claim in ((2, 1), (3, 2)):
        blob = (tmp_path / f"v{version}.pdbn").read_bytes()
        claimed.write_bytes(blob[:4] + struct.pack("<I", claim) + blob[8:])
        with pytest.raises(ModelFileError, match=f"layer kinds of format version {version} in a version {claim} file"):
            load_network(claimed)
    head = export_student(random_student("lsr", "ema", **HEAD_SHORTCUTS))
    assert [(layer.kind, layer.outputs) for layer in head.layers][3:] == [
        ("binary_pool_real", 256), ("binary_shortcut", 128), ("binary_shortcut", 64), ("binary_shortcut", 128),
        ("linear", 10)]


def test_learned_thresholds_take_format_version_4_on_the_layers_that_read_real_values_only(tmp_path):
    """Each layer that reads real values keeps its input_threshold (the pooled layer after the point
    shortcuts, the head's shortcut layers); version 4, and a file claiming 3 is refused; a threshold on
    a layer that reads bits, or of the wrong width, is refused by name."""
    network = export_student(random_student("bireal", "ema", **HEAD_SHORTCUTS, learned_thresholds=True))
    assert [("input_threshold" in layer.tensors) for layer in network.layers] == [False] + [True] * 6 + [False]
    path = tmp_path / "v4.pdbn"
    save_network(path, network)
    blob = path.read_bytes()
    assert struct.unpack_from("<I", blob, 4)[0] == 4 == network.version
    np.testing.assert_array_equal(load_network(path).layers[3].tensors["input_threshold"],
                                  network.layers[3].tensors["input_threshold"])
    path.write_bytes(blob[:4] + struct.pack("<I", 3) + blob[8:])
    with pytest.raises(ModelFileError, match="layer kinds of format version 4 in a version 3 file"):
        load_network(path)
    network.layers[3].tensors["input_threshold"] = np.zeros(100, np.float32)
    with pytest.raises(ModelFileError, match=r"layer 3 \(binary_pool_real\): input_threshold is float32 \[100\], "
                                             r"expected float32 \[128\]"):
        network.validate()
    plain = export_student(random_student("lsr", "ema", head_shortcuts=True, point_widths=(5, 7, 130),
                                          head_widths=(65, 130, 13)))  # its pooled layer reads bits
    plain.layers[2].tensors["input_threshold"] = np.zeros(plain.layers[2].inputs, np.float32)
    with pytest.raises(ModelFileError, match=r"layer 2 \(binary_pool_real\): input_threshold on a layer whose input "
                                             r"is bits, not real values \(layer 1 is binary\)"):
        plain.validate()


def test_shortcut_layers_that_do_not_repeat_or_average_their_input_whole_or_mix_with_threshold_layers_are_refused():
    network = export_student(random_student("lsr", "ema", point_widths=(64, 96, 96, 130)))
    network.layers[0].kind = "stem_real"
    for layer in network.layers[1:3]:
        layer.kind = "binary_shortcut"
        layer.tensors = {"bits": layer.tensors["bits"], "scale": np.ones(layer.outputs, np.float32),
                         "offset": np.zeros(layer.outputs, np.float32)}
    with pytest.raises(ModelFileError, match=r"layer 1 \(binary_shortcut\): 96 outputs are neither a multiple nor a "
                                             r"divisor of its 64 inputs"):
        network.validate()
    network.layers[0].kind = "stem"
    with pytest.raises(ModelFileError, match=r"layer sequence \['stem', 'binary_shortcut'.* is not"):
        network.validate()
    head = export_student(random_student("lsr", "ema", **HEAD_SHORTCUTS))
    head.layers[-2].kind = "binary_float"  # a real-valued pooled layer is followed by shortcut layers only
    with pytest.raises(ModelFileError, match=r"layer sequence .*'binary_pool_real', 'binary_shortcut', "
                                             r"'binary_shortcut', 'binary_float', 'linear'\] is not"):
        head.validate()
    head = export_student(random_student("lsr", "ema", **HEAD_SHORTCUTS))
    head.layers[3].tensors["scale"][5] = -0.5
    with pytest.raises(ModelFileError, match=r"layer 3 \(binary_pool_real\): scale must be >= 0"):
        head.validate()


@pytest.mark.skipif(not COMPILED, reason="the C extension is not built")
def test_kernels_check_sizes_instead_of_overrunning():
    from pointdistill.engine import _kernels
    from pointdistill.engine.runtime import path_code

    engine = Engine(export_student(random_student("lsr", "ema")), COMPILED[0])
    packed, code = engine.packed, path_code(COMPILED[0])
    specs = [layer.spec() for layer in packed.point_layers]
    short = (specs[0][0][:1], *specs[0][1:])  # a weight array of one group where the sizes say more
    with pytest.raises(ValueError, match="point layer 0: buffer of 64 bytes is too small"):
        _kernels.Plan(packed.stem, (short, *specs[1:]), packed.pool.spec(), (), packed.last)
    with pytest.raises(ValueError, match=r"point layer 1: inconsistent sizes \(groups 13, words 2 after 1"):
        _kernels.Plan(packed.stem, (specs[0], (*specs[1][:3], 2, specs[1][4])), packed.pool.spec(),
                      tuple(layer.spec() for layer in packed.head_layers), packed.last)
    clouds = np.zeros((2, 16, 3), dtype=np.float32)
    h = np.zeros((2, packed.classifier_inputs), dtype=np.float32)
    thresholds = engine.pool_argument(16)
    with pytest.raises(ValueError, match="points: buffer"):
        engine._plan.forward(code, clouds, 3, 16, thresholds, h)
    # Sizes whose products wrap around 2**64 are refused, not run.
    with pytest.raises(ValueError, match="bad sizes|points: buffer"):
        engine._plan.forward(code, clouds, 2**62, 2**3, thresholds, h)
    with pytest.raises(ValueError, match="h: buffer"):
        engine._plan.forward(code, clouds, 2, 16, thresholds, h[:1])
    with pytest.raises(ValueError, match="trace 2: buffer"):
        trace = list(packed.trace_buffers(2, 16))
        trace[2] = trace[2][:1]
        engine._plan.forward(code, clouds, 2, 16, thresholds, h, tuple(trace))
    x, out = np.zeros((4, 3), dtype=np.uint64), np.zeros(1, dtype=np.uint64)
    pool = packed.pool
    with pytest.raises(ValueError, match="x: buffer of 96 bytes is too small"):
        _kernels.pool(code, x, pool.weights, thresholds, 16, pool.weights.shape[0], 3, pool.out_words, out)
    with pytest.raises(ValueError, match="x: buffer"):
        _kernels.pool(code, x, pool.weights, thresholds, 2**62, pool.weights.shape[0], 4, pool.out_words, out)
    with pytest.raises(ValueError, match="unknown kernel path code 99"):
        _kernels.pool(99, x, pool.weights, thresholds, 1, 1, 3, 1, out)
    shortcut = Engine(export_student(random_student("lsr", "ema", **SHORTCUTS)), COMPILED[0]).packed
    specs = [layer.spec() for layer in shortcut.point_layers]
    heads = tuple(layer.spec() for layer in shortcut.head_layers)
    with pytest.raises(ValueError, match=r"point layer 1: inconsistent real-valued sizes \(inputs 64 after 64, "
                                         r"outputs 96"):
        _kernels.Plan(shortcut.stem, (specs[0], (*specs[1][:-1], 96)), shortcut.pool.spec(), heads, shortcut.last)
    with pytest.raises(ValueError, match="point layer 1: buffer of 256 bytes is too small"):  # scale of 64 for 128
        _kernels.Plan(shortcut.stem, (specs[0], (*specs[1][:5], specs[1][5][:64], *specs[1][6:])),
                      shortcut.pool.spec(), heads, shortcut.last)
    with pytest.raises(ValueError, match=r"stem: inconsistent sizes \(m16 64, out_words 1, real outputs 65\)"):
        _kernels.Plan((*shortcut.stem[:5], 65), tuple(specs), shortcut.pool.spec(), heads, shortcut.last)
    head_engine = Engine(export_student(random_student("lsr", "ema", **HEAD_SHORTCUTS)), COMPILED[0])
    head = head_engine.packed
    specs, heads = tuple(layer.spec() for layer in head.point_layers), [layer.spec() for layer in head.head_layers]
    with pytest.raises(ValueError, match=r"head layer 1: inconsistent real-valued sizes \(inputs 64 after 128, "):
        _kernels.Plan(head.stem, specs, head.pool.spec(), (heads[0], (*heads[1][:7], 64, heads[1][8])), ())
    with pytest.raises(ValueError, match="a real-valued pooled layer needs at least one head"):
        _kernels.Plan(head.stem, specs, head.pool.spec(), (), ())
    with pytest.raises(ValueError, match="a network with a real-valued pooled layer has none"):
        _kernels.Plan(head.stem, specs, head.pool.spec(), tuple(heads), packed.last)
    h = np.zeros((2, head.classifier_inputs), dtype=np.float32)
    with pytest.raises(ValueError, match="pool offsets: buffer of 512 bytes is too small"):  # thresholds of 64 groups
        head_engine._plan.forward(code, clouds, 2, 16, head_engine.pool_argument(16)[:128], h)


def test_non_finite_weights_are_refused_by_export_and_by_the_engine(tmp_path):
    diverged = random_student("lsr", "ema")
    diverged.state_dict["head.0.weight"] = diverged.state_dict["head.0.weight"].clone()
    diverged.state_dict["head.0.weight"][0, 0] = float("nan")
    with pytest.raises(ExportError, match=r"NaN or infinite values in 1 tensors \(head.0.weight\)"):
        export_student(diverged)
    network = export_student(random_student("lsr", "ema"))
    network.layers[-1].tensors["bias"][3] = np.inf
    path = tmp_path / "nan.pdbn"
    save_network_unchecked(path, network)
    with pytest.raises(ModelFileError, match=r"nan.pdbn: layer \d+ \(linear\): bias holds 1 non-finite values"):
        load_network(path)


def save_network_unchecked(path, network) -> None:
    """Write a model file without save_network's validation (a file damaged or made elsewhere)."""
    import pointdistill.engine.model_file as model_file

    validate = model_file.BinaryNetwork.validate
    model_file.BinaryNetwork.validate = lambda self, where="model": None
    try:
        save_network(path, network)
    finally:
        model_file.BinaryNetwork.validate = validate


def test_predict_info_names_the_cpu_features_every_path_and_the_kernel_chosen(monkeypatch, capsys):
    from flows.cli import main

    main(["predict", "--info"])
    out = capsys.readouterr().out
    assert f"kernel chosen: {available_kernels()[0]} (auto: {available_kernels()[0]};" in out
    for path in ("generic", "avx2", "avx512", "neon"):
        assert f"kernel path {path}" in out
    if COMPILED:
        assert "CPU features seen: " in out and " yes" in out
        monkeypatch.setenv(KERNEL_ENV, "generic")
        main(["predict", "--info"])
        assert "kernel chosen: generic" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["predict"])
    assert exit_.value.code == 2 and "a model file and an input are required" in capsys.readouterr().err


def test_predict_refuses_a_point_count_below_one(model_file, capsys):
    from flows.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(model_file), str(model_file), "--num-points", "-5"])
    assert exit_.value.code == 2 and "--num-points: must be at least 1, got -5" in capsys.readouterr().err


def test_hostile_model_file_headers_give_clear_errors(model_file, tmp_path):
    from pointdistill.engine.model_file import ALIGN

    blob = model_file.read_bytes()
    header_length = struct.unpack_from("<Q", blob, 8)[0]
    header = json.loads(blob[16:16 + header_length])
    payload = blob[16 + header_length + (-(16 + header_length) % ALIGN):]

    def with_header(name: str, text: bytes):
        path = tmp_path / name
        path.write_bytes(blob[:8] + struct.pack("<Q", len(text)) + text + b"\0" * (-(16 + len(text)) % ALIGN) + payload)
        return path

    with pytest.raises(ModelFileError, match=r"damaged header \(a JSON list, not an object\)"):
        load_network(with_header("list.pdbn", b"[1, 2]"))
    with pytest.raises(ModelFileError, match=r"damaged header \(RecursionError"):
        load_network(with_header("deep.pdbn", b"[" * 200_000 + b"]" * 200_000))
    huge = json.loads(json.dumps(header))
    huge["layers"][0]["tensors"]["weight"]["shape"] = [10**40, 3]
    with pytest.raises(ModelFileError, match="malformed header"):
        load_network(with_header("huge.pdbn", json.dumps(huge).encode()))
    not_objects = json.loads(json.dumps(header))
    not_objects["layers"][1] = "binary"
    with pytest.raises(ModelFileError, match="malformed header"):
        load_network(with_header("layer-string.pdbn", json.dumps(not_objects).encode()))
