"""Raspberry Pi support that runs anywhere: backend probe and fallback, `edgeconv info` and
`warmup`, the Pi bundle and its runner, start-up cost. The emulated-Pi checks are in
test_rpi_emulated.py."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import edgeconv
from edgeconv.cli import main
from edgeconv.errors import EdgeconvError
from edgeconv.kernels import probe
from edgeconv.targets import get_profile
from tests.conftest import EXAMPLES


def _env(tmp_path: Path, **extra) -> dict:
    env = dict(os.environ)
    env.pop("EDGECONV_BACKEND", None)
    env["EDGECONV_CACHE_DIR"] = str(tmp_path / "ec-cache")
    env.update(extra)
    return env


def _python(code: str, env: dict, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> Path:
    """The demo's int8 LeNet-5 (shipped float model, 200 shipped calibration images)."""
    from edgeconv.api import quantize_model

    path = tmp_path_factory.mktemp("model") / "lenet5.int8.edgeconv"
    calib = np.load(EXAMPLES / "mnist_calib_200.npz")["x"]
    result = quantize_model(edgeconv.load(EXAMPLES / "lenet5.onnx"), calib, limit=200)
    edgeconv.save(result.graph, path)
    return path


# ---------------------------------------------------------------- import cost
def test_import_edgeconv_does_not_import_numba_or_numpy():
    r = subprocess.run(
        [sys.executable, "-c",
         "import sys, edgeconv, edgeconv.kernels, edgeconv.sysinfo, edgeconv.kernels.probe\n"
         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'numpy',"
         " 'llvmlite')))"],
        capture_output=True, text=True, check=True,
    )
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("argv", [["info"], ["--help"]])
def test_info_and_help_start_fast(argv, tmp_path):
    """`edgeconv info` and `--help` in a fresh process: best of 5 under 0.3 s. The probe
    verdict is cached first (the one-time probe is not what this measures)."""
    if os.environ.get("EDGECONV_EMULATED"):
        pytest.skip("start-up time under qemu-user emulation says nothing about a Pi")
    env = _env(tmp_path)
    # a well-used cache: 1,000 compiled models' generated sources and Numba entries
    gen = tmp_path / "ec-cache" / "kernels"
    (gen / "__pycache__").mkdir(parents=True)
    for i in range(1000):
        (gen / f"edgeconv_gen_{i:024x}.py").write_text("# generated\n")
        for suffix in ("run-66.py311.nbi", "run-66.py311.1.nbc"):
            (gen / "__pycache__" / f"edgeconv_gen_{i:024x}.{suffix}").write_bytes(b"x" * 10)
    cmd = [sys.executable, "-m", "edgeconv.cli", *argv]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=300)
    if argv == ["info"]:
        assert "1000 compiled model(s)" in first.stdout
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        best = min(best, time.perf_counter() - t)
        assert r.returncode == 0, r.stderr
    assert best < 0.3, f"edgeconv {' '.join(argv)} took {best:.3f} s"


def test_info_imports_neither_numba_nor_numpy(tmp_path):
    env = _env(tmp_path)
    code = ("import sys, io, contextlib\nfrom edgeconv.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['info'])\n"
            "print([m for m in ('numba', 'numpy') if m in sys.modules])")
    _python(code, env)  # first call may run the probe (in a child)
    r = _python(code, env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------- probe
def test_probe_answer_is_computed_not_fixed():
    exp = probe._expected()
    assert exp.startswith("edgeconv-probe ") and len(exp.split(",")) == 16
    assert len(set(exp.split(" ")[1].split(","))) > 8


def test_probe_verdict_is_cached_per_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECONV_CACHE_DIR", str(tmp_path))
    calls = []
    monkeypatch.setattr(probe, "run_probe", lambda timeout=None: calls.append(1) or
                        {"usable": True, "reason": "stub verdict", "seconds": 0.0})
    monkeypatch.setattr(probe, "find_spec", lambda name: SimpleNamespace(origin=None))
    first = probe.numba_verdict()
    second = probe.numba_verdict()
    assert calls == [1]
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["reason"] == "stub verdict"
    assert probe.environment_key() in json.loads(probe.cache_file().read_text())
    monkeypatch.setenv("NUMBA_CPU_NAME", "cortex-a76")  # codegen setting: new environment
    probe.numba_verdict()
    assert calls == [1, 1]


def test_probe_timeout_is_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(probe, "find_spec", lambda name: SimpleNamespace(origin=None))
    monkeypatch.setattr(probe, "run_probe", lambda timeout=None: {
        "usable": False, "reason": "slow", "seconds": 1.0, "cacheable": False})
    v = probe.numba_verdict()
    assert v["usable"] is False and v["stored"] is False
    assert not probe.cache_file().exists()


def test_probe_without_numba_installed_does_not_spawn(monkeypatch):
    monkeypatch.setattr(probe, "find_spec", lambda name: None)
    monkeypatch.setattr(probe, "run_probe", lambda timeout=None: pytest.fail("probed"))
    v = probe.numba_verdict()
    assert v == {"usable": False, "reason": "numba is not installed", "cached": False}


def _fake_numba(tmp_path: Path, body: str) -> Path:
    pkg = tmp_path / "fake" / "numba"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(body)
    return tmp_path / "fake"


def test_aborting_numba_falls_back_to_numpy_without_crashing(tmp_path, int8_model):
    """A Numba that aborts the process on first compile (Debian armhf 0.56.4): the probe
    child dies, the caller survives on the NumPy backend, says so once, and the output
    bytes equal the Numba backend's."""
    fake = _fake_numba(
        tmp_path,
        "import os, sys\n"
        "def njit(*a, **k):\n"
        "    def deco(f):\n"
        "        def call(*args):\n"
        "            sys.stderr.write('LLVM ERROR: Symbol not found: __sync_fetch_and_add_4\\n')\n"
        "            sys.stderr.flush()\n"
        "            os.abort()\n"
        "        return call\n"
        "    return deco\n",
    )
    env = _env(tmp_path, PYTHONPATH=str(fake))
    code = (
        "import numpy as np, edgeconv\n"
        "from edgeconv import kernels\n"
        f"m = edgeconv.load({str(int8_model)!r})\n"
        f"x = np.load({str(EXAMPLES / 'mnist_test_1k.npz')!r})['x'][:50]\n"
        "y = m.run(x); y = m.run(x)\n"
        "print(kernels.backend_name()); print(kernels.backend_reason())\n"
        "np.save('out.npy', y)\n"
    )
    r = _python(code, env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    name, reason = r.stdout.strip().splitlines()[-2:]
    assert name == "numpy"
    assert "SIGABRT" in reason and "__sync_fetch_and_add_4" in reason
    assert r.stderr.count("using the NumPy backend") == 1
    verdict = json.loads((tmp_path / "ec-cache" / "backend-probe.json").read_text())
    assert [v["usable"] for v in verdict.values()] == [False]
    # second process: verdict from the cache (no child), same answer
    r2 = _python(code, env, cwd=tmp_path)
    assert r2.returncode == 0 and r2.stdout.strip().splitlines()[-2] == "numpy"
    ref = edgeconv.load(int8_model).run(np.load(EXAMPLES / "mnist_test_1k.npz")["x"][:50])
    assert np.load(tmp_path / "out.npy").tobytes() == ref.tobytes()


def test_numba_that_computes_wrong_is_refused(tmp_path):
    fake = _fake_numba(
        tmp_path,
        "def njit(*a, **k):\n"
        "    return lambda f: (lambda *args: f(*args) + 1)\n",
    )
    env = _env(tmp_path, PYTHONPATH=str(fake))
    r = _python("from edgeconv.kernels.probe import run_probe; print(run_probe()['reason'])", env)
    assert "wrong result" in r.stdout


def test_forced_backend_skips_probe_and_message(tmp_path):
    env = _env(tmp_path, EDGECONV_BACKEND="numpy")
    r = _python("from edgeconv import kernels; print(kernels.backend_name())", env)
    assert r.stdout.strip() == "numpy" and r.stderr == ""
    assert not (tmp_path / "ec-cache").exists()


def test_bad_backend_name_is_an_error(monkeypatch):
    from edgeconv import kernels

    monkeypatch.setenv("EDGECONV_BACKEND", "cuda")
    with pytest.raises(EdgeconvError, match="EDGECONV_BACKEND"):
        kernels.backend_choice()


# ---------------------------------------------------------------- info, cpu, cache
def test_info_json_reports_backend_cache_and_cpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "nc"))
    assert main(["info", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    for key in ("version", "backend", "backend_reason", "numba", "numpy", "numba_cache_dir",
                "numba_cache", "cpu", "probe_cache"):
        assert key in obj
    assert obj["backend"] in ("numba", "numpy")
    assert obj["numba_cache_dir"].startswith(str(tmp_path / "nc"))
    assert obj["numba_cache"]["state"] == "empty"
    assert set(obj["cpu"]) >= {"arch", "neon", "dotprod"}
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "backend:" in text and "numba cache" in text and "cpu:" in text


def test_cpu_features_from_hwcap(monkeypatch):
    from edgeconv import sysinfo

    a72 = (1 << 0) | (1 << 1)  # fp, asimd
    a76 = a72 | (1 << 20)  # + asimddp
    monkeypatch.setattr(sysinfo, "_cpuinfo", lambda: {"CPU part": "0xd0b"})
    monkeypatch.setattr(sysinfo.struct, "calcsize", lambda fmt: 8)
    monkeypatch.setattr(sysinfo, "_auxv", lambda: {16: a72})
    f = sysinfo.cpu_features("aarch64")
    assert (f["neon"], f["dotprod"]) == (True, False)
    monkeypatch.setattr(sysinfo, "_auxv", lambda: {16: a76, 26: 1 << 13})
    f = sysinfo.cpu_features("aarch64")
    assert (f["neon"], f["dotprod"], f["i8mm"], f["cpu"]) == (True, True, True, "cortex-a76")
    # 32-bit userland (HWCAP_NEON is bit 12 there), also under a 64-bit kernel
    monkeypatch.setattr(sysinfo.struct, "calcsize", lambda fmt: 4)
    monkeypatch.setattr(sysinfo, "_auxv", lambda: {16: 1 << 12})
    for machine in ("armv7l", "aarch64"):
        f = sysinfo.cpu_features(machine)
        assert (f["neon"], f["dotprod"]) == (True, False)
    assert sysinfo.cpu_features("aarch64")["arch"] == "aarch64 kernel, 32-bit userland"


def test_auxv_parses_this_process():
    from edgeconv import sysinfo

    aux = sysinfo._auxv()
    if not aux:
        pytest.skip("no /proc/self/auxv here")
    assert aux.get(6) == os.sysconf("SC_PAGE_SIZE")  # AT_PAGESZ


def test_numba_cache_dir_matches_numbas_own_choice(tmp_path, monkeypatch):
    """Our reading of Numba's cache rules, checked against Numba itself."""
    pytest.importorskip("numba")
    from numba.core.caching import FunctionCache

    from edgeconv import sysinfo
    from edgeconv.kernels import fast

    for env in ({"NUMBA_CACHE_DIR": str(tmp_path / "user")}, {}):
        for k in ("NUMBA_CACHE_DIR",):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setattr("numba.core.config.CACHE_DIR", env.get("NUMBA_CACHE_DIR", ""))
        want = FunctionCache(fast._fc_kernel.py_func)._cache_path
        assert str(sysinfo.numba_cache_dir()[0]) == want


@pytest.mark.parametrize("engine", ["default", "ops"])
def test_warmup_fills_the_cache_and_info_counts_it(engine, tmp_path, int8_model):
    """`edgeconv warmup` fills Numba's cache; info's count of library kernels and compiled
    models equals the index files Numba wrote; a second warm-up loads instead of compiling."""
    from edgeconv import sysinfo

    env = _env(tmp_path, NUMBA_CACHE_DIR=str(tmp_path / "nc"))
    if engine == "ops":
        env["EDGECONV_ENGINE"] = "ops"
    cmd = [sys.executable, "-m", "edgeconv.cli", "warmup", str(int8_model), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    if obj["backend"] != "numba":
        pytest.skip(f"Numba not usable here: {obj['backend_reason']}")
    library = {n for src in sysinfo._fast_kernels_file().parent.glob("*.py")
               for n in sysinfo.cached_kernel_names(src)}
    index = [p.name[: -len(".nbi")] for p in (tmp_path / "nc").rglob("*.nbi")]
    generated = {n.split(".")[0] for n in index if n.startswith("edgeconv_gen_")}
    assert all(n in library for n in index if not n.startswith("edgeconv_gen_"))
    cache = obj["numba_cache"]
    assert cache["kernels"] == len([n for n in index if n in library])
    assert cache["models"] == len(generated)
    assert cache["kernels"] + cache["models"] > 0 and cache["state"].startswith("filled")
    again = json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env,
                                      timeout=600).stdout)
    assert again["first_run_seconds"] < obj["first_run_seconds"]


# ---------------------------------------------------------------- bundle
def _png(img: np.ndarray, filt: int = 0) -> bytes:
    """A grey (or RGB) 8-bit PNG with every row using filter type `filt`."""
    img = np.asarray(img, np.uint8)
    h, w = img.shape[:2]
    c = 1 if img.ndim == 2 else img.shape[2]
    rows = img.reshape(h, w * c).astype(np.int32)
    raw = bytearray()
    prev = np.zeros(w * c, np.int32)
    for row in rows:
        left = np.concatenate([np.zeros(c, np.int32), row[:-c]])
        upleft = np.concatenate([np.zeros(c, np.int32), prev[:-c]])
        if filt == 0:
            enc = row
        elif filt == 1:
            enc = row - left
        elif filt == 2:
            enc = row - prev
        elif filt == 3:
            enc = row - (left + prev) // 2
        else:
            p = left + prev - upleft
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
            enc = row - pred
        raw += bytes([filt]) + (enc & 0xFF).astype(np.uint8).tobytes()
        prev = row

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(
            ">I", zlib.crc32(tag + body))

    ctype = {1: 0, 3: 2, 4: 6}[c]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bundle(int8_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "lenet5-rpi4"
    assert main(["export", str(int8_model), "--target", "rpi4", "-o", str(out)]) == 0
    return out


def test_bundle_contents_and_manifest(bundle):
    import hashlib

    names = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()}
    assert {"model.edgeconv", "run.py", "requirements.txt", "README.md", "bundle.json",
            "systemd/lenet5-rpi4-warmup.service", "systemd/lenet5-rpi4.socket",
            "systemd/lenet5-rpi4@.service", "edgeconv/runtime.py",
            "edgeconv/kernels/fast.py"} <= names
    assert not any(n.startswith(("edgeconv/quantize", "edgeconv/targets", "edgeconv/examples"))
                   for n in names)
    man = json.loads((bundle / "bundle.json").read_text())
    assert man["target"] == "rpi4" and man["edgeconv_version"] == edgeconv.__version__
    for rel, digest in man["files"].items():
        assert hashlib.sha256((bundle / rel).read_bytes()).hexdigest() == digest, rel
    assert set(man["files"]) | {"bundle.json"} == names
    assert os.access(bundle / "run.py", os.X_OK)
    text = (bundle / "README.md").read_text() + "".join(
        p.read_text() for p in (bundle / "systemd").iterdir())
    assert "@@" not in text and "/opt/lenet5-rpi4/run.py --warmup" in text


def test_bundle_requirements_are_the_tested_pins(bundle, int8_model, tmp_path):
    from edgeconv.targets.rpi.bundle import tested_versions

    t = tested_versions()
    req = (bundle / "requirements.txt").read_text()
    for pkg in ("numpy", "numba", "llvmlite"):
        assert f"{pkg}=={t['aarch64'][pkg]}" in req
    out = tmp_path / "armv7"
    assert main(["export", str(int8_model), "--target", "rpi-armv7", "-o", str(out)]) == 0
    req7 = (out / "requirements.txt").read_text()
    assert f"numpy=={t['armv7l']['numpy']}" in req7 and "numba=" not in req7


def test_bundle_export_is_deterministic_and_replaces_safely(int8_model, tmp_path, capsys):
    a, b = tmp_path / "one" / "bundle", tmp_path / "two" / "bundle"
    for out in (a, b):
        out.parent.mkdir()
        assert main(["export", str(int8_model), "--target", "rpi5", "-o", str(out),
                     "--json"]) == 0
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert reports[0]["files"] == reports[1]["files"]
    assert (a / "bundle.json").read_text() == (b / "bundle.json").read_text()
    (a / "cache").mkdir()
    assert main(["export", str(int8_model), "--target", "rpi5", "-o", str(a)]) == 0  # replace
    assert not (a / "cache").exists()
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "precious.txt").write_text("keep")
    assert main(["export", str(int8_model), "--target", "rpi4", "-o", str(junk)]) == 2
    assert (junk / "precious.txt").read_text() == "keep"
    leftovers = [p for d in (tmp_path, a.parent) for p in d.iterdir() if p.name[0] == "."]
    assert leftovers == []


def test_bundle_refuses_float_model_and_mcu_profile(int8_model, tmp_path):
    from edgeconv.targets.rpi.bundle import export_bundle

    with pytest.raises(EdgeconvError, match="int8"):
        export_bundle(edgeconv.load(EXAMPLES / "lenet5.onnx"), tmp_path / "f", get_profile("rpi4"))
    with pytest.raises(EdgeconvError, match="not a Linux board"):
        export_bundle(edgeconv.load(int8_model), tmp_path / "m", get_profile("cortex-m4"))


def test_systemd_units_verify(bundle, tmp_path):
    """systemd's own checker on the example units (paths rewritten to this machine)."""
    import shutil

    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    units = tmp_path / "units"
    units.mkdir()
    for p in (bundle / "systemd").iterdir():
        text = p.read_text().replace("/opt/lenet5-rpi4/.venv/bin/python3", sys.executable)
        text = text.replace("/opt/lenet5-rpi4", str(bundle)).replace("User=edgeconv", "User=root")
        text = text.replace("SocketGroup=edgeconv", "SocketGroup=root")
        (units / p.name).write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *sorted(map(str,
                        units.iterdir()))], capture_output=True, text=True, timeout=120)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if "lenet5-rpi4" in ln]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def _run_py(bundle: Path, args: list[str], tmp_path: Path, stdin: bytes | None = None,
            **env) -> subprocess.CompletedProcess:
    """The bundle's run.py in an isolated interpreter (-I: no PYTHONPATH, no user site)."""
    e = _env(tmp_path, **env)
    e.pop("EDGECONV_CACHE_DIR")
    e.pop("NUMBA_CACHE_DIR", None)
    return subprocess.run([sys.executable, "-I", str(bundle / "run.py"), *args],
                          input=stdin, capture_output=True, env=e, timeout=600)


def test_runner_folder_of_pngs_matches_the_library(bundle, int8_model, tmp_path):
    x = np.load(EXAMPLES / "mnist_test_1k.npz")["x"][:40]
    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(x):
        (folder / f"img{i:04d}.png").write_bytes(_png(img, filt=i % 5))
    r = _run_py(bundle, [str(folder), "--save", str(tmp_path / "out.npy"), "--timing"],
                tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().splitlines()
    ref = edgeconv.load(int8_model).run(x)
    assert np.load(tmp_path / "out.npy").tobytes() == ref.tobytes()
    assert [int(ln.split("\t")[1]) for ln in lines] == list(ref.argmax(axis=1))
    timing = json.loads(r.stderr.decode().strip().splitlines()[-1])
    assert timing["backend"] in ("numba", "numpy")
    assert (bundle / "cache" / "backend-probe.json").is_file()  # the bundle's own cache


def test_runner_uses_its_bundled_runtime(bundle, tmp_path):
    r = _run_py(bundle, ["--info", "--json"], tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    obj = json.loads(r.stdout)
    assert obj["edgeconv_path"] == str(bundle / "edgeconv")
    if obj["backend"] == "numba":
        assert obj["numba_cache_dir"].startswith(str(bundle / "cache" / "numba"))


def test_runner_stdin_stream_and_numpy_backend_agree(bundle, int8_model, tmp_path):
    x = np.load(EXAMPLES / "mnist_test_1k.npz")["x"]
    parts = [x[:7], x[7:8], x[8:100].astype(np.float32)]
    import io

    stream = b""
    for p in parts:
        buf = io.BytesIO()
        np.save(buf, p)
        stream += buf.getvalue()
    m = edgeconv.load(int8_model)
    for backend in ("numpy", None):
        env = {"EDGECONV_BACKEND": backend} if backend else {}
        r = _run_py(bundle, ["--stdin"], tmp_path, stdin=stream, **env)
        assert r.returncode == 0, r.stderr.decode()
        out = io.BytesIO(r.stdout)
        for p in parts:
            assert np.load(out).tobytes() == m.run(p).tobytes()
        assert out.read() == b""


def test_runner_bad_inputs_fail_cleanly(bundle, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "small.png").write_bytes(_png(np.zeros((20, 20), np.uint8)))
    r = _run_py(bundle, [str(bad)], tmp_path)
    assert r.returncode == 2 and b"not resized" in r.stderr
    r = _run_py(bundle, ["--stdin"], tmp_path, stdin=b"\x93NUMPY\x01\x00")
    assert r.returncode == 2 and b"run.py: error" in r.stderr
    r = _run_py(bundle, ["--stdin"], tmp_path, stdin=b"hello")
    assert r.returncode == 2 and b"expected .npy" in r.stderr
    r = _run_py(bundle, [str(tmp_path / "missing")], tmp_path)
    assert r.returncode == 2 and b"no such file" in r.stderr


def test_runner_image_layouts():
    from edgeconv.targets.rpi import runner  # importing it changes nothing (main() does)

    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    grey = runner.to_sample(rgb, (1, 5, 6), "t")
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    want = (299 * r + 587 * g + 114 * b + 500) // 1000
    assert grey.shape == (1, 5, 6) and (grey[0] == want).all()
    assert runner.to_sample(rgb, (3, 5, 6), "t").tolist() == rgb.transpose(2, 0, 1).tolist()
    assert runner.to_sample(rgb[..., 0], (5, 6, 3), "t").shape == (5, 6, 3)
    for filt in range(5):
        assert (runner.decode_png(_png(rgb, filt)) == rgb).all()
    pgm = b"P5\n# c\n6 5\n255\n" + rgb[..., 1].tobytes()
    assert (runner.decode_pnm(pgm)[..., 0] == rgb[..., 1]).all()


def test_onnx_missing_is_a_clear_error(monkeypatch):
    """32-bit ARM installs have no onnx (no wheels): reading .onnx says what to do."""
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(EdgeconvError, match="needs the onnx package"):
        edgeconv.load(EXAMPLES / "lenet5.onnx")
