"""A built wheel installed outside the repo runs from any folder: its configs, assets and demo pairs are inside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO
from omegaconf import OmegaConf

pytestmark = pytest.mark.slow

# what a build of the repo reads; copied so that building writes nothing into the repo (build/, *.egg-info)
BUILD_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "polaris_dpo", "conf", "pairs/demo")
IN_WHEEL = ("polaris_dpo/conf/config.yaml", "polaris_dpo/conf/data/bfcl.yaml", "polaris_dpo/assets/pairs/demo/train.jsonl",
            "polaris_dpo/assets/bfcl/possible_answer/BFCL_v4_simple_python.json", "polaris_dpo/assets/glaive/SOURCE.txt")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The repo's wheel, built from a copy of its sources and installed with `pip install --target`."""
    tmp = tmp_path_factory.mktemp("install")
    for name in BUILD_SOURCES:
        target = tmp / "src" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, target)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheel"),
                            str(tmp / "src")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = (tmp / "wheel").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not [name for name in IN_WHEEL if name not in names], sorted(names)
    installed = subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp / "site"), str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    assert not (tmp / "site" / "polaris_dpo" / "conf").is_symlink()
    return tmp / "site"


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`args` run from `cwd` (not the repo) with the installed copy first on the import path."""
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_the_installed_copy_is_imported(site, tmp_path):
    done = run_installed(site, tmp_path, sys.executable, "-c", "import polaris_dpo; print(polaris_dpo.__file__)")
    assert Path(done.stdout.strip()).is_relative_to(site)


def test_console_script_prints_the_config(site, tmp_path):
    done = run_installed(site, tmp_path, str(site / "bin" / "polaris-dpo"), "--cfg", "job", "model=tiny")
    assert "reader: demo" in done.stdout and "name: pipeline" in done.stdout


def test_default_pairs_are_the_bundled_copy(site, tmp_path):
    done = run_installed(site, tmp_path, sys.executable, "-m", "polaris_dpo", "--cfg", "job", "--package", "dpo",
                         "--resolve", "stage=dpo", "model=tiny")
    pairs = Path(OmegaConf.create(done.stdout).pairs)
    assert pairs.is_relative_to(site) and (pairs / "train.jsonl").is_file()


def test_a_stage_runs_on_bundled_data(site, tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    run_installed(site, cwd, sys.executable, "-m", "polaris_dpo", "stage=mine", "model=tiny", "mine.source=synthetic",
                  "data=glaive", "data.limit=10", f"mine.pairs_dir={tmp_path / 'pairs'}",
                  f"hydra.run.dir={tmp_path / 'run'}")
    assert (tmp_path / "pairs" / "mined" / "train.jsonl").is_file()
    resolved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert Path(resolved.data.root).is_relative_to(site)
