import pytest

from stbench.errors import UnknownNameError
from stbench.plugins import METHODS
from stbench.registry import Registry


def test_register_decorator_and_lazy_target():
    reg = Registry("thing")

    @reg.register("alpha")
    class Alpha:
        pass

    reg.register("lazy", "stbench.errors:UserError")
    assert reg.get("alpha") is Alpha
    from stbench.errors import UserError

    assert reg.get("lazy") is UserError
    assert reg.list() == ["alpha", "lazy"]
    assert reg.list("al*") == ["alpha"]


def test_duplicate_name_raises():
    reg = Registry("thing")
    reg.register("a", "x:y")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", "x:z")


def test_unknown_name_suggests_closest():
    reg = Registry("method")
    reg.register("alignst", "x:y")
    reg.register("bilinear", "x:z")
    with pytest.raises(UnknownNameError, match="did you mean alignst"):
        reg.get("alignsst")


def test_entry_points_are_loaded(monkeypatch):
    from importlib.metadata import EntryPoint

    import stbench.registry as registry_module

    eps = [EntryPoint("plugin_x", "stbench.errors:DataError", "stbench.test")]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: eps if group == "stbench.test" else [])
    reg = Registry("thing", group="stbench.test")
    from stbench.errors import DataError

    assert reg.get("plugin_x") is DataError
    assert "plugin_x" in reg


def test_builtin_methods_registered():
    assert {"mean_expression", "ridge", "bilinear"} <= set(METHODS.list())
