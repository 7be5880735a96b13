"""``fastjac.dense`` and ``fastjac.structured`` are drop-in twins of the lecture's names.

The public function set of each module is computed, not listed, so a function
added to one module and not the other fails here.
"""

import inspect
import types

import pytest

import fastjac
import lecture
from fastjac import dense, structured

LECTURE_NAMES = {
    "chain_rule", "DX_affine", "DW_affine", "Db_affine", "logit", "Dlogit", "softmax",
    "matrix_softmax", "Dmatrix_softmax", "cross_entropy", "DQcross_entropy", "nn_loss_closure",
    "nn_loss_gradient_closure", "update_blocks", "negate_blocks", "block_norm", "random_matrix",
    "block_backtracking",
}


def is_private_module(name):
    return any(part.startswith("_") for part in name.split("."))


def public_functions(mod):
    """Names of the public functions ``mod`` offers.

    A public name (no leading underscore) bound to a callable that is neither a
    module nor a class, and defined in fastjac outside a private module: so
    ``fastjac.chain.chain_rule`` re-exported by ``structured`` and the shared
    ``fastjac.linesearch`` helpers count, while ``numpy`` functions or
    validation helpers imported from ``fastjac._validate`` do not.
    """
    names = set()
    for name, obj in vars(mod).items():
        if name.startswith("_") or isinstance(obj, types.ModuleType) or inspect.isclass(obj):
            continue
        if not callable(obj):
            continue
        home = getattr(obj, "__module__", "") or ""
        if home.split(".")[0] == "fastjac" and not is_private_module(home):
            names.add(name)
    return names


def test_the_public_rule_sees_what_it_should():
    """Guard the rule itself: it must neither drop the lecture's names nor keep helpers."""
    names = public_functions(structured)
    assert "chain_rule" in names and "block_backtracking" in names
    assert "as_float" not in names and "np" not in names and "kernels" not in names
    assert "Diagonal" not in names


def test_dense_and_structured_export_the_same_functions():
    dense_names, structured_names = public_functions(dense), public_functions(structured)
    assert dense_names == structured_names, (
        f"only in dense: {sorted(dense_names - structured_names)}; "
        f"only in structured: {sorted(structured_names - dense_names)}"
    )


def test_the_lecture_names_are_all_public():
    assert LECTURE_NAMES <= public_functions(dense)
    assert LECTURE_NAMES <= public_functions(structured)
    # and the list above is the lecture's own
    assert LECTURE_NAMES == {n for n, o in vars(lecture).items() if inspect.isfunction(o)}


def call_signature(fn):
    """Names, kinds and defaults of ``fn``'s parameters: what a call depends on (type hints
    may differ: structured functions take and return structured Jacobians too)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", sorted(public_functions(dense) | public_functions(structured)))
def test_identical_signatures(name):
    assert call_signature(getattr(dense, name)) == call_signature(getattr(structured, name))


@pytest.mark.parametrize("name", sorted(LECTURE_NAMES))
def test_lecture_calls_still_work(name):
    """Every parameter of the lecture's function is there, in order, with the same default;
    anything fastjac adds is keyword-only with a default, so lecture code runs unchanged."""
    want = list(inspect.signature(getattr(lecture, name)).parameters.values())
    for mod in (dense, structured):
        got = list(inspect.signature(getattr(mod, name)).parameters.values())
        assert [(p.name, p.default) for p in got[:len(want)]] == [(p.name, p.default) for p in want]
        assert all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in got[:len(want)])
        for extra in got[len(want):]:
            assert extra.kind is extra.KEYWORD_ONLY and extra.default is not extra.empty, extra


@pytest.mark.parametrize("name", sorted(public_functions(structured)))
def test_top_level_is_structured(name):
    assert getattr(fastjac, name) is getattr(structured, name)


def test_top_level_exposes_dense():
    assert fastjac.dense is dense
    assert isinstance(fastjac.dense, types.ModuleType) and fastjac.dense.__name__ == "fastjac.dense"
    assert fastjac.structured is structured
    for name in LECTURE_NAMES:
        assert callable(getattr(fastjac.dense, name))


def code_lines(fn):
    """The statements of ``fn``'s nested ``df``, stripped, without blanks and comments."""
    source = inspect.getsource(fn)
    body = source[source.index("def df(var):"):].splitlines()[1:]
    lines = [ln.strip() for ln in body]
    return [ln for ln in lines if ln and not ln.startswith("#") and ln != "return df"]


@pytest.mark.parametrize("mod", [dense, structured])
def test_the_gradient_code_is_the_lectures_line_for_line(mod):
    """``nn_loss_gradient_closure`` runs the lecture's statements, in order, with only a
    check in front (structured: the arguments; dense: the memory budget)."""
    ours, theirs = code_lines(mod.nn_loss_gradient_closure), code_lines(lecture.nn_loss_gradient_closure)
    assert len(ours) == len(theirs) + 1 and ours[1:] == theirs, ours[:1]
    assert ours[0] in ("_network_args(X, Y, var)", "_check_gradient_memory(X, Y, var)")


def test_all_lists_the_public_api_and_help_shows_it():
    import pydoc

    assert len(fastjac.__all__) == len(set(fastjac.__all__))
    for name in fastjac.__all__:
        assert hasattr(fastjac, name), name
    # every public function of the structured module and every Jacobian class is listed
    from fastjac import jacobians

    assert public_functions(structured) <= set(fastjac.__all__)
    assert set(jacobians.__all__) <= set(fastjac.__all__)
    text = pydoc.render_doc(fastjac, renderer=pydoc.plaintext)
    assert "FUNCTIONS" in text and "CLASSES" in text
    for name in ("chain_rule", "nn_loss_and_gradient_closure", "set_dense_budget", "SoftmaxJacobian"):
        assert name in text, name


def test_the_package_is_typed():
    from pathlib import Path

    assert (Path(fastjac.__file__).parent / "py.typed").is_file()
