import pytest

from scopeguard.signals import custom_signals, input_class


def names(text, customer=""):
    return {(s.name, s.strength) for s in custom_signals(text, customer)}


@pytest.mark.parametrize("text,expected", [
    ("Sync with our in-house lab system every hour", ("in-house system", "strong")),
    ("Read from our own CRM nightly", ("in-house system", "strong")),
    ("We will sign the contract once this ships", ("contract or deal", "strong")),
    ("We're losing the deal to a competitor without SSO", ("contract or deal", "strong")),
    ("Acme Ltd needs a custom export", ("named customer", "strong")),
    ("A report just for our board meeting", ("only for us", "strong")),
    ("Show our logo on the page", ("our branding", "weak")),
    ("In my case the folders are huge", ("personal workflow", "weak")),
])
def test_custom_signals(text, expected):
    assert expected in names(text)


def test_no_custom_signals_in_a_plain_request():
    assert custom_signals("Add a waitlist that fills cancelled slots by SMS") == []


def test_flags_and_ordinary_words_are_not_deals():
    assert custom_signals("add a --contract flag; deal with large files") == []


def test_customer_named_in_text_counts():
    assert ("named customer", "strong") in names("Riverside Vets wants this", "Riverside Vets")
    assert names("anna wants this", "anna") == set()  # a login is not a named customer


@pytest.mark.parametrize("text,expected", [
    ("The app crashes and the export is broken since the last update", "fault_correction"),
    ("We must keep an audit trail for GDPR compliance", "necessity"),
    ("Sales team says we are losing deals to a prospect without this", "opportunistic"),
    ("Every other tool in the market has this; competitors ship it", "market_driven"),
    ("It would be nice to pick the reminder time", "responsiveness"),
    ("Show a nicer error message when the file is missing", "responsiveness"),
])
def test_input_class(text, expected):
    assert input_class(text)[0] == expected


def test_customer_in_a_form_field_is_not_custom_language():
    assert names("Clinic: Riverside Vets\nPlease add a waitlist", "Riverside Vets") == set()
