"""What each op that stays inside the request does to its view of the session.

contract-v2, "changes tracked": set / del / pop (present key) / popitem / setdefault
(inserting) / update / |= mark those keys; clear() replaces; ``modified = True`` marks
every present key and keeps deletions; a list or dict handed out is watched for nested
changes. Each function returns what the real call returns (the harness compares).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from tests.model import ops as o
from tests.model.records import Held, encode_setting


def apply(held: Held, op: o.Op) -> Any:
    if isinstance(op, o.Later):
        return change_in_place(held.refs, op)
    result = _apply(held, op)
    remember(held.refs, op, held.local.get)
    return result


# -- what the view holds (issue 22: containers kept across an explicit save) -------------


def _named_keys(op: o.Op) -> tuple[str, ...]:
    """The keys whose value the view holds after ``op`` (got or assigned)."""
    if isinstance(op, o.Get | o.Nested | o.SetDefault | o.Set):
        return (op.key,)
    if isinstance(op, o.Update):
        return tuple(key for key, _ in op.items)
    return ()


def remember(refs: dict[str, Any], op: o.Op, lookup: Callable[[str], Any]) -> None:
    """After ``op``: the list or dict the view now holds under each key it named.

    The same rule for the model (``lookup`` reads its view) and the harness (the real
    session's ``dict.get``): the object itself, so that later removals detach it alike.
    """
    for key in _named_keys(op):
        value = lookup(key)
        if isinstance(value, list | dict):
            refs[key] = value
        else:
            refs.pop(key, None)


def change_in_place(refs: dict[str, Any], op: o.Later) -> str:
    """``Later``: change the held container without reading the session again."""
    value = refs.get(op.key)
    if isinstance(value, list):
        value.append(op.item)
        return "list"
    if isinstance(value, dict):
        value["n"] = op.item
        return "dict"
    return "none held"


def _apply(held: Held, op: o.Op) -> Any:
    local = held.local
    if isinstance(op, o.Get):
        held.handout(op.key)
        return copy.deepcopy(local.get(op.key))
    if isinstance(op, o.Set):
        local[op.key] = copy.deepcopy(op.value)
        held.mark(op.key)
    elif isinstance(op, o.Del):
        if op.key not in local:
            return False
        del local[op.key]
        held.mark(op.key)
        return True
    elif isinstance(op, o.Pop):
        if op.key not in local:
            return None
        held.mark(op.key)
        return local.pop(op.key)
    elif isinstance(op, o.SetDefault):
        if op.key in local:
            held.handout(op.key)
        else:
            local[op.key] = copy.deepcopy(op.value)
            held.mark(op.key)
        return copy.deepcopy(local[op.key])
    elif isinstance(op, o.Update):
        for key, value in op.items:
            local[key] = copy.deepcopy(value)
            held.mark(key)
    elif isinstance(op, o.Clear):
        # "clear() = replace: drop every stored key, then write what is set after"
        local.clear()
        held.pending.clear()
        held.replace = held.modified = True
    elif isinstance(op, o.Nested):
        return _nested(held, op)
    elif isinstance(op, o.Snapshot):
        return copy.deepcopy(local)  # C code sees the decoded values
    elif isinstance(op, o.BadSet):
        return "refused"  # "raises TypeError in the view, before any I/O"
    else:
        raise AssertionError(f"not an op on the view: {op!r}")
    return None


def _nested(held: Held, op: o.Nested) -> str:
    held.handout(op.key)
    value = held.local.get(op.key)
    kind = "other"
    if isinstance(value, list):
        value.append(op.item)
        kind = "list"
    elif isinstance(value, dict):
        value["n"] = op.item
        kind = "dict"
    if op.mark_modified:
        # "marks every PRESENT key as changed and keeps any deletions"
        held.all_present = held.modified = True
    return kind


def set_expiry(held: Held, op: o.SetExpiry, now: float) -> None:
    held.expiry = encode_setting(op.kind, op.seconds, now)
    held.expiry_changed = held.modified = True


def set_owner(held: Held, name: str | None) -> None:
    # "written only when this request assigned a different value to session.owner"
    if name != held.owner:
        held.owner = name
        held.owner_changed = held.modified = True


def popitem(held: Held, result: Any) -> Any:
    """Which item popitem() takes depends on the store's key order, which the contract
    leaves open: accept any present item, then apply it as pop(key)."""
    local = held.local
    if not local:
        return None
    if isinstance(result, list) and len(result) == 2 and result[0] in local:
        if local[result[0]] == result[1]:
            del local[result[0]]
            held.mark(result[0])
            return result
    return f"one of {sorted(local.items())}"
