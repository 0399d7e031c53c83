"""``broker/models.py`` is the wire-model catalogue: a face that defines nothing itself.

If the face grew its own definitions (a second ``_TOLERATED`` dict, a copied ContextVar), the
gateway and the models would count tolerated fields and dropped items in different places;
these tests keep the face a list of re-exports over the modules that own the state.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import broker.models as catalogue

FACE = Path(__file__).resolve().parent.parent / "broker" / "models.py"
OWNERS = ("broker.wire", "broker.trading_models", "broker.market_models", "broker.order_requests",
          "broker.responses")


def test_the_face_holds_only_its_docstring_imports_and_all() -> None:
    body = ast.parse(FACE.read_text(encoding="utf-8")).body
    for node in body[1:]:
        is_all = isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["__all__"]
        assert isinstance(node, ast.ImportFrom) or is_all, ast.dump(node)[:120]


def test_every_catalogue_name_is_the_owning_modules_object() -> None:
    owners = [importlib.import_module(name) for name in OWNERS]
    for name in catalogue.__all__:
        homes = [owner for owner in owners if getattr(owner, name, None) is getattr(catalogue, name)]
        assert homes, f"{name} is not defined by any of {OWNERS}"


def test_tolerance_memory_is_one_memory_seen_through_the_face() -> None:
    catalogue.reset_tolerance_memory()
    order = catalogue.Order.model_validate({
        "id": "o-1", "client_order_id": "c-1", "symbol": "AAPL", "side": "buy", "type": "market",
        "status": "new", "qty": "1", "filled_qty": "0", "time_in_force": "day",
        "created_at": "2026-01-05T15:00:00Z", "hwm": "not-a-number",
    })
    assert order.symbol == "AAPL"
    seen = catalogue.tolerated_fields()
    assert any(model == "Order" and field == "hwm" for model, field, _ in seen), seen
    importlib.import_module("broker.wire").reset_tolerance_memory()
    assert catalogue.tolerated_fields() == {}
