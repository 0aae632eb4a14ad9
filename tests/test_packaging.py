"""What ``pip install .`` (and so the ``.deb``, whose venv it fills) installs: the daemon only.

The benchmarks (``bench/``) and the tests run from a checkout. setuptools is asked which files
it would install: its ``build_py`` command, the step of a wheel's build that gathers the modules
and their package data, run on a copy of the checkout with the project's own configuration. (A
whole wheel needs setuptools' ``bdist_wheel``, which the development venv's setuptools only has
with the ``wheel`` package, or an isolated build that downloads a newer setuptools.)
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
INCLUDE = 'include = ["distributord*"]'


def installed_files(tmp_path: pathlib.Path, include: str = INCLUDE) -> set[str]:
    """The files setuptools would install from a copy of this checkout, as relative paths.

    ``include`` replaces the package selection in the copy's ``pyproject.toml``.
    """
    source = tmp_path / "source"
    source.mkdir()
    for entry in ROOT.iterdir():
        name = entry.name
        # Not the VCS, venv and caches, earlier build output, or debian/ (no Python in it; a
        # package build in the tree leaves its output there).
        if (
            name.startswith(".")
            or name in ("build", "dist", "debian")
            or name.endswith(".egg-info")
        ):
            continue
        if entry.is_dir():
            shutil.copytree(entry, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(entry, source / name)
    pyproject = source / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    assert text.count(INCLUDE) == 1  # the selection this test knows (else it checks nothing)
    pyproject.write_text(text.replace(INCLUDE, include), encoding="utf-8")
    built = tmp_path / "built"
    command = [sys.executable, "-c", "import setuptools; setuptools.setup()", "--quiet"]
    done = subprocess.run(
        [*command, "build_py", "--build-lib", str(built)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return {path.relative_to(built).as_posix() for path in built.rglob("*") if path.is_file()}


def test_the_installed_package_is_the_daemon_without_benchmarks_or_tests(
    tmp_path: pathlib.Path,
) -> None:
    files = installed_files(tmp_path)
    # The control: the daemon itself is there, its core, shell and commands.
    for module in ("core/ledger.py", "shell/daemon.py", "cli/main.py", "__main__.py"):
        assert f"distributord/{module}" in files
    assert {path.split("/")[0] for path in files} == {"distributord"}
    assert not [path for path in files if "bench" in path.split("/")[:-1]]
    assert (ROOT / "bench" / "load.py").is_file()  # the benchmarks are still in the checkout


def test_the_check_sees_benchmarks_that_would_be_installed(tmp_path: pathlib.Path) -> None:
    # The same check on a configuration that ships them: it finds them.
    files = installed_files(tmp_path, include='include = ["distributord*", "bench*"]')
    assert "bench/load.py" in files
    assert {path.split("/")[0] for path in files} == {"distributord", "bench"}


def test_the_debian_package_adds_no_benchmarks() -> None:
    # debian/rules fills the package's venv with dh_virtualenv, which runs pip install . on this
    # checkout: the tests above hold for it. Beside the venv it installs only the files that
    # debian/'s lists name.
    assert "dh_virtualenv" in (ROOT / "debian" / "rules").read_text(encoding="utf-8")
    lists = [*ROOT.glob("debian/*.install"), *ROOT.glob("debian/*.docs")]
    assert lists
    for path in lists:
        assert "bench" not in path.read_text(encoding="utf-8"), path
