"""parse_answer on real model outputs, both directions: what must be read as a letter, and what
must stay unparsable (a sentence's first word is never an option letter)."""

from __future__ import annotations

import pytest

from retake.harness.samples import parse_answer

# (model output, letter it states) - the forms video LLMs answer multiple choice in
READ = [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("[C]", "C"), (" D \n", "D"),
    ("**B**", "B"), ("**B.**", "B"), ("*C*", "C"), ("`A`", "A"), ("__D__", "D"),
    ("B. A red square", "B"), ("B) red", "B"), ("(B) red", "B"), ("**(C)** blue", "C"), ("B: red", "B"),
    ("C - the third quarter", "C"), ("B because the square was blue", "B"), ("D\nThe square flashed four times.", "D"),
    ("A. A man is walking", "A"), ("(A) A man is walking", "A"),
    ("The answer is B", "B"), ("The answer is (B).", "B"), ("The answer is **B**.", "B"), ("Answer: D", "D"),
    ("answer: (A) a man", "A"), ("The correct option is C.", "C"), ("The best answer is D", "D"),
    ("I choose A.", "A"), ("I think the answer is B.", "B"), ("Based on the video, the answer is C.", "C"),
    ("The answer is not A; the final answer is C.", "C"),
    ("<think>The square was red, so maybe A.</think>\nB", "B"),
]
# outputs that state no letter: each must give None (the old parser read several of them as A or I)
UNREAD = [
    "A man is walking down the street.", "A square flashed twice.", "I think so", "I don't know",
    "Based on the video", "Because the video is short", "The video shows a dog.", "It is a cat", "Definitely",
    "Answer: unclear", "", "   ", "E", "(F)", "The answer is E", "the answer is a man", "Maybe C or D",
]


@pytest.mark.parametrize("text,letter", READ)
def test_stated_letters_are_read(text, letter):
    assert parse_answer(text, "ABCD") == letter


@pytest.mark.parametrize("text", UNREAD)
def test_sentences_are_not_letters(text):
    assert parse_answer(text, "ABCD") is None


def test_an_answer_equal_to_an_option_text_is_that_option():
    options = ["a dog", "a cat", "A man is walking", "nothing"]
    assert parse_answer("A man is walking.", "ABCD", options) == "C"  # not A: the option's text
    assert parse_answer("a cat", "ABCD", options) == "B"
    assert parse_answer("A man is walking slowly.", "ABCD", options) is None  # not an option's text
    assert parse_answer("A man is walking.", "ABCD") is None  # no options given: a sentence


def test_a_letter_outside_the_options_is_not_read():
    assert parse_answer("E", "ABCDE") == "E"
    assert parse_answer("E", "ABCD") is None
    assert parse_answer("I", "ABCDEFGHIJ") == "I"  # alone, "I" is a letter when there are nine options
    assert parse_answer("I think it is B", "ABCDEFGHIJ") is None  # a sentence, with or without nine options
    assert parse_answer(None) is None
