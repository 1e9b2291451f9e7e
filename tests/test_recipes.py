import pytest

from slimbench import RecipeError
from slimbench.optimize.recipes import builtin_recipes, load_recipe, parse_recipe


def test_builtin_recipes_parse_and_cover_the_spine():
    recipes = builtin_recipes()
    assert {"baseline", "torch-int8", "onnx", "onnx-o2-int8"} <= set(recipes)
    anchor = recipes["onnx-o2-int8"]
    (call,) = anchor.steps
    assert call.name == "export" and call.config.optimize == "O2" and call.config.quantize == "dynamic-int8"
    assert anchor.output_kind == "onnx"
    assert recipes["torch-int8"].output_kind == "torch-int8"


def test_recipe_round_trips_through_dict():
    for recipe in builtin_recipes().values():
        assert parse_recipe(recipe.to_dict()) == recipe


@pytest.mark.parametrize(
    "steps, message",
    [
        ([{"quantise": {}}], r"step 1: unknown step 'quantise' \(known: .*dynamic-int8.*\)"),
        (
            [{"baseline": {}}, {"export": {"optimize": "O9"}}],
            r"step 2 'export': optimize must be 'O1' \| 'O2'",
        ),
        ([{"export": {"opset": "17"}}], r"step 1 'export': opset must be int \| null, got '17'"),
        ([{"export": {"colour": 1}}], r"step 1 'export': unknown field 'colour' \(allowed: format, optimize"),
        ([{"export": {"opset": 7}}], r"step 1 'export': opset must be between 11 and 23, got 7"),
        (
            [{"export": {}}, {"dynamic-int8": {}}],
            r"step 2 'dynamic-int8': takes a torch model, but the steps before",
        ),
        ([{"export": {}, "baseline": {}}], r"step 1: write each step as"),
        ([], r"'steps' must be a non-empty list"),
    ],
)
def test_validation_names_step_and_field(steps, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe({"name": "r", "steps": steps})


def test_bad_names_and_keys():
    with pytest.raises(RecipeError, match="'name' must be"):
        parse_recipe({"name": "../evil", "steps": ["baseline"]})
    with pytest.raises(RecipeError, match="unknown key 'step'"):
        parse_recipe({"name": "r", "step": []})


def test_load_recipe_from_yaml_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nsteps:\n  - export: {optimize: O1}\n")
    recipe = load_recipe(path)
    assert recipe.name == "mine" and recipe.steps[0].config.optimize == "O1"
    path.write_text("name: mine\nsteps:\n  - export: {optimize: O1\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")
    with pytest.raises(RecipeError, match="unknown recipe 'nope'"):
        load_recipe("nope")


def test_static_int8_after_fusion_is_refused():
    with pytest.raises(RecipeError, match="static-int8 needs optimize O1 or null"):
        parse_recipe({"name": "r", "steps": [{"export": {"optimize": "O2", "quantize": "static-int8"}}]})
