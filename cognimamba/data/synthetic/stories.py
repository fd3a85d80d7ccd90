"""Procedural short stories: the built-in offline corpus that `cogni quickstart` trains on.

Simple English with a fixed cast of templates, so a tiny model visibly learns grammar and story shape
in minutes. Seeded: the same seed always gives the same corpus.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from cognimamba.system.fileio import atomic_write_text

NAME = "synthetic-stories"
GENERATOR_VERSION = 1  # bump when the output for a (count, seed) changes
STORY_SEPARATOR = "\n<|story|>\n"

NAMES = ["Lily", "Tom", "Mia", "Ben", "Sara", "Max", "Anna", "Leo", "Zoe", "Sam", "Emma", "Jack", "Ella", "Noah",
         "Lucy", "Finn", "Ruby", "Owen", "Ivy", "Theo"]
ANIMALS = ["cat", "dog", "bunny", "bird", "frog", "duck", "mouse", "bear", "fox", "puppy", "kitten", "turtle"]
ADJECTIVES = ["little", "big", "happy", "shy", "brave", "kind", "silly", "curious", "sleepy", "clever"]
COLORS = ["red", "blue", "green", "yellow", "purple", "pink", "orange", "shiny"]
OBJECTS = ["ball", "kite", "hat", "box", "book", "boat", "cake", "flower", "toy car", "drum", "shell", "balloon"]
PLACES = ["the park", "the garden", "the forest", "the beach", "the farm", "the pond", "the hill", "the yard",
          "the library", "the market"]
WEATHER = ["It was a sunny day.", "The sky was blue and the sun was warm.", "It was a rainy morning.",
           "The wind was soft and cool.", "Snow covered the ground."]
FEELINGS = {"happy": "smiled", "sad": "cried a little", "scared": "hid behind a tree", "excited": "jumped up and down",
            "surprised": "opened their eyes wide"}
PROBLEMS = [
    ("the {obj} got stuck in a tree", "climbed up carefully and got the {obj} down"),
    ("the {obj} fell into the water", "used a long stick to pull the {obj} back"),
    ("the {obj} was lost", "looked under every bush until they found the {obj}"),
    ("the {obj} was broken", "fixed the {obj} with some tape and glue"),
    ("a strong wind blew the {obj} away", "ran fast and caught the {obj}"),
]
LESSONS = ["sharing makes everyone happy", "it is good to help friends", "being brave is not so hard",
           "you should always say sorry", "working together makes things easy", "kindness is the best gift"]
ENDINGS = ["They played together until the sun went down.", "From that day on, they were best friends.",
           "Then they went home and had a big dinner.", "Everyone laughed and clapped.",
           "They hugged and smiled all the way home."]


def _story(rng: random.Random) -> str:
    name, friend = rng.sample(NAMES, 2)
    animal, adjective = rng.choice(ANIMALS), rng.choice(ADJECTIVES)
    color, obj, place = rng.choice(COLORS), rng.choice(OBJECTS), rng.choice(PLACES)
    problem, fix = rng.choice(PROBLEMS)
    feeling = rng.choice(list(FEELINGS))
    opening = rng.choice([
        f"Once upon a time, there was a {adjective} {animal} named {name}.",
        f"One day, a {adjective} girl named {name} went to {place}.",
        f"{name} was a {adjective} {animal} who lived near {place}.",
        f"Once there was a {adjective} boy named {name}. He loved his {color} {obj}.",
    ])
    paragraphs = [
        f"{opening} {rng.choice(WEATHER)} {name} had a {color} {obj}. {name} loved the {obj} very much.",
        f"{name} went to {place} with {friend}. They wanted to play with the {obj}. "
        f"But then {problem.format(obj=obj)}. {name} felt {feeling} and {FEELINGS[feeling]}.",
        f'"Do not worry," said {friend}. "I will help you." {friend} {fix.format(obj=obj)}. '
        f'{name} was very happy. "Thank you, {friend}!" said {name}.',
    ]
    if rng.random() < 0.6:
        paragraphs.append(f"{name} learned that {rng.choice(LESSONS)}. {rng.choice(ENDINGS)}")
    else:
        paragraphs.append(rng.choice(ENDINGS))
    return "\n\n".join(paragraphs)


def generate_stories(count: int, seed: int = 0) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(count):
        yield _story(rng)


def write_story_corpus(path: Path, count: int, seed: int = 0) -> Path:
    """Stories separated by a line holding only `<|story|>`, so paragraphs stay inside one document."""
    atomic_write_text(path, STORY_SEPARATOR.join(generate_stories(count, seed)) + "\n")
    return path
