import pytest

from core.models import build_model, get_spec, list_models, register_factory
from core.registry import Registry, UnknownNameError, import_object


def test_unknown_name_lists_valid_names():
    r = Registry("thing")
    r.register("a", 1)
    r.register("b", 2)
    with pytest.raises(UnknownNameError, match="unknown thing 'c'; valid thing names: a, b"):
        r.get("c")


def test_register_twice_is_refused_unless_overwrite():
    r = Registry("thing")
    r.register("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        r.register("a", 2)
    r.register("a", 2, overwrite=True)
    assert r.get("a") == 2


def test_demo_models_join_through_the_plugin_registry(demo_names):
    assert set(demo_names) <= set(list_models())


def test_unknown_model_message_lists_models():
    with pytest.raises(UnknownNameError) as e:
        get_spec("no_such_model")
    assert "digits_cnn" in str(e.value)


def test_register_factory_from_importable_path(tmp_path):
    import torch
    from safetensors.torch import save_file

    m = build_model("digits_mlp")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    spec = register_factory("demo_models.nets:digits_mlp", weights=str(path), dataset="digits",
                            input_shape=(1, 8, 8), name="user_mlp")
    assert spec.name in list_models()
    m2 = build_model("user_mlp")
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


def test_import_object_errors_are_clear():
    with pytest.raises(ValueError, match="package.module:function"):
        import_object("no_colon")
    with pytest.raises(ValueError, match="cannot import module"):
        import_object("no_such_mod_xyz:f")
    with pytest.raises(ValueError, match="has no attribute"):
        import_object("core.models:nope")
