import pytest

from core.ground.registry import Registry, UnknownNameError, import_object
from core.sources.models import MODELS, build_model, get_spec, list_models, register_factory


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
    try:
        assert spec.name in list_models()
        m2 = build_model("user_mlp")
        for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
            assert torch.equal(a, b), k
    finally:  # other tests compare this process's models with a fresh process's
        MODELS.unregister("user_mlp")


def test_import_object_errors_are_clear():
    with pytest.raises(ValueError, match="package.module:function"):
        import_object("no_colon")
    with pytest.raises(ValueError, match="cannot import module"):
        import_object("no_such_mod_xyz:f")
    with pytest.raises(ValueError, match="has no attribute"):
        import_object("core.sources.models:nope")


def test_a_factory_with_keyword_arguments_and_a_cell_run_twice():
    """The notebook path: a factory that takes arguments, registered again on a re-run."""
    import torch

    from core.errors import PrunescopeError
    from core.sources.datasets import DataSplits, get_dataset, register_dataset
    from core.sources.models import MODELS, build_model, get_spec, register_factory

    name = "kwargs_vit_test"
    try:
        for depth in (2, 1):  # the same cell run twice, the second time with other arguments
            register_factory("demo_models.nets:DigitsViT", weights=None, dataset="digits", input_shape=(1, 8, 8),
                             name=name, kwargs={"depth": depth})
        m = build_model(name)
        assert len(m.blocks) == 1 and "depth=1" in get_spec(name).description
        with pytest.raises(PrunescopeError, match="kwargs must be a dict of names to plain values"):
            register_factory("demo_models.nets:DigitsViT", weights=None, dataset="digits", input_shape=(1, 8, 8),
                             name=name, kwargs={"depth": object()})
    finally:
        MODELS.unregister(name)

    def splits(n):
        x = torch.zeros(n, 1, 8, 8)
        return DataSplits("twice", x, torch.zeros(n, dtype=torch.long), x, torch.zeros(n, dtype=torch.long), ["a"])

    from core.sources.datasets import DATASETS

    try:
        register_dataset("twice_test")(lambda: splits(3))
        assert len(get_dataset("twice_test").x_test) == 3
        register_dataset("twice_test")(lambda: splits(5))  # run again: replaced, not "already registered"
        assert len(get_dataset("twice_test").x_test) == 5
    finally:
        DATASETS.unregister("twice_test")
        get_dataset.cache_clear()
