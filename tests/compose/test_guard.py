"""The guard of composed answers (serving/compose.py): every number, price, URL, e-mail address and
name-like word must be in the cited sections (or the question); citations must name a section the
model was given; most words must come from the sections."""

from __future__ import annotations

from serving.compose import Passage, abstains, build_messages, check, citations, support

REFUND = Passage(1, "refund-policy", "Refund policy", "Timing", "https://help.example/refunds",
                 "Refunds reach your card within 5-10 business days and PayPal within 1-3 days. Write to "
                 "billing@parcelly.example or see https://help.example/refunds for the form. Parcelly Plus "
                 "members pay €6.99 a month.")
CANCEL = Passage(2, "cancel-order", "Cancelling an order", "", None,
                 "Open Account > Orders and click Cancel order until the status changes to Packed.")
PASSAGES = [REFUND, CANCEL]


def test_a_grounded_cited_answer_passes():
    text = ("Refunds reach your card within 5-10 business days [1]. You can cancel from Account > Orders "
            "until the order is Packed [2].")
    result = check(text, PASSAGES)
    assert result.ok, result.problems
    assert result.cited == [1, 2] and not result.citations_added


def test_an_invented_number_fails():
    result = check("Refunds reach your card within 14 business days [1].", PASSAGES)
    assert not result.ok and result.problems == ["number 14 is not in the sections"]


def test_an_invented_price_fails_and_a_quoted_one_passes():
    assert check("Parcelly Plus members pay €6.99 a month [1].", PASSAGES).ok
    assert check("Parcelly Plus members pay €7.99 a month [1].", PASSAGES).problems == [
        "number €7.99 is not in the sections"]


def test_an_invented_url_or_email_fails():
    result = check("See https://evil.example/refund or write to help@evil.example [1].", PASSAGES)
    assert "URL https://evil.example/refund is not in the sections" in result.problems
    assert "e-mail help@evil.example is not in the sections" in result.problems
    ok = check("Write to billing@parcelly.example or see https://help.example/refunds [1].", PASSAGES)
    assert ok.ok, ok.problems


def test_a_quoted_or_emphasised_url_is_the_url():
    for text in ('Use the form at "https://help.example/refunds" [1].', "See `https://help.example/refunds` [1].",
                 "See **https://help.example/refunds** [1].", "See 'https://help.example/refunds'. [1]"):
        assert check(text, PASSAGES).ok, (text, check(text, PASSAGES).problems)
    assert check('See "https://help.example/refundz" [1].', PASSAGES).problems == [
        "URL https://help.example/refundz is not in the sections"]


def test_an_invented_product_name_fails():
    result = check("Refunds for Parcelly Premium members reach your card within 5-10 business days [1].", PASSAGES)
    assert result.problems == ["name Premium is not in the sections"]


def test_a_fact_must_be_in_the_cited_section_not_just_any():
    # "5-10" is in section 1, but the answer cites only section 2
    result = check("Cancelled orders are refunded within 5-10 business days [2].", PASSAGES)
    assert result.problems == ["number 5-10 is not in the sections"]


def test_numbers_from_the_question_may_be_repeated():
    assert check("Both charges of 12 euros are refunded within 5-10 business days [1].", PASSAGES,
                 question="I was charged 12 euros twice").ok


def test_a_citation_of_a_section_it_was_not_given_fails():
    result = check("Refunds reach your card within 5-10 business days [3].", PASSAGES)
    assert result.problems[0] == "cites [3], which it was not given"


def test_list_numbers_are_not_facts_and_uncited_answers_are_attributed():
    text = "1. Open Account > Orders.\n2. Click Cancel order until the status changes to Packed."
    result = check(text, PASSAGES)
    assert result.ok, result.problems
    assert result.cited == [2] and result.citations_added  # the section the words come from


def test_an_answer_mostly_not_from_the_sections_fails():
    text = "Honestly the weather decides everything about deliveries and happiness in general [1]."
    result = check(text, PASSAGES)
    assert not result.ok and "of its words come from the sections" in result.problems[-1]
    assert support(text, PASSAGES) < 0.6


def test_citations_are_read_in_order_of_use():
    assert citations("a [2] b [1] c [2] d [7]", PASSAGES) == ([2, 1], [7])


def test_abstention():
    assert abstains("NO_ANSWER") and abstains("no answer.") and abstains("  ")
    assert not abstains("Refunds take 5-10 business days [1].")


def test_the_prompt_numbers_the_sections_with_titles_and_holds_the_thread():
    messages = build_messages("and for PayPal?", PASSAGES, ["How long do refunds take?"])
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "[1] Refund policy › Timing\nRefunds reach your card" in user
    assert "[2] Cancelling an order\nOpen Account" in user
    assert "- How long do refunds take?" in user and user.endswith("Customer's question: and for PayPal?")


def test_a_bare_invented_domain_fails():
    result = check("Visit parcelly.example.com to ask for your refund [1].", PASSAGES)
    assert result.problems[0] == "URL parcelly.example.com is not in the sections"
    assert check("See help.example/refunds for the form [1].", PASSAGES).ok
