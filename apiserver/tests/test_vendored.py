"""The API server's copies of the collection's module_utils (stateserver_api/collection) are the collection's files:
a change to plugins/module_utils that is not copied (apiserver/vendor.py) fails here, before a wheel ships it."""

import importlib.util
from pathlib import Path

import pytest

APISERVER = Path(__file__).resolve().parents[1]


def _vendor():
    spec = importlib.util.spec_from_file_location("vendor", APISERVER / "vendor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vendor = _vendor()


@pytest.mark.parametrize("name", vendor.FILES)
def test_copy_is_the_collections_file(name: str) -> None:
    assert (vendor.TARGET / name).read_text(encoding="utf-8") == vendor.vendored_text(name), (
        f"stateserver_api/collection/{name} differs from plugins/module_utils/{name}: run apiserver/vendor.py")


def test_copies_import_only_each_other_and_the_standard_library() -> None:
    # A vendored file that imported another collection file not in FILES would fail only on a machine.
    for name in vendor.FILES:
        for line in (vendor.TARGET / name).read_text(encoding="utf-8").splitlines():
            if line.startswith("from .") and not line.startswith("from .."):
                assert f"{line.split()[1][1:]}.py" in vendor.FILES, f"{name}: {line}"
            assert "ansible" not in line or not line.startswith(("from ", "import ")), f"{name}: {line}"


def test_check_reports_a_stale_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    for name in vendor.FILES:
        (tmp_path / name).write_text(vendor.vendored_text(name), encoding="utf-8")
    monkeypatch.setattr(vendor, "TARGET", tmp_path)
    assert vendor.main(["--check"]) == 0
    (tmp_path / "_status.py").write_text("# edited by hand\n", encoding="utf-8")
    assert vendor.main(["--check"]) == 1
    assert "_status.py differs" in capsys.readouterr().err
    assert vendor.main([]) == 0
    assert (tmp_path / "_status.py").read_text(encoding="utf-8") == vendor.vendored_text("_status.py")
