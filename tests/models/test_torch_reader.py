"""The numpy-only ``.pth`` reader: exact values, both torch formats, and refusal of code.

Fixtures in ``tests/golden`` were written by torch itself (``scripts/make_reader_fixtures.py``):
``tiny_legacy.pth``/``tiny_zip.pth`` hold the same state dict, ``tiny_expected.npz`` its
values as torch saw them, ``lite0_wheel_digest.npz`` a SHA-256 of every tensor of the real
Lite0 weight file as ``torch.load`` returns it. Malicious files are built here by hand.
"""

import hashlib
import io
import os
import pickle
import pickletools
import shlex
import struct
import zipfile

import numpy as np
import pytest

import jaxviz.models
from jaxviz.cli import main as cli_main
from jaxviz.common.errors import JaxvizError
from jaxviz.models.torch_reader import UnsafeWeightsError, WeightFileError, load_torch_state_dict
from tests.toys import GOLDEN

FORMATS = ["tiny_legacy.pth", "tiny_zip.pth"]


@pytest.fixture(scope="module")
def expected():
    with np.load(os.path.join(GOLDEN, "tiny_expected.npz")) as f:
        return {k: f[k] for k in f.files}


# --- exact reading ------------------------------------------------------------------------


@pytest.mark.parametrize("fname", FORMATS)
def test_fixture_reads_exactly(fname, expected):
    state = load_torch_state_dict(os.path.join(GOLDEN, fname))
    names = [k.removesuffix("__bf16bits") for k in expected]
    assert list(state) == names  # order preserved
    for key, want in expected.items():
        if key.endswith("__bf16bits"):
            got = state[key.removesuffix("__bf16bits")]
            assert got.dtype.name == "bfloat16" and got.shape == want.shape
            np.testing.assert_array_equal(got.view(np.uint16), want)
            continue
        got = state[key]
        assert isinstance(got, np.ndarray), key
        assert got.dtype == want.dtype, key
        assert got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=key)


@pytest.mark.parametrize("fname", FORMATS)
def test_views_are_independent_contiguous_copies(fname, expected):
    state = load_torch_state_dict(os.path.join(GOLDEN, fname))
    assert state["int64_scalar"].shape == () and int(state["int64_scalar"]) == -1234567890123
    for key in ("transposed", "strided_slice", "shared_a", "shared_b"):
        assert state[key].flags.c_contiguous and state[key].flags.writeable, key
    # shared_a and shared_b come from one storage at different offsets; editing one must
    # not change the other.
    state["shared_a"][:] = 99.0
    np.testing.assert_array_equal(state["shared_b"], expected["shared_b"])
    np.testing.assert_array_equal(state["transposed"], expected["transposed"])


def test_both_formats_agree():
    legacy = load_torch_state_dict(os.path.join(GOLDEN, "tiny_legacy.pth"))
    zipped = load_torch_state_dict(os.path.join(GOLDEN, "tiny_zip.pth"))
    assert list(legacy) == list(zipped)
    for key in legacy:
        assert legacy[key].dtype == zipped[key].dtype
        np.testing.assert_array_equal(legacy[key], zipped[key])


def test_real_lite0_wheel_is_bit_identical_to_torch_load():
    path = jaxviz.models.weights_file("efficientnet_lite0")
    state = load_torch_state_dict(path)
    with np.load(os.path.join(GOLDEN, "lite0_wheel_digest.npz")) as f:
        digest = {k: f[k] for k in f.files}
    assert len(state) == 296
    assert list(state) == list(digest["names"])
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_fc.bias"].shape == (1000,)
    trainable = sum(a.size for k, a in state.items()
                    if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert trainable == 4_652_008
    for (name, array), dtype, shape, sha in zip(state.items(), digest["dtypes"], digest["shapes"],
                                                digest["sha256"]):
        assert array.dtype.str == dtype, name
        assert ",".join(map(str, array.shape)) == shape, name
        assert hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest() == sha, name


# --- malicious files ----------------------------------------------------------------------


def _global_call(module: str, name: str, arg: str) -> bytes:
    """Protocol-0 pickle: GLOBAL module.name, called with one string (REDUCE)."""
    return f"c{module}\n{name}\n(V{arg}\ntR.".encode()


def _payloads(sentinel):
    shell = f"touch {shlex.quote(str(sentinel))}"
    py = f"open({str(sentinel)!r}, 'w').close()"

    class ViaReduce:  # what a real attacker's pickle.dumps produces (posix.system on Linux)
        def __reduce__(self):
            return os.system, (shell,)

    class ViaEval:
        def __reduce__(self):
            return eval, (py,)

    return {
        "os.system": _global_call("os", "system", shell),
        "posix.system": _global_call("posix", "system", shell),
        "builtins.eval": _global_call("builtins", "eval", py),
        "builtins.exec": _global_call("builtins", "exec", py),
        "reduce-protocol2": pickle.dumps(ViaReduce(), protocol=2),
        "reduce-protocol5-stack-global": pickle.dumps(ViaEval(), protocol=5),
        "nested-in-ordereddict": pickle.dumps({"weight": ViaReduce()}, protocol=2),
    }


PAYLOADS = list(_payloads("x"))


def _legacy_file(body: bytes, header_ok: bool) -> bytes:
    if not header_ok:
        return body  # the very first pickle (where the magic number belongs) is the attack
    magic = 0x1950A86A20F9469CFC6C
    header = pickle.dumps(magic, 2) + pickle.dumps(1001, 2) + pickle.dumps({"little_endian": True}, 2)
    return header + body + pickle.dumps([], 2)


def _zip_file(body: bytes) -> bytes:
    """The real tiny_zip.pth with its data.pkl replaced by ``body``."""
    out = io.BytesIO()
    with zipfile.ZipFile(os.path.join(GOLDEN, "tiny_zip.pth")) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = body if info.filename.endswith("data.pkl") else src.read(info)
            dst.writestr(info.filename, data)
    return out.getvalue()


def test_payloads_are_live(tmp_path):
    """Guards the test itself: an unrestricted unpickler really runs every payload."""
    for kind, body in _payloads(tmp_path / "control").items():
        control = tmp_path / "control"
        pickle.loads(body)
        assert control.exists(), kind
        control.unlink()


@pytest.mark.parametrize("container", ["legacy-header", "legacy-body", "zip"])
@pytest.mark.parametrize("kind", PAYLOADS)
def test_malicious_pickle_is_refused_without_running(tmp_path, kind, container):
    sentinel = tmp_path / "SENTINEL"
    body = _payloads(sentinel)[kind]
    data = {
        "legacy-header": lambda: _legacy_file(body, header_ok=False),
        "legacy-body": lambda: _legacy_file(body, header_ok=True),
        "zip": lambda: _zip_file(body),
    }[container]()
    path = tmp_path / "evil.pth"
    path.write_bytes(data)
    with pytest.raises(UnsafeWeightsError, match="refusing") as info:
        load_torch_state_dict(path)
    assert not sentinel.exists()
    assert str(path) in str(info.value)


def test_unknown_persistent_id_is_refused(tmp_path):
    # PERSID with a string id (the zip format expects a ('storage', ...) tuple)
    path = tmp_path / "persid.pth"
    path.write_bytes(_zip_file(b"Pfoo\n."))
    with pytest.raises(UnsafeWeightsError):
        load_torch_state_dict(path)


# --- broken files -------------------------------------------------------------------------


def _broken_files():
    legacy = open(os.path.join(GOLDEN, "tiny_legacy.pth"), "rb").read()
    zipped = open(os.path.join(GOLDEN, "tiny_zip.pth"), "rb").read()
    no_pkl = io.BytesIO()
    with zipfile.ZipFile(no_pkl, "w") as z:
        z.writestr("archive/readme.txt", "no pickle here")
    missing_storage = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(zipped)) as src, zipfile.ZipFile(missing_storage, "w") as dst:
        for info in src.infolist():
            if "/data/" not in info.filename:
                dst.writestr(info.filename, src.read(info))
    return {
        "empty": b"",
        "garbage": np.random.default_rng(0).bytes(4096),
        "text": b"this is not a weight file\n" * 10,
        "legacy-cut-in-header": legacy[:12],
        "legacy-cut-in-pickle": legacy[:400],
        "legacy-cut-in-tensor-data": legacy[:-5],
        "zip-cut": zipped[: len(zipped) // 2],
        "zip-without-data.pkl": no_pkl.getvalue(),
        "zip-without-storages": missing_storage.getvalue(),
        "plain-pickle-not-torch": pickle.dumps({"a": [1, 2, 3]}, 2),
    }


@pytest.mark.parametrize("kind", list(_broken_files()))
def test_broken_file_gives_clear_error(tmp_path, kind):
    path = tmp_path / f"{kind}.pth"
    path.write_bytes(_broken_files()[kind])
    with pytest.raises(WeightFileError) as info:
        load_torch_state_dict(path)
    assert isinstance(info.value, JaxvizError)
    assert not isinstance(info.value, UnsafeWeightsError) or kind == "garbage"
    assert str(path) in str(info.value)  # the message names the file


def _data_section_offset(raw: bytes) -> int:
    """Byte offset of the first storage in a legacy file (after its 5 pickles; nothing is run)."""
    f = io.BytesIO(raw)
    for _ in range(5):
        for _ in pickletools.genops(f):
            pass
    return f.tell()


NUMEL_CHANGES = {
    "negative": lambda n: -1, "zero": lambda n: 0, "one-less": lambda n: n - 1,
    "one-more": lambda n: n + 1, "4-tera": lambda n: 2**40, "2^62": lambda n: 2**62,
    "int64-max": lambda n: 2**63 - 1,
}


@pytest.mark.parametrize("change", list(NUMEL_CHANGES))
def test_legacy_storage_size_header_is_checked(tmp_path, change):
    raw = open(os.path.join(GOLDEN, "tiny_legacy.pth"), "rb").read()
    at = _data_section_offset(raw)
    (n,) = struct.unpack("<q", raw[at:at + 8])  # element count of the first stored storage
    assert 1 <= n <= 64
    numel = NUMEL_CHANGES[change](n)
    path = tmp_path / "bad_numel.pth"
    path.write_bytes(raw[:at] + struct.pack("<q", numel) + raw[at + 8:])
    with pytest.raises(WeightFileError, match="truncated or corrupt"):
        load_torch_state_dict(path)


def _tensor_zip(offset, size, stride) -> bytes:
    """A zip-format file whose tensor 'w' views a 4-float storage [0, 1, 2, 3] as given."""
    def tup(xs):
        return "(" + "".join(f"I{x}\n" for x in xs) + "t"

    pkl = ("}Vw\nctorch._utils\n_rebuild_tensor_v2\n("
           "(Vstorage\nctorch\nFloatStorage\nV0\nVcpu\nI4\ntQ"
           f"I{offset}\n{tup(size)}{tup(stride)}I00\nccollections\nOrderedDict\n)RtRs.")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("crafted/data.pkl", pkl.encode())
        z.writestr("crafted/data/0", np.arange(4, dtype=np.float32).tobytes())
    return out.getvalue()


def test_crafted_tensor_control(tmp_path):
    path = tmp_path / "ok.pth"
    path.write_bytes(_tensor_zip(0, (2, 2), (1, 2)))
    np.testing.assert_array_equal(load_torch_state_dict(path)["w"], [[0, 2], [1, 3]])


@pytest.mark.parametrize("offset,size,stride", [
    (0, (4,), (-1,)),      # negative stride would read before the buffer
    (3, (2,), (-1,)),
    (-2, (2,), (1,)),      # negative offset
    (3, (2,), (1,)),       # runs past the end
    (0, (2, 3), (2, 1)),
    (0, (2, 2), (1,)),     # stride rank differs from size rank
    (0, (-1, 2), (1, 1)),  # negative size
])
def test_tensor_views_outside_their_storage_are_refused(tmp_path, offset, size, stride):
    path = tmp_path / "bad_view.pth"
    path.write_bytes(_tensor_zip(offset, size, stride))
    with pytest.raises(WeightFileError):
        load_torch_state_dict(path)


def test_error_classes():
    assert issubclass(WeightFileError, JaxvizError)
    assert issubclass(UnsafeWeightsError, WeightFileError)


# --- through load_model and the CLI -------------------------------------------------------


@pytest.mark.parametrize("kind", ["truncated", "malicious"])
def test_cli_reports_bad_weight_file_in_one_line(tmp_path, monkeypatch, capsys, kind):
    sentinel = tmp_path / "SENTINEL"
    path = tmp_path / "weights.pth"
    if kind == "truncated":
        path.write_bytes(open(jaxviz.models.weights_file("efficientnet_lite0"), "rb").read()[:100_000])
    else:
        path.write_bytes(_legacy_file(_payloads(sentinel)["os.system"], header_ok=True))
    monkeypatch.setenv("JAXVIZ_CACHE_DIR", str(tmp_path / "cache"))  # no cached params to hit
    monkeypatch.setattr(jaxviz.models, "weights_file", lambda name: str(path))
    with pytest.raises(WeightFileError):
        jaxviz.models.load_model("efficientnet_lite0")
    code = cli_main(["layers", "--model", "efficientnet-lite0"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("jaxviz: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert ("refusing" in err) == (kind == "malicious")
    assert not sentinel.exists()
