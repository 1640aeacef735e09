"""The Jetson recipe in deploy/jetson: both Dockerfiles parse with a Dockerfile parser (dockerfile-parse, not a
regex) and name the stages, ARGs and tags that the README's commands use; run.sh builds the docker run line that the
README explains. No Docker daemon here: what a build on the Jetson does is stated, not run."""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

DockerfileParser = pytest.importorskip("dockerfile_parse").DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
JETSON = ROOT / "deploy/jetson"
README = (JETSON / "README.md").read_text()


def parse(name: str) -> DockerfileParser:
    # fileobj: a path not named "Dockerfile" would be taken for a folder
    return DockerfileParser(fileobj=io.BytesIO((JETSON / name).read_bytes()), env_replace=False)


def instructions(parser: DockerfileParser, kind: str) -> list[str]:
    return [i["value"] for i in parser.structure if i["instruction"] == kind]


def declared_args(parser: DockerfileParser) -> dict[str, str | None]:
    """Every ARG, before or after FROM: name -> default (None without one)."""
    found = {}
    for value in instructions(parser, "ARG"):
        name, _, default = value.partition("=")
        found.setdefault(name.strip(), default.strip() or None)
    return found


def readme_commands(text: str, program: str) -> list[list[str]]:
    """The README's shell commands that start with `program` (continuation lines joined, comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"^(\w+=\S+\s+)+", "", line.split("  #")[0].strip())  # comments, VAR=value prefixes
            if line.startswith(program + " "):
                commands.append(shlex.split(re.sub(r"<[^<>]*>", "PLACEHOLDER", line)))
    return commands


def option(words: list[str], name: str) -> list[str]:
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == name]


# -- the run-time image ----------------------------------------------------------------------------

def test_runtime_dockerfile_is_one_stage_on_l4t_jetpack_r36_4():
    """One stage: the legacy builder (Ubuntu's docker.io, no buildx) builds every stage of a file, so the export
    image must not be one of them. r36.4.0 serves every L4T 36.4.x (there is no r36.4.3 tag)."""
    runtime = parse("Dockerfile")
    assert instructions(runtime, "FROM") == ["nvcr.io/nvidia/l4t-jetpack:${L4T_TAG}"]
    assert not runtime.is_multistage
    args = declared_args(runtime)
    assert args["L4T_TAG"] == "r36.4.0" and args["L4T_SOC"] == "t234"
    assert runtime.baseimage == "nvcr.io/nvidia/l4t-jetpack:r36.4.0"
    # the tag is declared before FROM and again inside the stage (without a value), where RUN uses it
    values = instructions(runtime, "ARG")
    assert values[0] == "L4T_TAG=r36.4.0" and "L4T_TAG" in values[1:]
    assert instructions(runtime, "CMD") == ['["smoothdino", "doctor"]']


def test_runtime_dockerfile_adds_the_jetson_apt_source_and_refuses_tensorrt_8():
    runtime = parse("Dockerfile")
    assert any("repo.download.nvidia.com/jetson/jetson-ota-public.asc" in v for v in instructions(runtime, "ADD"))
    runs = instructions(runtime, "RUN")
    source = next(r for r in runs if "nvidia-l4t-apt-source.list" in r)
    assert "repo.download.nvidia.com/jetson/common" in source and "${L4T_SOC}" in source and "${L4T_TAG}" in source
    assert "grep -rqs" in source  # only where the image does not list it already
    install = next(r for r in runs if "python3-libnvinfer" in r)
    assert runs.index(source) < runs.index(install)
    assert "dpkg-query -W -f='${Version}' python3-libnvinfer" in install and "too old" in install
    assert "libglvnd0" in install


def test_runtime_dockerfile_preloads_libgldispatch_and_copies_only_the_package():
    runtime = parse("Dockerfile")
    envs = " ".join(instructions(runtime, "ENV"))
    assert "LD_PRELOAD=/lib/aarch64-linux-gnu/libGLdispatch.so.0" in envs
    copies = instructions(runtime, "COPY")
    assert not any(c.split()[0] == "." for c in copies), "COPY . would bring .venv/engines in with the legacy builder"
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]
    copied = {c.split()[0] for c in copies} | {w for c in copies for w in c.split()[:-1]}
    for package in packages:  # smoothdino.edge -> edge; smoothdino itself -> __init__.py and cli.py
        folder = package.split(".")[1] if "." in package else "__init__.py"  # smoothdino.edge.sinks -> edge
        assert folder in copied, package
    assert {"pyproject.toml", "README.md", "cli.py"} <= copied
    assert any("libGLdispatch.so.0" in r for r in instructions(runtime, "RUN"))  # the build checks the file is there


# -- the export image ------------------------------------------------------------------------------

def test_export_dockerfile_is_its_own_file_built_on_the_runtime_image():
    export = parse("Dockerfile.export")
    assert instructions(export, "FROM") == ["${BASE_IMAGE}"]
    args = declared_args(export)
    assert args["BASE_IMAGE"] == "smoothdino:jetson" and "TORCH_WHEEL" in args
    assert args["CUSPARSELT_ARCHIVE"].startswith("https://developer.download.nvidia.com/compute/cusparselt/")
    assert not instructions(export, "COPY") and not instructions(export, "ADD")  # needs no build context


def test_export_dockerfile_installs_cusparselt_before_torch():
    runs = instructions(parse("Dockerfile.export"), "RUN")
    cusparselt = next(i for i, r in enumerate(runs) if "${CUSPARSELT_ARCHIVE}" in r)
    check = next(i for i, r in enumerate(runs) if "libcusparseLt.so.0" in r)
    torch = next(i for i, r in enumerate(runs) if "${TORCH_WHEEL}" in r and "pip3 install" in r)
    assert cusparselt < check < torch
    assert "libopenblas-dev" in runs[cusparselt]


# -- the README's commands name what the files have ----------------------------------------------------

def test_readme_builds_name_existing_files_args_and_tags():
    builds = readme_commands(README, "docker build")
    assert len(builds) == 2
    tags = {}
    for words in builds:
        assert "--target" not in words  # no stages to pick: each image is its own file
        dockerfile = option(words, "-f")[0]
        assert dockerfile.startswith("deploy/jetson/") and (ROOT / dockerfile).is_file()
        args = declared_args(parse(Path(dockerfile).name))
        for build_arg in option(words, "--build-arg"):
            assert build_arg.split("=")[0] in args, build_arg
        tags[Path(dockerfile).name] = option(words, "-t")[0]
    assert tags == {"Dockerfile": "smoothdino:jetson", "Dockerfile.export": "smoothdino:jetson-export"}
    assert declared_args(parse("Dockerfile.export"))["BASE_IMAGE"] == tags["Dockerfile"]
    assert "SMOOTHDINO_IMAGE=smoothdino:jetson-export" in README
    for arg in re.findall(r"`([A-Z][A-Z_]+)=", README):
        if arg in ("L4T_TAG", "CUSPARSELT_ARCHIVE", "TORCH_WHEEL"):
            assert arg in declared_args(parse("Dockerfile")) | declared_args(parse("Dockerfile.export"))


def test_readme_configures_the_nvidia_runtime_and_makes_the_folder_before_scp():
    first_build = README.index("docker build")
    configure = README.index("sudo nvidia-ctk runtime configure --runtime=docker")
    assert configure < README.index("sudo systemctl restart docker", configure) < first_build
    scp = README.index("scp -r engines/vits14-temporal jetson:smoothdino/engines/")
    assert README.rindex("ssh jetson mkdir -p smoothdino/engines", 0, scp) < scp
    assert "-v /tmp/nv_jetson_model:/tmp/nv_jetson_model:ro" in README
    assert "-e LD_PRELOAD=/lib/aarch64-linux-gnu/libGLdispatch.so.0" in README
    assert "r36.4.3" in README and "r36.3.0" in README  # the tag advice


# -- run.sh ---------------------------------------------------------------------------------------------

@pytest.fixture
def fake_docker(tmp_path):
    """A `docker` on PATH that prints its arguments, one per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    (bin_dir / "docker").chmod(0o755)
    return bin_dir


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_run_sh_runs_the_image_with_the_runtime_work_folder_and_preload(tmp_path, fake_docker):
    script = JETSON / "run.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    env = {**os.environ, "HOME": str(tmp_path / "home"), "PATH": f"{fake_docker}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DISPLAY", None)
    done = subprocess.run(["bash", str(script), "smoothdino", "doctor", "--source", "csi://0"], env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    assert done.returncode == 0, done.stderr
    args = done.stdout.splitlines()
    assert args[:4] == ["run", "--rm", "--runtime", "nvidia"]
    assert f"{tmp_path}/home/smoothdino:/work" in args and (tmp_path / "home/smoothdino").is_dir()
    assert "LD_PRELOAD=/lib/aarch64-linux-gnu/libGLdispatch.so.0" in args and "SMOOTHDINO_HOME=/work" in args
    assert args[-5:] == ["smoothdino:jetson", "smoothdino", "doctor", "--source", "csi://0"]
    assert "+ docker run --rm --runtime nvidia" in done.stderr  # the whole line, printed first
    env["SMOOTHDINO_IMAGE"] = "smoothdino:jetson-export"
    again = subprocess.run(["bash", str(script), "smoothdino", "info"], env=env, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=30)
    assert again.stdout.splitlines()[-3:] == ["smoothdino:jetson-export", "smoothdino", "info"]


@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.export"])
def test_every_run_line_is_valid_shell(name):
    """RUN lines run under /bin/sh -c in the image: each must at least parse (sh -n)."""
    for command in instructions(parse(name), "RUN"):
        done = subprocess.run(["sh", "-n", "-c", command], capture_output=True, text=True)
        assert done.returncode == 0, f"{command}\n{done.stderr}"
