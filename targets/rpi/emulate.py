"""Check edgeconv on emulated Raspberry Pi OS: Debian bookworm arm64 and armhf root filesystems
under qemu-user (binfmt + chroot). A development/CI tool: it needs root, debootstrap,
qemu-user-static and binfmt-support, and downloads Debian packages and PyPI wheels while
building its cache. The edgeconv product itself never downloads anything.

    sudo python -m edgeconv.targets.rpi.emulate              # both architectures
    sudo python -m edgeconv.targets.rpi.emulate --arch arm64 --json

What it does, per architecture:
  rootfs   debootstrap --variant=minbase bookworm from the mirror this machine's apt uses,
           with python3, pip, venv and Debian's python3-numpy/-numba/-pytest/-hypothesis;
           cached in $EDGECONV_RPI_CACHE (default /var/cache/edgeconv-rpi)
  arm64    `pip install` of an edgeconv wheel built from this checkout (NumPy + Numba wheels
           pinned by the rpi4 bundle's requirements.txt) in a plain venv; the rpi4 bundle of
           the demo LeNet-5 on 1,000 MNIST test PNGs under the emulated CPU (qemu's default)
           and as a Cortex-A72 (Pi 4) and Cortex-A76 (Pi 5, dotprod: sdot) with Numba told
           the same; then Debian's route: apt's numba 0.56.4 / numpy 1.24.2 through a
           --system-site-packages venv, the same bundle, and the test suite's portable part
  armhf    Debian's python3-numpy and python3-numba (which aborts on its first compile) in a
           --system-site-packages venv, `pip install` of the wheel, the rpi-armv7 bundle: the
           backend probe must catch the abort and the NumPy kernels must give the same bytes
Outputs are compared byte for byte with this (x86-64) machine's. Cold start is measured in
each environment with coldstart.py; under emulation it is only a relative figure.
The report is printed (and written to CACHE/last-report.json); exit status 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = Path(os.environ.get("EDGECONV_RPI_CACHE", "/var/cache/edgeconv-rpi"))
SUITE = "bookworm"
APT_PACKAGES = ["python3", "python3-pip", "python3-venv", "python3-numpy", "python3-numba",
                "python3-pytest", "python3-hypothesis"]
ARCHES = {
    "arm64": {"qemu": "qemu-aarch64-static", "binfmt": "qemu-aarch64", "target": "rpi4",
              "machine": "aarch64"},
    "armhf": {"qemu": "qemu-arm-static", "binfmt": "qemu-arm", "target": "rpi-armv7",
              "machine": "armv7l"},
}
# arm64 runs of the bundle: (label, emulated CPU = QEMU_CPU, NUMBA_CPU_NAME, engine). The
# default engine is the compiled whole-model one; "ops" runs the per-op kernels (fast.py),
# whose int8 dot loop becomes sdot on a dotprod CPU (Pi 5) and smull/saddw on a Pi 4.
ARM64_RUNS = [("qemu-max", None, None, None),
              ("pi4-cortex-a72", "cortex-a72", "cortex-a72", None),
              ("pi5-cortex-a76", "cortex-a76", "cortex-a76", None),
              ("pi4-cortex-a72-ops", "cortex-a72", "cortex-a72", "ops"),
              ("pi5-cortex-a76-ops", "cortex-a76", "cortex-a76", "ops")]
# The part of the test suite that exercises the installed runtime (not the ONNX importer
# against onnxruntime, not TFLM): run with Debian's numba/numpy inside the arm64 chroot.
PORTABLE_TESTS = ["tests/test_kernels.py", "tests/test_native_format.py", "tests/test_data.py",
                  "tests/test_rpi.py"]
STAMP = ".edgeconv-rootfs.json"
CHECK = "/root/edgeconv-check"  # staging folder inside each rootfs
PIP_VENV, DEB_VENV = "/opt/edgeconv-pip", "/opt/edgeconv-deb"


class Skip(Exception):
    """The tools or privileges this needs are missing (tests skip with this reason)."""


def log(msg: str) -> None:
    print(f"[emulate {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- host tools
def host_mirror() -> str:
    """The Debian mirror this machine's apt uses for bookworm main."""
    apt = Path("/etc/apt")
    for f in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in f.read_text().split("\n\n"):
            fields = dict(
                (k.strip(), v.strip()) for k, _, v in
                (ln.partition(":") for ln in stanza.splitlines() if ":" in ln and ln[0] != "#")
            )
            if ("deb" in fields.get("Types", "").split() and SUITE in fields.get("Suites", "")
                    .split() and "security" not in fields.get("URIs", "")):
                return fields["URIs"].split()[0]
    for f in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        if f.is_file():
            for ln in f.read_text().splitlines():
                parts = ln.split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                    return next(p for p in parts[1:] if not p.startswith("["))
    raise SystemExit(
        f"no Debian {SUITE} mirror found in /etc/apt sources; add one, or pass --mirror"
    )


def tools_problem(arch: str) -> str | None:
    """Why this machine cannot run the emulated check for `arch` (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, mount)"
    for tool in ("debootstrap", ARCHES[arch]["qemu"], "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt install debootstrap qemu-user-static binfmt-support)"
    entry = Path("/proc/sys/fs/binfmt_misc") / ARCHES[arch]["binfmt"]
    if not entry.exists() and shutil.which("update-binfmts") is None:
        return f"no binfmt entry {entry.name} and no update-binfmts (binfmt-support)"
    return None


def ensure_binfmt(arch: str) -> None:
    root = Path("/proc/sys/fs/binfmt_misc")
    if not (root / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(root)], check=True)
    entry = root / ARCHES[arch]["binfmt"]
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        subprocess.run(["update-binfmts", "--enable", ARCHES[arch]["binfmt"]], check=True)
    if not entry.read_text().startswith("enabled"):
        raise Skip(f"binfmt entry {entry} could not be enabled")


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        mnt = line.split()[1].replace("\\040", " ")
        if mnt == prefix or mnt.startswith(prefix + "/"):
            found.append(mnt)
    return sorted(found, key=len, reverse=True)


def _umount_all(path: Path) -> None:
    for mnt in _mounts_under(path):
        if subprocess.run(["umount", mnt], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", mnt], capture_output=True)


# ---------------------------------------------------------------- root filesystem
def rootfs_dir(cache: Path, arch: str) -> Path:
    return cache / f"{SUITE}-{arch}"


def rootfs_ready(cache: Path, arch: str) -> bool:
    return (rootfs_dir(cache, arch) / STAMP).is_file()


def build_rootfs(cache: Path, arch: str, mirror: str) -> dict:
    """debootstrap into a .partial folder, then rename: an interrupted build is never used."""
    final = rootfs_dir(cache, arch)
    if rootfs_ready(cache, arch):
        return json.loads((final / STAMP).read_text()) | {"cached": True}
    cache.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + ".partial")
    if partial.exists():
        _umount_all(partial)
        shutil.rmtree(partial)
    ensure_binfmt(arch)
    cmd = ["debootstrap", f"--arch={arch}", "--variant=minbase",
           f"--include={','.join(APT_PACKAGES)}", SUITE, str(partial), mirror]
    log(f"building the {arch} root filesystem: {' '.join(cmd)}")
    t = time.perf_counter()
    logfile = cache / f"debootstrap-{arch}.log"
    with open(logfile, "w") as lf:
        r = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT)
    _umount_all(partial)
    if r.returncode != 0:
        raise RuntimeError(f"debootstrap {arch} failed (exit {r.returncode}); see {logfile}")
    stamp = {"arch": arch, "suite": SUITE, "mirror": mirror, "packages": APT_PACKAGES,
             "seconds": time.perf_counter() - t, "built": time.strftime("%Y-%m-%d %H:%M:%S")}
    (partial / STAMP).write_text(json.dumps(stamp, indent=1))
    if final.exists():
        _umount_all(final)
        shutil.rmtree(final)
    os.replace(partial, final)
    log(f"{arch} root filesystem built in {stamp['seconds']:.0f} s")
    return stamp | {"cached": False}


class Chroot:
    """Run commands in a root filesystem under qemu-user. /proc is mounted (Python and
    Numba read it); /sys is deliberately not (ai-edge-litert crashed with it)."""

    def __init__(self, root: Path, arch: str):
        self.root, self.arch = root, arch
        self.mounted: list[str] = []

    def __enter__(self) -> Chroot:
        ensure_binfmt(self.arch)
        proc = self.root / "proc"
        if str(proc.resolve()) not in _mounts_under(self.root):
            subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
            self.mounted.append(str(proc))
        for src, dst in (("/etc/resolv.conf", "etc/resolv.conf"),
                         ("/etc/ssl/certs/ca-certificates.crt", "etc/ssl/certs/host-ca.crt")):
            if Path(src).is_file():
                (self.root / dst).parent.mkdir(parents=True, exist_ok=True)
                (self.root / dst).unlink(missing_ok=True)
                shutil.copyfile(src, self.root / dst)
        return self

    def __exit__(self, *exc) -> None:
        for mnt in reversed(self.mounted):
            if subprocess.run(["umount", mnt], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", mnt], capture_output=True)

    def host_path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def run(self, cmd: list[str], env: dict | None = None, check: bool = True,
            timeout: float = 3600, stdin: bytes | None = None,
            cwd: str = "/") -> subprocess.CompletedProcess:
        base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
                "PIP_CERT": "/etc/ssl/certs/host-ca.crt", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "PIP_DEFAULT_TIMEOUT": "120", "EDGECONV_EMULATED": self.arch}
        for k in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            if k in os.environ:
                base[k] = os.environ[k]
        base.update({k: v for k, v in (env or {}).items() if v is not None})
        full = ["chroot", str(self.root), "/usr/bin/env", "-i", "-C", cwd,
                *[f"{k}={v}" for k, v in base.items()], *cmd]
        r = subprocess.run(full, capture_output=True, timeout=timeout, input=stdin)
        if check and r.returncode != 0:
            raise RuntimeError(
                f"in {self.arch} chroot: {' '.join(cmd)} -> exit {r.returncode}\n"
                f"{r.stdout.decode(errors='replace')[-1500:]}\n"
                f"{r.stderr.decode(errors='replace')[-3000:]}"
            )
        return r


# ---------------------------------------------------------------- host side staging
def _png(img) -> bytes:
    """8-bit grey PNG (filter 0), so the bundle decodes the images itself."""
    h, w = img.shape
    raw = b"".join(b"\0" + img[y].tobytes() for y in range(h))

    def chunk(tag: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + tag + body
                + struct.pack(">I", zlib.crc32(tag + body)))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def build_wheel(dest: Path) -> Path:
    """A wheel of this checkout, built from a copy (the checkout gets no build/ folder)."""
    with tempfile.TemporaryDirectory(prefix="edgeconv-src-") as tmp:
        src = Path(tmp) / "src"
        listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard",
                                 "-z"], capture_output=True)
        if listed.returncode == 0:
            for rel in filter(None, listed.stdout.decode().split("\0")):
                if (REPO / rel).is_file():
                    (src / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(REPO / rel, src / rel)
        else:
            shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
                ".git", "*venv*", "__pycache__", "build", "dist", "*.egg-info"))
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                            str(dest), str(src)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"building the edgeconv wheel failed:\n{r.stderr[-3000:]}")
    wheels = sorted(dest.glob("edgeconv-*.whl"))
    if not wheels:
        raise RuntimeError("no edgeconv wheel was built")
    return wheels[-1]


def stage(work: Path, limit: int) -> dict:
    """Everything the chroots need, made on this machine: wheel, int8 LeNet-5, bundles,
    MNIST PNGs and the x86-64 reference outputs."""
    import numpy as np

    import edgeconv
    from edgeconv.api import quantize_model
    from edgeconv.targets import get_profile
    from edgeconv.targets.rpi.bundle import export_bundle

    examples = REPO / "examples"
    work.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(work / "wheels")
    calib = np.load(examples / "mnist_calib_200.npz")["x"]
    q = quantize_model(edgeconv.load(examples / "lenet5.onnx"), calib, limit=200)
    model_path = work / "lenet5.int8.edgeconv"
    edgeconv.save(q.graph, model_path)
    model = edgeconv.load(model_path)
    for arch in ARCHES.values():
        export_bundle(model, work / arch["target"], get_profile(arch["target"]))
    x = np.load(examples / "mnist_test_1k.npz")["x"][:limit]
    images = work / "images"
    images.mkdir(exist_ok=True)
    for i, img in enumerate(x):
        (images / f"mnist{i:04d}.png").write_bytes(_png(img))
    ref = model.run(x)
    np.save(work / "reference_x86_64.npy", ref)
    # the x86-64 bundle on the same PNG folder must give the library's bytes too
    r = subprocess.run([sys.executable, str(work / "rpi4" / "run.py"), str(images), "--save",
                        str(work / "host_bundle.npy")], capture_output=True, text=True,
                       env={**os.environ, "EDGECONV_CACHE_DIR": str(work / "host-cache")})
    if r.returncode != 0:
        raise RuntimeError(f"host run of the bundle failed: {r.stderr[-2000:]}")
    host_same = np.load(work / "host_bundle.npy").tobytes() == ref.tobytes()
    for sub in ("tests", "examples"):
        shutil.copytree(REPO / sub, work / "repo" / sub,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(REPO / "pyproject.toml", work / "repo" / "pyproject.toml")
    shutil.copy2(Path(__file__).with_name("coldstart.py"), work / "coldstart.py")
    return {"wheel": wheel.name, "images": int(len(x)), "host_bundle_identical": host_same,
            "model_sha256": json.loads((work / "rpi4" / "bundle.json").read_text())
            ["model"]["sha256"]}


# ---------------------------------------------------------------- checks in a chroot
def _compare(out_file: Path, ref) -> dict:
    import numpy as np

    if not out_file.is_file():
        return {"identical_rows": 0, "rows": int(len(ref)), "byte_identical": False}
    got = np.load(out_file)
    same_shape = got.shape == ref.shape and got.dtype == ref.dtype
    rows = int((got.reshape(len(got), -1) == ref.reshape(len(ref), -1)).all(axis=1).sum()) \
        if same_shape else 0
    return {"identical_rows": rows, "rows": int(len(ref)),
            "byte_identical": same_shape and got.tobytes() == ref.tobytes()}


def _pip_install_edgeconv(ch: Chroot, venv: str, wheel: str, extra: list[str]) -> dict:
    """`pip install` the wheel with its dependencies (what a user does), then force this
    build of edgeconv in (same version number, newer code)."""
    t = time.perf_counter()
    r = ch.run([f"{venv}/bin/pip", "install", f"{CHECK}/wheels/{wheel}", *extra])
    seconds = time.perf_counter() - t
    ch.run([f"{venv}/bin/pip", "install", "-q", "--force-reinstall", "--no-deps",
            f"{CHECK}/wheels/{wheel}"])
    lines = r.stdout.decode(errors="replace").splitlines()
    freeze = ch.run([f"{venv}/bin/python", "-m", "pip", "list", "--format=json"])
    versions = {p["name"].lower(): p["version"] for p in json.loads(freeze.stdout)
                if p["name"].lower() in ("numpy", "numba", "llvmlite", "onnx", "edgeconv")}
    return {"seconds": seconds, "versions": versions,
            "pip_summary": next((ln for ln in reversed(lines) if ln.startswith(
                ("Successfully installed", "Requirement already satisfied"))), lines[-1:])}


def _debian_venv(ch: Chroot, wheel: str, extra: list[str] | None = None) -> dict:
    """A fresh --system-site-packages venv over Debian's python3-numpy/-numba, and edgeconv
    pip-installed in it with those two held at Debian's versions."""
    shutil.rmtree(ch.host_path(DEB_VENV), ignore_errors=True)
    ch.run(["python3", "-m", "venv", "--system-site-packages", DEB_VENV])
    pins = ch.run(["python3", "-c", "import importlib.metadata as m\n"
                   "for d in ('numpy', 'numba'): print(f'{d}=={m.version(d)}')"])
    ch.host_path(f"{CHECK}/debian-constraints.txt").write_bytes(pins.stdout)
    res = _pip_install_edgeconv(ch, DEB_VENV, wheel,
                                ["-c", f"{CHECK}/debian-constraints.txt", *(extra or [])])
    res["constraints"] = pins.stdout.decode().split()
    return res


def _info(ch: Chroot, venv: str, env: dict) -> dict:
    r = ch.run([f"{venv}/bin/edgeconv", "info", "--json"], env=env)
    return json.loads(r.stdout)


def _run_bundle(ch: Chroot, python: str, bundle: str, label: str, ref, env: dict,
                asm: bool = False) -> dict:
    """Warm-up (empty caches; with `asm`, Numba prints the assembly it generates, in which
    sdot instructions are counted), then the bundle on every image, compared with `ref`."""
    state = f"{CHECK}/state/{label}"
    shutil.rmtree(ch.host_path(state), ignore_errors=True)
    env = {"EDGECONV_CACHE_DIR": state, **env}
    t = time.perf_counter()
    warm = ch.run([python, f"{bundle}/run.py", "--warmup", "--json"],
                  env={**env, "NUMBA_DUMP_ASSEMBLY": "1" if asm else None})
    warm_s = time.perf_counter() - t
    warm_obj = json.loads(warm.stdout.decode().strip().splitlines()[-1])
    out = f"{CHECK}/out-{label}.npy"
    t = time.perf_counter()
    r = ch.run([python, f"{bundle}/run.py", f"{CHECK}/images", "--save", out, "--timing"],
               env=env)
    run_s = time.perf_counter() - t
    stderr = r.stderr.decode(errors="replace")
    res = {"label": label, "backend": warm_obj["backend"],
           "backend_reason": warm_obj["backend_reason"], "warmup_s": warm_s,
           "warmup_first_run_s": warm_obj["first_run_seconds"], "run_s": run_s,
           "fallback_messages": (warm.stderr + r.stderr).decode(errors="replace").count(
               "using the NumPy backend"),
           "timing": json.loads(stderr.strip().splitlines()[-1]),
           **_compare(ch.host_path(out), ref)}
    if warm_obj.get("numba_cache"):
        res["numba_cache"] = warm_obj["numba_cache"]
    if asm:
        res["sdot_instructions"] = len(re.findall(rb"\bsdot\b", warm.stdout))
    return res


def check_arm64(ch: Chroot, wheel: str, ref, runs: int, with_tests: bool) -> dict:
    res: dict = {"arch": "arm64"}
    py = ch.run(["python3", "-c", "import platform;print(platform.machine(),"
                 "platform.python_version())"]).stdout.decode().split()
    res["machine"], res["python"] = py
    bundle = f"{CHECK}/rpi4"
    # 1. pip route: plain venv, wheels from PyPI (cached venv; rebuilt if the pins change)
    req = ch.host_path(f"{bundle}/requirements.txt").read_text()
    stamp = ch.host_path(f"{PIP_VENV}/.edgeconv-requirements")
    if not stamp.is_file() or stamp.read_text() != req:
        shutil.rmtree(ch.host_path(PIP_VENV), ignore_errors=True)
        t = time.perf_counter()
        ch.run(["python3", "-m", "venv", PIP_VENV])
        ch.run([f"{PIP_VENV}/bin/pip", "install", "-q", "-r", f"{bundle}/requirements.txt"])
        res["pip_wheels_seconds"] = time.perf_counter() - t
        stamp.write_text(req)
    log("arm64: pip install of edgeconv")
    res["pip_install"] = _pip_install_edgeconv(ch, PIP_VENV, wheel,
                                               ["-r", f"{bundle}/requirements.txt"])
    res["pip_info"] = _info(ch, PIP_VENV, {"EDGECONV_CACHE_DIR": f"{CHECK}/state/info"})
    res["runs"] = []
    for label, qemu_cpu, numba_cpu, engine in ARM64_RUNS:
        log(f"arm64: bundle on {label}")
        env = {"QEMU_CPU": qemu_cpu, "NUMBA_CPU_NAME": numba_cpu, "EDGECONV_ENGINE": engine}
        res["runs"].append(_run_bundle(ch, f"{PIP_VENV}/bin/python3", bundle, f"pip-{label}",
                                       ref, env, asm=numba_cpu is not None))
    # 2. Debian's packages: apt's numba/numpy under a --system-site-packages venv; pip is
    # held to them by a constraints file (unconstrained, onnx -> ml_dtypes pulls NumPy 2
    # over Debian's 1.24, and Debian's Numba then fails to import; see README)
    log("arm64: Debian numba/numpy route")
    res["deb_install"] = _debian_venv(ch, wheel)
    res["deb_info"] = _info(ch, DEB_VENV, {"EDGECONV_CACHE_DIR": f"{CHECK}/state/deb-info"})
    res["runs"].append(_run_bundle(ch, f"{DEB_VENV}/bin/python3", bundle, "debian-apt", ref,
                                   {}))
    if with_tests:
        log("arm64: portable tests with Debian's numba/numpy")
        t = time.perf_counter()
        r = ch.run([f"{DEB_VENV}/bin/python3", "-m", "pytest", "-p", "no:cacheprovider",
                    *PORTABLE_TESTS], check=False, timeout=5400, cwd=f"{CHECK}/repo",
                   env={"EDGECONV_CACHE_DIR": f"{CHECK}/state/tests"})
        out = r.stdout.decode(errors="replace").strip().splitlines()
        counts = [ln for ln in out if re.search(r"\d+ (passed|failed|error)", ln)]
        res["debian_tests"] = {"exit": r.returncode, "seconds": time.perf_counter() - t,
                               "summary": (counts or out or [""])[-1].strip("= "),
                               "files": PORTABLE_TESTS}
        if r.returncode != 0:
            res["debian_tests"]["tail"] = "\n".join(out[-40:])
    log("arm64: cold start")
    cs = ch.run([f"{PIP_VENV}/bin/python3", f"{CHECK}/coldstart.py", bundle, "--runs",
                 str(runs), "--json"], env={"QEMU_CPU": "cortex-a72",
                                            "NUMBA_CPU_NAME": "cortex-a72"})
    res["coldstart"] = json.loads(cs.stdout)
    return res


def check_armhf(ch: Chroot, wheel: str, ref, runs: int) -> dict:
    res: dict = {"arch": "armhf"}
    py = ch.run(["python3", "-c", "import platform;print(platform.machine(),"
                 "platform.python_version())"]).stdout.decode().split()
    res["machine"], res["python"] = py
    bundle = f"{CHECK}/rpi-armv7"
    log("armhf: pip install of edgeconv (Debian's numpy and numba underneath)")
    res["deb_install"] = _debian_venv(ch, wheel, ["-r", f"{bundle}/requirements.txt"])
    res["deb_info"] = _info(ch, DEB_VENV, {"EDGECONV_CACHE_DIR": f"{CHECK}/state/info"})
    log("armhf: bundle")
    res["runs"] = [_run_bundle(ch, f"{DEB_VENV}/bin/python3", bundle, "debian-apt", ref, {})]
    log("armhf: cold start")
    cs = ch.run([f"{DEB_VENV}/bin/python3", f"{CHECK}/coldstart.py", bundle, "--runs",
                 str(runs), "--json"])
    res["coldstart"] = json.loads(cs.stdout)
    return res


def verdict(arch_res: dict) -> list[str]:
    """What is wrong with one architecture's results (empty: all good)."""
    problems = []
    for run in arch_res.get("runs", []):
        if not run["byte_identical"]:
            problems.append(f"{arch_res['arch']} {run['label']}: {run['identical_rows']}/"
                            f"{run['rows']} outputs identical")
        want = "numba" if arch_res["arch"] == "arm64" else "numpy"
        if run["backend"] != want:
            problems.append(f"{arch_res['arch']} {run['label']}: backend {run['backend']} "
                            f"({run['backend_reason']}), expected {want}")
    if arch_res["arch"] == "arm64":
        by = {r["label"]: r for r in arch_res.get("runs", [])}
        if by.get("pip-pi5-cortex-a76-ops", {}).get("sdot_instructions", 1) == 0:
            problems.append("arm64: no sdot generated for the per-op kernels on cortex-a76")
        for label, r in by.items():
            if "a72" in label and r.get("sdot_instructions", 0) != 0:
                problems.append(f"arm64 {label}: sdot generated for a CPU without dotprod")
        tests = arch_res.get("debian_tests")
        if tests and tests["exit"] != 0:
            problems.append(f"arm64 Debian tests: {tests['summary']}")
    pins = dict(c.split("==") for c in arch_res.get("deb_install", {}).get("constraints", []))
    for dist, version in pins.items():
        if arch_res["deb_info"].get(dist) != version:
            problems.append(f"{arch_res['arch']} Debian route: {dist} "
                            f"{arch_res['deb_info'].get(dist)} in use, not Debian's {version}")
    if arch_res["arch"] == "armhf" and "SIGABRT" not in arch_res["deb_info"]["backend_reason"]:
        problems.append(f"armhf: expected the probe to catch Debian numba's abort, got "
                        f"{arch_res['deb_info']['backend_reason']!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", nargs="+", choices=sorted(ARCHES), default=sorted(ARCHES))
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--mirror", default=None, help="Debian mirror (default: this machine's)")
    p.add_argument("--limit", type=int, default=1000, help="MNIST test images (max 1000)")
    p.add_argument("--runs", type=int, default=2, help="cold-start repetitions")
    p.add_argument("--no-tests", action="store_true", help="skip the Debian-route pytest run")
    p.add_argument("--build-only", action="store_true", help="only build the root filesystems")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    for arch in args.arch:
        why = tools_problem(arch)
        if why:
            print(f"emulate: cannot run {arch}: {why}", file=sys.stderr)
            return 2
    t_all = time.perf_counter()
    mirror = args.mirror or host_mirror()
    report: dict = {"mirror": mirror, "phases": {}}
    # the two debootstraps overlap well (downloads, then dpkg under qemu): build in parallel
    from concurrent.futures import ThreadPoolExecutor

    for arch in args.arch:
        ensure_binfmt(arch)
    with ThreadPoolExecutor(max_workers=len(args.arch)) as pool:
        built = {a: pool.submit(build_rootfs, args.cache, a, mirror) for a in args.arch}
        report["rootfs"] = {a: f.result() for a, f in built.items()}
    report["phases"]["rootfs_s"] = time.perf_counter() - t_all
    if args.build_only:
        print(json.dumps(report, indent=1) if args.json else "root filesystems ready")
        return 0
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="edgeconv-emulate-") as tmp:
        t = time.perf_counter()
        log("staging on the host: wheel, model, bundles, PNGs, x86-64 reference")
        report["stage"] = stage(Path(tmp), min(args.limit, 1000))
        report["phases"]["stage_s"] = time.perf_counter() - t
        ref = np.load(Path(tmp) / "reference_x86_64.npy")
        for arch in args.arch:
            t = time.perf_counter()
            root = rootfs_dir(args.cache, arch)
            dest = root / CHECK.lstrip("/")
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(tmp, dest)
            with Chroot(root, arch) as ch:
                if arch == "arm64":
                    report[arch] = check_arm64(ch, report["stage"]["wheel"], ref, args.runs,
                                               not args.no_tests)
                else:
                    report[arch] = check_armhf(ch, report["stage"]["wheel"], ref, args.runs)
            report["phases"][f"{arch}_s"] = time.perf_counter() - t
    report["phases"]["total_s"] = time.perf_counter() - t_all
    problems = [] if report["stage"]["host_bundle_identical"] else ["x86-64 bundle differs"]
    for arch in args.arch:
        problems += verdict(report[arch])
    report["problems"] = problems
    report["ok"] = not problems
    args.cache.mkdir(parents=True, exist_ok=True)
    (args.cache / "last-report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1) if args.json else summary(report))
    return 0 if report["ok"] else 1


def summary(report: dict) -> str:
    lines = []
    for arch in ("arm64", "armhf"):
        if arch not in report:
            continue
        a = report[arch]
        lines.append(f"{arch} ({a['machine']}, Python {a['python']}):")
        for key in ("pip_install", "deb_install"):
            if key in a:
                v = a[key]["versions"]
                lines.append(f"  {key}: {a[key]['seconds']:.0f} s, " + ", ".join(
                    f"{k} {v[k]}" for k in sorted(v)))
        for r in a["runs"]:
            extra = f", sdot x{r['sdot_instructions']}" if "sdot_instructions" in r else ""
            lines.append(f"  {r['label']:<20} backend {r['backend']:<5} {r['identical_rows']}/"
                         f"{r['rows']} identical, warm-up {r['warmup_s']:.1f} s, "
                         f"{r['rows']} images {r['run_s']:.1f} s{extra}")
        if "debian_tests" in a:
            lines.append(f"  Debian numba/numpy tests: {a['debian_tests']['summary']} "
                         f"({a['debian_tests']['seconds']:.0f} s)")
        cs = a.get("coldstart")
        if cs:
            parts = [f"{k} {cs[k]['median_s']:.2f} s" for k in
                     ("numba_empty_cache", "numba_warm_cache", "numpy") if k in cs]
            lines.append("  cold start (emulated, relative only): " + ", ".join(parts))
    lines.append("phases: " + ", ".join(f"{k} {v:.0f}" for k, v in report["phases"].items()))
    lines.append("OK" if report["ok"] else "PROBLEMS:\n  " + "\n  ".join(report["problems"]))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
