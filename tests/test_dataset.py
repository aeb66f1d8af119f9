import pytest

from scopeguard.dataset import (
    as_of_request,
    load_labelled,
    load_products,
    mask_feature,
)
from scopeguard.errors import ConfigError, InputError
from scopeguard.positioning import Item, parse_positioning

FILTERS = "Filters: --type (file, directory, empty, ...), --size, --changed-within/--changed-before"


@pytest.mark.parametrize("shipped,expected", [
    ("--size", "Filters: --type (file, directory, empty, ...), --changed-within/--changed-before"),
    ("--type empty", "Filters: --type (file, directory, ...), --size, "
                     "--changed-within/--changed-before"),
    ("--type f/d", "Filters: --size, --changed-within/--changed-before"),
    ("--changed-within", "Filters: --type (file, directory, empty, ...), --size"),
    ("--owner", FILTERS),  # not in the text: nothing to mask
])
def test_mask_feature_removes_only_the_shipped_part(shipped, expected):
    assert mask_feature(FILTERS, shipped) == expected


def test_mask_whole_feature_and_word_fallback():
    assert mask_feature("Parallel execution (-x/--exec, -X/--exec-batch)", "-x/--exec") is None
    themes = "Themes (incl. light/dark theme selection), output styles (--style)"
    assert mask_feature(themes, "--theme-light/--theme-dark") == "Themes, output styles (--style)"
    assert mask_feature("Ranges (-r) and highlighting (-H)", "-H") == "Ranges (-r)"
    assert mask_feature("Syntax highlighting for many languages", "fish syntax") == \
        "Syntax highlighting for many languages"


def test_as_of_request_drops_caused_feature():
    p = parse_positioning({"product": "T", "category": "For x, use T", "target_customer": "t",
                           "need": "n", "main_value": "v",
                           "features": ["Exec (-x/--exec)", "Colours"]})
    assert [f.name for f in as_of_request(p, "-x/--exec").features] == ["Colours"]
    assert as_of_request(p, "") is p
    assert as_of_request(p, "--nothing").features == (Item("Exec (-x/--exec)"), Item("Colours"))


RESEARCH = """slug: finder
name: finder
category: CLI tool
positioning:
  - finder finds files by name.
features:
  - 'Filters: --type (file, directory), --size'
  - Colour output
non_goals:
  - Searching file contents
  - (No explicit non-goals section in the docs.)
"""


def write_products(tmp_path, example_config):
    d = tmp_path / "products"
    d.mkdir()
    (d / "finder.yml").write_text(RESEARCH)
    (d / "pawtrack.yml").write_text(example_config.read_text())
    return d


def test_load_products_both_formats(tmp_path, example_config):
    products = load_products(write_products(tmp_path, example_config))
    assert set(products) == {"finder", "pawtrack"}
    finder = products["finder"].positioning
    assert [n.name for n in finder.non_goals] == ["Searching file contents"]
    assert finder.positioning_statements() == [("category", "CLI tool"),
                                               ("statement", "finder finds files by name.")]
    with pytest.raises(InputError, match="products directory not found"):
        load_products(tmp_path / "nope")
    (tmp_path / "products" / "bad.yml").write_text("slug: x\npositioning: [a]\n")
    with pytest.raises(ConfigError, match="'name' is missing"):
        load_products(tmp_path / "products")


def test_load_labelled_checks_products_and_labels(tmp_path, example_config):
    products = load_products(write_products(tmp_path, example_config))
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a", "product": "finder", "title": "t", "label": "core", '
                    '"shipped_as": "--size"}\n')
    [item] = load_labelled(path, products)
    assert (item.product, item.label, item.shipped_as) == ("finder", "core", "--size")
    path.write_text('{"id": "a", "title": "t", "label": "core"}\n')
    with pytest.raises(InputError, match="has no 'product' and there are 2 products"):
        load_labelled(path, products)
    path.write_text('{"id": "a", "product": "other", "title": "t", "label": "core"}\n')
    with pytest.raises(InputError, match="names product 'other'"):
        load_labelled(path, products)
    path.write_text('{"id": "a", "product": "finder", "title": "t"}\n')
    with pytest.raises(InputError, match="has no label"):
        load_labelled(path, products)


def test_mask_by_heading_or_verbatim_item():
    assert mask_feature("Bisect: mark commits good or bad", "Bisect") is None
    assert mask_feature("Custom commands: keybindings that run shell commands",
                        "Custom commands") is None
    shells = "Shell integrations: bash, zsh, nushell, fish"
    assert mask_feature(shells, "nushell shell integration") == \
        "Shell integrations: bash, zsh, fish"
    colours = "Colours: --color, LS_COLORS and EZA_COLORS"
    assert mask_feature(colours, "LS_COLORS") == "Colours: --color, EZA_COLORS"
    # One shared word is not enough outside a list: "type" names no capability here.
    assert mask_feature("Colour by file types (like ls)", "--type f/d") == \
        "Colour by file types (like ls)"
