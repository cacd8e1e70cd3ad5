"""Secret never shows its value, except through reveal()."""

from __future__ import annotations

import copy
import logging
import pickle

import pytest

from egress.errors import SecretNotFound
from egress.secrets import Secret

VALUE = "sk_live_do_not_print_4242"
REDACTED = "Secret('****')"


@pytest.mark.parametrize(
    "render",
    [
        pytest.param(repr, id="repr is redacted"),
        pytest.param(str, id="str is redacted"),
        pytest.param(lambda s: f"{s}", id="f-string is redacted"),
        pytest.param(lambda s: f"{s!r}", id="f-string !r is redacted"),
        pytest.param(lambda s: f"{s:>40}", id="format spec is ignored, still redacted"),
        pytest.param(lambda s: "%s" % s, id="percent-s is redacted"),
        pytest.param(lambda s: "%r" % (s,), id="percent-r is redacted"),
        pytest.param(lambda s: f"{s}", id="str.format is redacted"),
        pytest.param(lambda s: repr([s, {"k": s}]), id="inside containers is redacted"),
    ],
)
def test_renderings_never_show_the_value(render: object) -> None:
    assert callable(render)
    text = render(Secret(VALUE))
    assert VALUE not in text
    assert REDACTED in text


def test_reveal_is_the_one_way_to_the_value() -> None:
    assert Secret(VALUE).reveal() == VALUE


def test_exception_text_carrying_a_secret_stays_redacted() -> None:
    with pytest.raises(SecretNotFound) as info:
        raise SecretNotFound(f"bad credential {Secret(VALUE)}")
    assert str(info.value) == f"bad credential {REDACTED}"
    assert VALUE not in repr(info.value)


def test_logging_a_secret_shows_the_redacted_form(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("egress.test").info("injecting %s and %r", Secret(VALUE), Secret(VALUE))
    assert caplog.records[0].getMessage() == f"injecting {REDACTED} and {REDACTED}"


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickling_is_refused(protocol: int) -> None:
    with pytest.raises(TypeError, match=r"^Secret refuses to be pickled"):
        pickle.dumps(Secret(VALUE), protocol=protocol)


def test_pickling_inside_a_container_is_refused() -> None:
    with pytest.raises(TypeError, match=r"^Secret refuses to be pickled"):
        pickle.dumps({"credential": Secret(VALUE)})


@pytest.mark.parametrize(
    "a, b, equal",
    [
        pytest.param(Secret(VALUE), Secret(VALUE), True, id="same value compares equal"),
        pytest.param(Secret(VALUE), Secret(VALUE + "x"), False, id="longer value differs"),
        pytest.param(Secret(VALUE), Secret("SK" + VALUE[2:]), False, id="different prefix differs"),
        pytest.param(Secret("é"), Secret("é"), True, id="non-ascii values compare"),
    ],
)
def test_equality(a: Secret, b: Secret, equal: bool) -> None:
    assert (a == b) is equal
    assert (a != b) is not equal


def test_a_secret_never_equals_its_plain_text() -> None:
    # Comparing against a str must not become a way to test guesses by accident.
    assert Secret(VALUE) != VALUE


def test_secrets_are_unhashable() -> None:
    with pytest.raises(TypeError, match="unhashable"):
        hash(Secret(VALUE))


def test_secrets_are_immutable_and_have_no_dict() -> None:
    s = Secret(VALUE)
    with pytest.raises(AttributeError, match=r"^Secret is immutable$"):
        s._value = "other"
    with pytest.raises(TypeError, match="__dict__"):
        vars(s)
    assert s.reveal() == VALUE


def test_copies_are_the_same_object() -> None:
    s = Secret(VALUE)
    assert copy.copy(s) is s
    assert copy.deepcopy({"k": s})["k"] is s


def test_only_strings_are_wrapped_and_the_error_does_not_echo() -> None:
    with pytest.raises(TypeError) as info:
        Secret(VALUE.encode())  # type: ignore[arg-type]
    assert str(info.value) == "Secret wraps a str, not bytes"
