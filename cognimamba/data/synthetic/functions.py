"""Seeded conversations with invented functions: a small model's lesson in reading the tools it is offered.

`synthetic-tools` offers the same nine tools every time, so a model can learn their names by heart and
never look at the system turn; faced with a Glaive-style function it has not seen, it calls one it knows.
Here every conversation offers one to three functions assembled from parts (a verb, an optional modifier,
a subject, and some of the subject's parameters: `calculate_monthly_loan_payment(loan_amount,
interest_rate)`): 151 names from 40 subjects, each offered with its own choice of parameters. The request
says what to do in the function's own words and gives the values ("I need to check my order status. The
order number is 48213977."), so the right call is the offered name, the schema's parameter names and
the user's values, copied. Kinds of exchange:

    call           the request has every value: call, read the result, answer from it
    ask first      a value is missing: the assistant asks for it, the user gives it, then the call
    again          a second request to the same function with new values ("Can you also ...?")
    no fit         a request no offered function does: a plain answer saying what it can do instead
    plain          small talk and facts (from synthetic-tools), with functions offered or not

The same (count, seed) always gives the same conversations. `cogni prepare synthetic-functions --count N`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cognimamba.data.conversation import Conversation
from cognimamba.data.synthetic.common import Message, call, exchange, say
from cognimamba.data.synthetic.tools import COMPANIES, FACTS, SMALL_TALK, THANKS

NAME = "synthetic-functions"  # invented functions, a new set in every conversation
GENERATOR_VERSION = 1  # bump when the output for a (count, seed) changes, so cached data dirs are rebuilt

FIRST_NAMES = ["John", "Maria", "Wei", "Amara", "Lucas", "Priya", "Olga", "Kenji", "Sara", "Omar", "Elena", "Tom"]
LAST_NAMES = ["Smith", "Garcia", "Chen", "Okafor", "Silva", "Patel", "Ivanova", "Tanaka", "Berg", "Haddad"]
PLACES = ["Paris", "New York", "Tokyo", "Berlin", "Cairo", "Toronto", "Sydney", "Mumbai", "Lima", "Oslo",
          "San Francisco", "Madrid", "Seoul", "Nairobi", "Chicago", "Lisbon"]
COUNTRIES = ["Canada", "Japan", "Brazil", "Germany", "India", "Kenya", "France", "Mexico", "Australia", "Egypt",
             "the United States", "Spain", "Norway", "Italy"]
LANGUAGES = ["French", "Spanish", "German", "Japanese", "Italian", "Portuguese", "Hindi", "Arabic", "Korean"]
KEYWORDS = ["pasta", "jazz", "hiking", "history", "chess", "yoga", "photography", "gardening", "climate",
            "football", "poetry", "space", "cats", "coffee"]
CHOICES = {"genre": ["comedy", "drama", "action", "horror", "romance", "science fiction", "thriller"],
           "cuisine": ["Italian", "Mexican", "Thai", "Indian", "Japanese", "Greek"],
           "diet": ["vegan", "vegetarian", "gluten-free", "keto"],
           "goal": ["strength", "weight loss", "endurance", "flexibility"],
           "unit": ["celsius", "fahrenheit", "kelvin"],
           "species": ["dog", "cat", "rabbit", "parrot", "hamster"],
           "weather": ["sunny", "cloudy", "rainy", "windy", "snowy"],
           "state": ["on time", "delayed", "shipped", "delivered", "in transit", "cancelled"],
           "company": sorted(COMPANIES)}
GROCERIES = ["milk", "eggs", "bread", "apples", "rice", "coffee", "cheese", "tomatoes", "onions", "butter"]
TITLES = ["Project Discussion", "Team Lunch", "Weekly Review", "Budget Plan", "Birthday Party", "Design Sync",
          "Quarterly Report", "Book Club", "Client Call", "Garden Notes", "Travel Plans", "Launch Day"]
MESSAGES = ["See you at noon", "The report is ready", "Happy birthday", "The meeting is moved to Friday",
            "Thanks for your help", "Please call me back", "I will be late today"]


def _date(rng: random.Random) -> str:
    return f"{rng.randint(1950, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def _email(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES).lower()}.{rng.choice(LAST_NAMES).lower()}@example.com"


def _code(rng: random.Random) -> str:
    digits = rng.randint(5, 10)
    return str(rng.randint(10 ** (digits - 1), 10 ** digits - 1))


@dataclass(frozen=True)
class Kind:
    """A kind of parameter: its JSON type, how to draw a value, and how a user says it."""

    json_type: str
    draw: Callable[[random.Random], Any]
    say: Callable[[Any], str] = str


KINDS: dict[str, Kind] = {
    "money": Kind("number", lambda r: r.choice([r.randint(1, 99) * 1000, r.randint(5, 900), r.randint(1, 40) * 50]),
                  lambda v: f"${v}"),
    "count": Kind("integer", lambda r: r.randint(2, 30)),
    "percent": Kind("number", lambda r: r.choice([5, 8, 10, 12, 15, 18, 20, 25, 30]), lambda v: f"{v}%"),
    "decimal": Kind("number", lambda r: round(r.uniform(0.5, 99), r.choice([1, 2]))),
    "year": Kind("integer", lambda r: r.randint(1960, 2025)),
    "date": Kind("string", _date),
    "time": Kind("string", lambda r: f"{r.randint(6, 21):02d}:{r.choice(['00', '15', '30', '45'])}"),
    "person": Kind("string", _person),
    "email": Kind("string", _email),
    "place": Kind("string", lambda r: r.choice(PLACES)),
    "country": Kind("string", lambda r: r.choice(COUNTRIES)),
    "language": Kind("string", lambda r: r.choice(LANGUAGES)),
    "keyword": Kind("string", lambda r: r.choice(KEYWORDS)),
    "title": Kind("string", lambda r: r.choice(TITLES), lambda v: f'"{v}"'),
    "message": Kind("string", lambda r: r.choice(MESSAGES), lambda v: f'"{v}"'),
    "code": Kind("string", _code),
    "items": Kind("array", lambda r: r.sample(GROCERIES, r.randint(2, 4)), ", ".join),
    **{name: Kind("string", lambda r, options=options: r.choice(options)) for name, options in CHOICES.items()},
}


@dataclass(frozen=True)
class Subject:
    """What a function is about: its words, the verbs that fit it, and the parameters it may take."""

    words: str  # "loan payment": the name's tail (loan_payment) and what the user asks about
    verbs: tuple[str, ...]
    parameters: tuple[tuple[str, str], ...]  # (what the user calls it, kind); the name is its snake_case
    modifiers: tuple[str, ...] = ()
    result: str = "decimal"  # the kind of value the function returns


SUBJECTS = [
    Subject("loan payment", ("calculate", "estimate"), (("loan amount", "money"), ("interest rate", "decimal"),
            ("loan term", "count")), ("monthly", "total")),
    Subject("discount", ("calculate", "apply"), (("original price", "money"), ("discount percentage", "percent"))),
    Subject("weather forecast", ("get", "fetch", "check"), (("city", "place"), ("days", "count")), ("daily",),
            "weather"),
    Subject("restaurants", ("find", "search", "recommend"), (("location", "place"), ("cuisine", "cuisine")),
            ("nearby", "top"), "title"),
    Subject("books", ("search", "find"), (("author", "person"), ("topic", "keyword")), ("best",), "title"),
    Subject("meeting", ("schedule", "book"), (("attendee", "person"), ("date", "date"), ("time", "time")),
            result="title"),
    Subject("email", ("send", "draft"), (("recipient", "email"), ("subject", "title"), ("message", "message")),
            result="title"),
    Subject("text", ("translate",), (("text", "message"), ("target language", "language")), result="message"),
    Subject("temperature", ("convert",), (("temperature", "decimal"), ("target unit", "unit"))),
    Subject("stock price", ("get", "check"), (("company", "company"),), ("current", "latest")),
    Subject("recipe", ("find", "search", "suggest"), (("ingredient", "keyword"), ("diet", "diet")),
            ("easy", "quick"), "title"),
    Subject("flight status", ("check", "get"), (("flight number", "code"), ("date", "date")), result="state"),
    Subject("hotel", ("book", "find", "reserve"), (("city", "place"), ("check in date", "date"), ("nights", "count")),
            ("cheap",), "title"),
    Subject("reminder", ("set", "create"), (("message", "message"), ("time", "time")), result="title"),
    Subject("savings", ("calculate", "estimate"), (("monthly deposit", "money"), ("years", "count")),
            ("future", "retirement")),
    Subject("fuel cost", ("calculate", "estimate"), (("distance", "decimal"), ("fuel price", "decimal")), ("trip",)),
    Subject("word definition", ("get", "lookup"), (("word", "keyword"), ("language", "language")), result="message"),
    Subject("population", ("get", "lookup"), (("country", "country"), ("year", "year")), result="count"),
    Subject("exercise plan", ("create", "generate"), (("goal", "goal"), ("days per week", "count")),
            ("weekly",), "title"),
    Subject("song lyrics", ("get", "search"), (("song title", "title"), ("artist", "person")), result="message"),
    Subject("contact", ("add", "create", "update"), (("name", "person"), ("email", "email")), ("new",), "title"),
    Subject("order status", ("check", "track", "get"), (("order number", "code"),), result="state"),
    Subject("area", ("calculate",), (("length", "decimal"), ("width", "decimal")), ("rectangle", "room")),
    Subject("invoice", ("create", "generate"), (("customer name", "person"), ("amount", "money"),
            ("due date", "date")), result="code"),
    Subject("holidays", ("get", "list"), (("country", "country"), ("year", "year")), ("public",), "date"),
    Subject("jokes", ("get", "tell"), (("topic", "keyword"),), ("random", "funny"), "message"),

    Subject("parking spot", ("find", "reserve"), (("city", "place"), ("hours", "count")), ("nearby", "cheap"), "title"),
    Subject("car rental", ("book", "find"), (("pickup city", "place"), ("pickup date", "date"), ("days", "count")),
            ("cheap",), "code"),
    Subject("train tickets", ("book", "search"), (("origin station", "place"), ("destination station", "place"),
            ("travel date", "date")), result="code"),
    Subject("calorie intake", ("calculate", "estimate"), (("weight", "decimal"), ("activity level", "goal")),
            ("daily",)),
    Subject("carbon footprint", ("calculate", "estimate"), (("kilometers", "decimal"), ("passengers", "count")),
            ("travel",)),
    Subject("playlist", ("create", "generate"), (("genre", "genre"), ("songs", "count")), ("workout",), "title"),
    Subject("museum hours", ("get", "check"), (("museum name", "title"), ("date", "date")), result="time"),
    Subject("pet adoption listings", ("search", "find"), (("species", "species"), ("city", "place")), result="title"),
    Subject("electricity bill", ("estimate", "calculate"), (("kilowatt hours", "decimal"),
            ("price per unit", "decimal")), ("monthly",)),
    Subject("bus schedule", ("get", "check"), (("route number", "count"), ("stop name", "place")), result="time"),
    Subject("grocery list", ("create", "update"), (("items", "items"), ("store", "title")), ("weekly",), "title"),
    Subject("water intake", ("calculate",), (("weight", "decimal"), ("exercise minutes", "count")),
            ("daily", "recommended")),
    Subject("vocabulary quiz", ("generate", "create"), (("language", "language"), ("questions", "count")),
            result="title"),
    Subject("support ticket", ("create", "open", "update"), (("customer email", "email"), ("issue", "message")),
            ("new",), "code"),
]
VERB_WORDS = {"lookup": "look up"}  # verbs whose name differs from how a user says them
SYSTEM_PROMPTS = ["You are a helpful assistant with access to the following functions. Use them if required.",
                  "You are a helpful assistant.", "Use the functions below when they help the user."]
OPENERS = ["", "", "Hi. ", "Hello! ", "Hi there. "]
ARTICLES = ["the", "the", "my"]


@dataclass(frozen=True)
class Function:
    """One invented function: its name, what it does in words, and the parameters it takes."""

    verb: str
    phrase: str  # "monthly loan payment"
    parameters: tuple[tuple[str, str], ...]
    result: str

    @property
    def name(self) -> str:
        return f"{self.verb}_{self.phrase.replace(' ', '_')}"

    def doing(self, article: str = "the") -> str:
        """What it does in words: "check the order status"."""
        return f"{VERB_WORDS.get(self.verb, self.verb)} {article} {self.phrase}"

    def definition(self) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        for words, kind in self.parameters:
            json_type = KINDS[kind].json_type
            schema: dict[str, Any] = {"type": json_type, "description": f"The {words}"}
            if json_type == "array":
                schema["items"] = {"type": "string"}
            properties[words.replace(" ", "_")] = schema
        return {"name": self.name, "description": self.doing().capitalize(),
                "parameters": {"type": "object", "properties": properties,
                               "required": [words.replace(" ", "_") for words, _ in self.parameters]}}


def invent_function(rng: random.Random) -> Function:
    subject = rng.choice(SUBJECTS)
    modifier = rng.choice(subject.modifiers) if subject.modifiers and rng.random() < 0.4 else ""
    count = rng.randint(1, len(subject.parameters))
    parameters = tuple(rng.sample(subject.parameters, count))
    phrase = f"{modifier} {subject.words}".strip()
    return Function(rng.choice(subject.verbs), phrase, parameters, subject.result)


def _values_said(rng: random.Random, function: Function, values: dict[str, Any]) -> str:
    """ "The species is cat and my city is Oslo." or "Species: cat. City: Oslo." and the like."""
    parts = [(words, KINDS[kind].say(values[words.replace(" ", "_")])) for words, kind in function.parameters]
    if rng.random() < 0.3:
        return " ".join(f"{words.capitalize()}: {said}." for words, said in parts)
    clauses = [f"{rng.choice(['the', 'my'])} {words} is {said}" for words, said in parts]
    joined = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    return joined[0].upper() + joined[1:] + "."


def _request(rng: random.Random, function: Function, values: dict[str, Any]) -> str:
    ask = rng.choice(["I need to {d}.", "Can you {d} for me?", "Could you {d}?", "Please {d}.",
                      "I want to {d}.", "I'd like you to {d}."]).format(d=function.doing(rng.choice(ARTICLES)))
    said = _values_said(rng, function, values)
    return rng.choice(OPENERS) + (f"{ask} {said}" if rng.random() < 0.7 else f"{said} {ask}")


def _result(rng: random.Random, function: Function) -> tuple[dict[str, Any], str]:
    value = KINDS[function.result].draw(rng)
    said = KINDS[function.result].say(value)
    answer = rng.choice(["The {p} is {v}.", "Here it is: the {p} is {v}.", "I found it. The {p} is {v}.",
                         "Done. The {p} is {v}."]).format(p=function.phrase, v=said)
    return {function.phrase.replace(" ", "_"): value}, answer


def _call_and_answer(rng: random.Random, function: Function, values: dict[str, Any]) -> list[Message]:
    result, answer = _result(rng, function)
    return [call(function.name, values), say("tool", json.dumps(result, ensure_ascii=False)), say("assistant", answer)]


def _values(rng: random.Random, function: Function) -> dict[str, Any]:
    return {words.replace(" ", "_"): KINDS[kind].draw(rng) for words, kind in function.parameters}


def call_exchange(rng: random.Random, function: Function) -> list[Message]:
    values = _values(rng, function)
    if rng.random() < 0.25:
        ask = rng.choice(["I need to {d}.", "Can you {d}?", "Help me {d}, please."]).format(
            d=function.doing(rng.choice(ARTICLES)))
        wanted = " and the ".join(words for words, _ in function.parameters)
        question = rng.choice(["Sure, I can help with that. What is the {w}?", "Of course. Could you tell me the {w}?",
                               "I can do that. Please give me the {w}."]).format(w=wanted)
        return [say("user", ask), say("assistant", question),
                say("user", _values_said(rng, function, values)), *_call_and_answer(rng, function, values)]
    return [say("user", _request(rng, function, values)), *_call_and_answer(rng, function, values)]


def again_exchange(rng: random.Random, function: Function) -> list[Message]:
    values = _values(rng, function)
    ask = rng.choice(["Great! Can you also {d}? {s}", "Thanks. Now {d} again. {s}", "Can you do it once more? {s}",
                      "What about this one? {s}"]).format(d=function.doing(), s=_values_said(rng, function, values))
    return [say("user", ask), *_call_and_answer(rng, function, values)]


def no_fit_exchange(rng: random.Random, offered: list[Function]) -> list[Message]:
    other = invent_function(rng)
    while other.phrase in {f.phrase for f in offered}:  # what no offered function does, whatever its verb
        other = invent_function(rng)
    ask = rng.choice(["Can you {d}?", "Please {d} for me.", "I need you to {d}."]).format(
        d=other.doing(rng.choice(ARTICLES)))
    can = " or ".join(function.doing() for function in offered)
    answer = rng.choice(["I'm sorry, but I can't {o}. The functions I have can {c}.",
                         "Sorry, I am not able to {o}. I can only {c}."]).format(o=other.doing(), c=can)
    return [say("user", ask), say("assistant", answer)]


def make_conversation(rng: random.Random) -> Conversation:
    offered: list[Function] = []
    wanted = rng.choice([1, 2, 2, 3])
    while len(offered) < wanted:
        function = invent_function(rng)
        if function.phrase not in {f.phrase for f in offered}:
            offered.append(function)
    messages: list[Message] = [say("system", rng.choice(SYSTEM_PROMPTS))] if rng.random() < 0.5 else []
    kind = rng.random()
    if kind < 0.12:
        messages += exchange(*rng.choice(SMALL_TALK + FACTS))
        if rng.random() < 0.5:
            messages += call_exchange(rng, rng.choice(offered))
    elif kind < 0.27:
        messages += no_fit_exchange(rng, offered)
    else:
        function = rng.choice(offered)
        messages += call_exchange(rng, function)
        follow = rng.random()
        if follow < 0.3:
            messages += again_exchange(rng, function)
        elif follow < 0.5:
            messages += exchange(*rng.choice(THANKS))
        elif follow < 0.65 and len(offered) > 1:
            messages += call_exchange(rng, rng.choice([f for f in offered if f is not function]))
    return Conversation(messages, [function.definition() for function in offered])


def generate_conversations(count: int, seed: int = 0) -> Iterator[Conversation]:
    rng = random.Random(f"synthetic-functions/{seed}")
    for _ in range(count):
        yield make_conversation(rng)
