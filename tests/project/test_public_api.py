"""The public surface reads well: every exported object and its public methods say what they do."""

from __future__ import annotations

import inspect
import pydoc

import asgi_sessions


def public_members(obj: type) -> list[str]:
    names = []
    for name, member in vars(obj).items():
        if name.startswith("_"):
            continue
        if inspect.isfunction(member) or isinstance(member, (property, classmethod, staticmethod)):
            names.append(name)
    return names


def test_every_public_object_and_method_has_a_docstring() -> None:
    missing = []
    for name in asgi_sessions.__all__:
        obj = getattr(asgi_sessions, name)
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for klass in obj.__mro__:
                if klass.__module__.startswith("asgi_sessions"):
                    for member in public_members(klass):
                        if not inspect.getdoc(getattr(obj, member)):
                            missing.append(f"{name}.{member}")
    assert sorted(set(missing)) == []


def test_help_on_the_middleware_documents_every_option() -> None:
    text = pydoc.render_doc(asgi_sessions.SessionMiddleware, renderer=pydoc.plaintext)
    signature = inspect.signature(asgi_sessions.SessionMiddleware)
    for option in signature.parameters:
        if option != "app":
            assert option in text.split("Args:")[1], option
