"""Seeded procedural conversations for `cogni quickstart --chat`: a small assistant that talks and uses the app's tools.

The tools are exactly the built-ins `cogni chat --enable-tools` offers (chat/tools.py), listed in the same
order, and the conversations go through the same ChatML renderer, so what the model learns here is what
the app shows it. Kinds of exchange, each worded many ways:

    small talk     greetings, how are you, thanks, who are you, goodbye
    note           a question answered from a short text given in the system prompt
    instruction    a system instruction followed: answer in one sentence, reply as a named character
    arithmetic     the calculator called with the expression, then an answer built from its result
    time           the clock called (with a time zone when the user names a city), then the time or date
    no tool fits   with tools offered, a request neither tool does, answered in plain text

Tool results are what the real tools return: the calculator runs (chat.tools.calculate), the clock's
output has the shape of chat.tools' current_time for a seeded date. The same (count, seed) always gives
the same conversations. `cogni prepare synthetic-chat --count N`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cognimamba.chat.tools import BUILTIN_TOOLS, calculate
from cognimamba.data.conversation import Conversation
from cognimamba.data.synthetic.common import Message, call, number_text, pick, say
from cognimamba.system.fileio import atomic_write_text

NAME = "synthetic-chat"  # the built-in tools of `cogni chat --enable-tools` (quickstart --chat)
GENERATOR_VERSION = 3  # bump when the output for a (count, seed) changes, so cached data dirs are rebuilt
TOOL_DEFINITIONS = [tool.definition for tool in BUILTIN_TOOLS]  # as `cogni chat --enable-tools` lists them
TOOLS_OFFERED_SHARE = 0.7  # the rest are plain chats, as in `cogni chat` without --enable-tools
# Exchanges per conversation: up to MAX_EXCHANGES, each further one with MORE_EXCHANGES chance (about 3 on
# average). The tool definitions are ~190 of a conversation's tokens and take no loss; with more exchanges
# after them, twice the share of each training window is assistant turns that do (11% -> about 22%).
MAX_EXCHANGES, MORE_EXCHANGES = 6, 0.75


@dataclass
class Exchange:
    """One user turn and everything the assistant does about it."""

    messages: list[Message]
    needs_tools: bool = False


# ---------------------------------------------------------------------------------------------- small talk

GREETINGS = ["hi", "Hi!", "hello", "Hello there.", "hey", "Hey!", "good morning", "Good evening!", "hi there",
             "Hello, assistant.", "yo", "Greetings!"]
GREETING_REPLIES = ["Hello! How can I help you today?", "Hi! What can I do for you?",
                    "Hey! How can I help?", "Hello! What would you like to talk about?",
                    "Hi there! Ask me anything.", "Hello! I'm here to help. What do you need?"]
SMALL_TALK = [
    (["How are you?", "how are you doing?", "How's it going?", "Are you doing well?"],
     ["I'm doing well, thank you! How can I help you?", "All good here, thanks for asking. What can I do for you?",
      "I'm great, thanks! What's on your mind?"]),
    (["Who are you?", "What are you?", "what's your name?", "Tell me about yourself."],
     ["I'm a small assistant trained with cognimamba. I can chat, answer questions and, when tools are on, "
      "do arithmetic and tell the time.", "I'm a friendly assistant. Ask me a question and I'll do my best."]),
    (["Thanks!", "thank you", "Thanks a lot.", "great, thanks", "Thank you very much!"],
     ["You're welcome!", "Happy to help!", "Any time. Anything else?", "You're welcome. Let me know if you need "
      "anything else."]),
    (["bye", "Goodbye!", "See you later.", "That's all, bye."],
     ["Goodbye! Have a nice day.", "Bye! Come back any time.", "See you later!"]),
    (["Tell me a joke.", "Do you know a joke?", "Make me laugh."],
     ["Why did the scarecrow win an award? Because he was outstanding in his field!",
      "Why don't eggs tell jokes? They would crack each other up.",
      "What do you call a bear with no teeth? A gummy bear!"]),
    (["What can you do?", "How can you help me?", "What are you good at?"],
     ["I can chat, answer questions about a text you give me, and follow instructions. With tools turned on, "
      "I can also calculate and tell the time.", "I can answer questions and keep you company; with tools on, "
      "I can do exact arithmetic and check the time."]),
]
FACTS = [("What is the capital of France?", "The capital of France is Paris."),
         ("How many days are in a week?", "There are seven days in a week."),
         ("What color is the sky on a clear day?", "On a clear day the sky is blue."),
         ("What do bees make?", "Bees make honey."),
         ("How many legs does a spider have?", "A spider has eight legs."),
         ("What is the opposite of hot?", "The opposite of hot is cold."),
         ("Which planet is closest to the sun?", "Mercury is the planet closest to the sun."),
         ("What is water made of?", "Water is made of hydrogen and oxygen."),
         ("Give me a word that rhymes with cat.", "Hat rhymes with cat."),
         ("What animal says moo?", "A cow says moo."),
         ("How many months are in a year?", "There are twelve months in a year."),
         ("What do plants need to grow?", "Plants need water, light and air to grow.")]


def small_talk(rng: random.Random) -> Exchange:
    if rng.random() < 0.35:
        return Exchange([say("user", rng.choice(GREETINGS)), say("assistant", rng.choice(GREETING_REPLIES))])
    if rng.random() < 0.3:
        question, answer = rng.choice(FACTS)
        return Exchange([say("user", question), say("assistant", answer)])
    questions, answers = rng.choice(SMALL_TALK)
    return Exchange([say("user", rng.choice(questions)), say("assistant", rng.choice(answers))])


# ---------------------------------------------------------------------------------------------- notes

NAMES = ["Mia", "Leo", "Ada", "Omar", "Zoe", "Ivan", "Nora", "Ken", "Lina", "Tom", "Sara", "Raj", "Eva", "Max"]
PLACES = ["Oakwood", "Riverside", "Hilltop", "Maple Street", "Harbor", "Pinecrest", "Sunnyvale", "Brookfield"]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
NOTE_PROMPTS = ["Answer using this note.\n{note}", "Use the following text to answer the user.\n{note}",
                "Here is some information:\n{note}\nAnswer questions about it briefly.", "Context: {note}"]


def _note_library(rng: random.Random) -> tuple[str, list[tuple[list[str], str]]]:
    place, opens, closes, floors, books = (rng.choice(PLACES), rng.randint(7, 10), rng.randint(4, 8),
                                           rng.randint(2, 5), rng.randint(2, 9))
    note = (f"The {place} Library opens at {opens} AM and closes at {closes} PM. It has {floors} floors. "
            f"Members can borrow up to {books} books at a time.")
    return note, [(["When does the library open?", "What time does it open?"], f"It opens at {opens} AM."),
                  (["When does the library close?", "What time does the library close?"], f"It closes at {closes} PM."),
                  (["How many floors does it have?", "How many floors are there?"], f"It has {floors} floors."),
                  (["How many books can I borrow?", "What is the borrowing limit?"],
                   f"Members can borrow up to {books} books at a time.")]


def _note_pet(rng: random.Random) -> tuple[str, list[tuple[list[str], str]]]:
    owner, pet, color, age = rng.choice(NAMES), rng.choice(["Biscuit", "Pepper", "Luna", "Rex", "Mochi"]), \
        rng.choice(COLORS), rng.randint(1, 14)
    animal = rng.choice(["cat", "dog", "rabbit", "parrot"])
    food = rng.choice(["carrots", "fish", "apples", "seeds", "chicken"])
    note = f"{owner} has a {color} {animal} named {pet}. {pet} is {age} years old and loves {food}."
    return note, [([f"What is the name of {owner}'s pet?", f"What is {owner}'s {animal} called?"],
                   f"The {animal} is named {pet}."),
                  ([f"How old is {pet}?", f"What is {pet}'s age?"], f"{pet} is {age} years old."),
                  ([f"What does {pet} like to eat?", f"What food does {pet} love?"], f"{pet} loves {food}."),
                  ([f"What color is {pet}?"], f"{pet} is {color}."),
                  ([f"What kind of animal is {pet}?"], f"{pet} is a {animal}.")]


def _note_meeting(rng: random.Random) -> tuple[str, list[tuple[list[str], str]]]:
    host, day, hour, room = rng.choice(NAMES), rng.choice(DAYS), rng.randint(1, 11), rng.randint(100, 450)
    topic = rng.choice(["the budget", "the new website", "the school trip", "the garden plan", "the team party"])
    note = f"The meeting about {topic} is on {day} at {hour} PM in room {room}. {host} will lead it."
    return note, [(["What day is the meeting?", "When is the meeting?"], f"The meeting is on {day} at {hour} PM."),
                  (["Which room is it in?", "Where is the meeting?"], f"It is in room {room}."),
                  (["Who leads the meeting?", "Who is running it?"], f"{host} will lead it."),
                  (["What is the meeting about?"], f"It is about {topic}.")]


def _note_shop(rng: random.Random) -> tuple[str, list[tuple[list[str], str]]]:
    place, item, price, stock = rng.choice(PLACES), rng.choice(["apples", "bread", "pencils", "candles", "socks"]), \
        rng.randint(2, 30), rng.randint(5, 80)
    closed = rng.choice(DAYS)
    note = f"The {place} shop sells {item} for {price} dollars each. It has {stock} in stock and is closed on {closed}."
    return note, [([f"How much do the {item} cost?", "What is the price?"], f"They cost {price} dollars each."),
                  (["How many are in stock?", f"How many {item} are left?"], f"There are {stock} in stock."),
                  (["Which day is the shop closed?", "When is it closed?"], f"The shop is closed on {closed}."),
                  (["What does the shop sell?"], f"It sells {item}.")]


NOTES: list[Callable[[random.Random], tuple[str, list[tuple[list[str], str]]]]] = [
    _note_library, _note_pet, _note_meeting, _note_shop]


def note_system(rng: random.Random) -> tuple[str, list[Exchange]]:
    """A system prompt holding a short note, and one or two questions answered from it."""
    note, questions = rng.choice(NOTES)(rng)
    asked = rng.sample(questions, rng.choice([1, 1, 2]))
    exchanges = [Exchange([say("user", rng.choice(wordings)), say("assistant", answer)])
                 for wordings, answer in asked]
    return pick(rng, NOTE_PROMPTS, note=note), exchanges


# ---------------------------------------------------------------------------------------------- instructions

ONE_SENTENCE = ["Answer in one sentence.", "Always reply with a single sentence.", "Keep every answer to one sentence."]
CHARACTERS = [("Captain Rosa", "a pirate", "Ahoy, matey!", "Arr"), ("Robo-7", "a friendly robot", "Beep boop, hello!",
              "Beep"), ("Merlin", "a wise wizard", "Greetings, traveler.", "Hmm"),
              ("Chef Luigi", "a cheerful chef", "Ciao, my friend!", "Mamma mia"),
              ("Detective Gray", "a detective", "Good day. What's the case?", "Elementary")]
LONG_QUESTIONS = [("Why is the sky blue?", "The sky looks blue because air scatters blue sunlight more than "
                   "other colors."),
                  ("Why do we need sleep?", "Sleep lets the body and brain rest and repair themselves."),
                  ("How do plants make food?", "Plants make food from sunlight, water and air by photosynthesis."),
                  ("Why does it rain?", "Rain falls when water vapor in clouds cools and forms heavy drops."),
                  ("What is a computer?", "A computer is a machine that follows instructions to process "
                   "information.")]


def instruction_system(rng: random.Random) -> tuple[str, list[Exchange]]:
    """A system instruction and an exchange that follows it."""
    if rng.random() < 0.5:
        question, answer = rng.choice(LONG_QUESTIONS + FACTS)
        return rng.choice(ONE_SENTENCE), [Exchange([say("user", question), say("assistant", answer)])]
    name, role, hello, word = rng.choice(CHARACTERS)
    system = pick(rng, ["You are {name}, {role}. Stay in character.", "Reply as {name}, {role}.",
                         "Pretend to be {name}, {role}, in every reply."], name=name, role=role)
    question = rng.choice(["hi", "Hello!", "Who are you?", "What's your name?", "Introduce yourself."])
    if question.lower().startswith(("hi", "hello")):
        answer = f"{hello} {name} here. What can I do for you?"
    else:
        answer = f"{word}! I am {name}, {role}. How can I help you today?"
    return system, [Exchange([say("user", question), say("assistant", answer)])]


# ---------------------------------------------------------------------------------------------- tools

OPERATIONS = [("+", ["plus", "+", "added to"], ["The sum is {r}.", "{a} plus {b} is {r}."]),
              ("-", ["minus", "-", "take away"], ["The difference is {r}.", "{a} minus {b} is {r}."]),
              ("*", ["times", "*", "x", "multiplied by"], ["The product is {r}.", "{a} times {b} is {r}."]),
              ("/", ["divided by", "/", "over"], ["The quotient is {r}.", "{a} divided by {b} is {r}."])]
ARITHMETIC_ASKS = ["what is {a} {op} {b}?", "What's {a} {op} {b}?", "Calculate {a} {op} {b}.",
                   "can you compute {a} {op} {b}?", "How much is {a} {op} {b}?", "{a} {op} {b} = ?",
                   "Please work out {a} {op} {b}.", "what's {a} {op} {b}", "Quick question: {a} {op} {b}?"]
ARITHMETIC_ANSWERS = ["{a} {word} {b} is {r}.", "The answer is {r}.", "It's {r}.", "{a} {word} {b} = {r}."]


def _operands(rng: random.Random, symbol: str) -> tuple[int, int]:
    if symbol == "/":
        divisor = rng.randint(2, 25)
        return divisor * rng.randint(2, 40), divisor  # whole quotients: the answer reads as the tool's number
    if symbol == "*":
        return rng.randint(2, 99), rng.randint(2, 30)
    return rng.randint(1, 999), rng.randint(1, 999)


def arithmetic(rng: random.Random) -> Exchange:
    symbol, words, _ = rng.choice(OPERATIONS)
    a, b = _operands(rng, symbol)
    spoken = rng.choice(words)
    expression = f"{a} {symbol} {b}"
    result = calculate(expression)
    answer = pick(rng, ARITHMETIC_ANSWERS, a=a, b=b, r=number_text(result),
                   word=spoken if spoken.isalpha() or " " in spoken else symbol)
    return Exchange([say("user", pick(rng, ARITHMETIC_ASKS, a=a, b=b, op=spoken)),
                     call("calculator", {"expression": expression}),
                     say("tool", json.dumps({"result": result})),
                     say("assistant", answer)], needs_tools=True)


CITY_ZONES = {"Paris": "Europe/Paris", "London": "Europe/London", "Tokyo": "Asia/Tokyo",
              "New York": "America/New_York", "Sydney": "Australia/Sydney", "Berlin": "Europe/Berlin",
              "Los Angeles": "America/Los_Angeles", "Mumbai": "Asia/Kolkata", "Cairo": "Africa/Cairo",
              "Toronto": "America/Toronto", "Seoul": "Asia/Seoul", "Madrid": "Europe/Madrid"}
LOCAL_ZONES = ["Europe/Paris", "America/New_York", "Asia/Tokyo", "Europe/London", "America/Chicago"]
TIME_ASKS = ["what time is it?", "What time is it?", "What's the time?", "Do you know what time it is?",
             "Tell me the time, please.", "time?", "Can you check the time?", "What time is it now?"]
CITY_TIME_ASKS = ["What time is it in {city}?", "what's the time in {city}?", "Tell me the time in {city}.",
                  "Is it late in {city} right now?", "What is the local time in {city}?"]
DATE_ASKS = ["What's the date today?", "What day is it today?", "what is today's date?", "Which day is it?"]


def clock(rng: random.Random) -> Exchange:
    moment = datetime(2024, 1, 1) + timedelta(days=rng.randint(0, 730), minutes=rng.randint(0, 1439),
                                              seconds=rng.randint(0, 59))
    kind = rng.random()
    if kind < 0.35:
        city = rng.choice(sorted(CITY_ZONES))
        zone = CITY_ZONES[city]
        arguments: dict[str, Any] = {"timezone": zone}
        request = pick(rng, CITY_TIME_ASKS, city=city)
    else:
        zone, city, arguments = rng.choice(LOCAL_ZONES), None, {}
        request = rng.choice(DATE_ASKS if kind > 0.8 else TIME_ASKS)
    local = moment.replace(tzinfo=ZoneInfo(zone))
    # The shape chat.tools' current_time returns: an ISO time and the zone (the name asked for, else the abbreviation).
    result = {"time": local.isoformat(timespec="seconds"), "timezone": zone if arguments else str(local.tzname())}
    clock_text = local.strftime("%H:%M")
    date_text = f"{local.strftime('%A')}, {local.day} {local.strftime('%B %Y')}"
    if request in DATE_ASKS:
        answer = rng.choice([f"Today is {date_text}.", f"It's {date_text}."])
    elif city:
        answer = rng.choice([f"It is {clock_text} in {city}.", f"In {city} it's {clock_text} right now.",
                             f"The local time in {city} is {clock_text}."])
    else:
        answer = rng.choice([f"It's {clock_text}.", f"The time is {clock_text}.", f"It is {clock_text} now.",
                             f"It's {clock_text} on {date_text}."])
    return Exchange([say("user", request), call("current_time", arguments),
                     say("tool", json.dumps(result)), say("assistant", answer)], needs_tools=True)


UNDOABLE = [("Can you book me a flight to Rome?", "book flights"), ("Please order a pizza for me.", "order food"),
            ("Send an email to my boss.", "send emails"), ("What's the weather like today?", "check the weather"),
            ("Play some music, please.", "play music"), ("Turn off the lights.", "control your lights"),
            ("Set an alarm for 7 AM.", "set alarms"), ("Search the web for cat videos.", "search the web"),
            ("Call my mom.", "make phone calls"), ("Translate this page for me.", "translate web pages")]
UNDOABLE_ANSWERS = ["Sorry, I can't {action}. I can do arithmetic with my calculator and tell you the time.",
                    "I'm not able to {action} here. My tools only calculate and check the time.",
                    "I can't {action}, but I can help with calculations or tell you the time."]


def no_tool_fits(rng: random.Random) -> Exchange:
    request, action = rng.choice(UNDOABLE)
    return Exchange([say("user", request), say("assistant", pick(rng, UNDOABLE_ANSWERS, action=action))])


# ---------------------------------------------------------------------------------------------- conversations

def make_conversation(rng: random.Random) -> Conversation:
    """One to six exchanges; tools are offered to 70% of conversations, as `--enable-tools` would."""
    with_tools = rng.random() < TOOLS_OFFERED_SHARE
    system: str | None = None
    exchanges: list[Exchange] = []
    opening = rng.random()
    if opening < 0.2:
        system, exchanges = note_system(rng)
    elif opening < 0.35:
        system, exchanges = instruction_system(rng)
    elif with_tools and rng.random() < 0.15:
        system = rng.choice(["You are a helpful assistant.", "You are a helpful assistant with tools."])
    kinds: list[Callable[[random.Random], Exchange]] = [small_talk]
    if with_tools:
        # Arithmetic is 3 in 6 exchanges: its calls teach copying numbers from the user's message, the skill a
        # small model learns last (benchmarks/README.md, "The chat quickstart").
        kinds = [small_talk, arithmetic, arithmetic, arithmetic, clock, no_tool_fits]
    while not exchanges or (len(exchanges) < MAX_EXCHANGES and rng.random() < MORE_EXCHANGES):
        exchanges.append(rng.choice(kinds)(rng))
    messages = [say("system", system)] if system else []
    for exchange in exchanges:
        messages += exchange.messages
    return Conversation(messages, [dict(tool) for tool in TOOL_DEFINITIONS] if with_tools else None)


def generate_conversations(count: int, seed: int = 0) -> Iterator[Conversation]:
    rng = random.Random(f"synthetic-chat/{seed}")
    for _ in range(count):
        yield make_conversation(rng)


def write_conversations(path: Path, count: int, seed: int = 0) -> None:
    """A JSONL file of {"messages", "tools"} records: held-out conversations for `cogni test-model --chat-eval`."""
    lines = [json.dumps({"messages": conversation.messages, "tools": conversation.tools}, ensure_ascii=False)
             for conversation in generate_conversations(count, seed)]
    atomic_write_text(path, "\n".join(lines) + "\n")
