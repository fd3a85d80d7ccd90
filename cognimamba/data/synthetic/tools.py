"""Seeded synthetic tool-calling conversations: a small model's first lessons in when and how to call a tool.

Each conversation offers one to three tools. Most ask for something a tool does (weather, arithmetic, unit
and currency conversion, web search, reminders, time, stock prices, email), phrased many ways, and the
assistant calls the tool with the right arguments, reads the result and answers from it. Some first ask
for a missing argument; some continue with thanks or a second request. About a quarter ask for something
no offered tool fits (small talk, facts, an action it cannot do), and the assistant answers in plain text.

The same (count, seed) always gives the same conversations. `cogni prepare synthetic-tools --count N`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cognimamba.data.conversation import Conversation
from cognimamba.data.synthetic.common import Message, call, exchange, number_text, say

NAME = "synthetic-tools"
GENERATOR_VERSION = 1  # bump when the output for a (count, seed) changes, so cached data dirs are rebuilt


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"name": name, "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required}}


def _string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _number(description: str) -> dict[str, Any]:
    return {"type": "number", "description": description}


TOOLS: dict[str, dict[str, Any]] = {tool["name"]: tool for tool in [
    _tool("get_weather", "Get the current weather for a location",
          {"location": _string("City name, e.g. Paris"),
           "unit": _string("Temperature unit", enum=["celsius", "fahrenheit"])}, ["location"]),
    _tool("calculate", "Evaluate an arithmetic expression",
          {"expression": _string("The expression, e.g. 12 * 7")}, ["expression"]),
    _tool("convert_units", "Convert a value from one unit to another",
          {"value": _number("The value to convert"), "from_unit": _string("Unit of the value"),
           "to_unit": _string("Unit to convert to")}, ["value", "from_unit", "to_unit"]),
    _tool("search_web", "Search the web and return the top results",
          {"query": _string("What to search for")}, ["query"]),
    _tool("set_reminder", "Set a reminder for the user",
          {"message": _string("What to be reminded of"), "time": _string("When, e.g. 7:00 AM")},
          ["message", "time"]),
    _tool("convert_currency", "Convert an amount of money between currencies",
          {"amount": _number("The amount"), "from_currency": _string("Currency code, e.g. USD"),
           "to_currency": _string("Currency code, e.g. EUR")}, ["amount", "from_currency", "to_currency"]),
    _tool("get_current_time", "Get the current local time in a city",
          {"city": _string("City name")}, ["city"]),
    _tool("get_stock_price", "Get the latest stock price for a ticker symbol",
          {"symbol": _string("Ticker symbol, e.g. AAPL")}, ["symbol"]),
    _tool("send_email", "Send an email",
          {"to": _string("Recipient address"), "subject": _string("Subject line"), "body": _string("Message text")},
          ["to", "subject", "body"]),
]}

# What each tool lets the assistant do, for "I can't do that, but I can ..." answers.
CAPABILITIES = {
    "get_weather": "checking the weather", "calculate": "doing calculations", "convert_units": "converting units",
    "search_web": "searching the web", "set_reminder": "setting reminders",
    "convert_currency": "converting currencies", "get_current_time": "telling the time in a city",
    "get_stock_price": "looking up stock prices", "send_email": "sending emails",
}

CITIES = ["Paris", "London", "Tokyo", "New York", "Berlin", "Sydney", "Cairo", "Toronto", "Mumbai", "Madrid", "Rome",
          "Seoul", "Lima", "Oslo", "Nairobi", "Chicago", "Lisbon", "Dublin", "Mexico City", "Bangkok", "Vienna",
          "Buenos Aires", "Cape Town", "Istanbul", "Amsterdam", "Singapore", "Denver", "Helsinki"]
CONDITIONS = ["sunny", "cloudy", "partly cloudy", "rainy", "windy", "foggy", "snowy", "clear"]
SYSTEM_PROMPTS = ["You are a helpful assistant.", "You are a helpful assistant with access to tools. Use them when "
                  "they help.", "You are a friendly assistant. Call a tool only when it is needed."]


@dataclass
class ToolTurn:
    """One tool use: what the user asked, the call, the result, and the answer built from it."""

    request: str
    arguments: dict[str, Any]
    result: dict[str, Any]
    answer: str
    missing_question: str | None = None  # asked first when the request leaves out an argument
    missing_reply: str | None = None
    vague_request: str | None = None


def _weather(rng: random.Random) -> ToolTurn:
    city = rng.choice(CITIES)
    fahrenheit = rng.random() < 0.25
    celsius = rng.randint(-8, 36)
    temperature = round(celsius * 9 / 5 + 32) if fahrenheit else celsius
    symbol = "°F" if fahrenheit else "°C"
    condition = rng.choice(CONDITIONS)
    humidity = rng.randint(20, 95)
    request = rng.choice([
        "What's the weather like in {city}?", "Is it raining in {city} right now?", "How warm is it in {city} today?",
        "Can you check the weather in {city} for me?", "I'm heading to {city}. What's the weather there?",
        "weather in {city}?", "Tell me the current weather in {city}.", "Do I need a jacket in {city} today?",
    ]).format(city=city)
    arguments: dict[str, Any] = {"location": city}
    if fahrenheit:
        request = request.rstrip("?.") + rng.choice([" in Fahrenheit?", ", in fahrenheit please."])
        arguments["unit"] = "fahrenheit"
    result = {"location": city, "temperature": temperature, "unit": "fahrenheit" if fahrenheit else "celsius",
              "condition": condition, "humidity": humidity}
    answer = rng.choice([
        "It is currently {t}{s} and {c} in {city}.",
        "In {city} it's {c} with a temperature of {t}{s}. Humidity is {h}%.",
        "Right now {city} is {c}, {t}{s}.",
        "The weather in {city}: {c}, {t}{s}, humidity {h}%.",
    ]).format(t=temperature, s=symbol, c=condition, city=city, h=humidity)
    if condition == "rainy":
        answer += " You may want an umbrella."
    elif condition == "snowy" or temperature <= (41 if fahrenheit else 5):
        answer += " Dress warmly!"
    turn = ToolTurn(request, arguments, result, answer)
    if not fahrenheit and rng.random() < 0.2:
        turn.vague_request = rng.choice(["What's the weather like?", "Can you check the weather for me?",
                                         "I'd like a weather report."])
        turn.missing_question = rng.choice(["Sure! Which city would you like the weather for?",
                                            "Of course. For which location?"])
        turn.missing_reply = rng.choice(["{city}.", "In {city}, please.", "{city}"]).format(city=city)
    return turn


OPERATIONS = [("+", ["plus", "added to"]), ("-", ["minus"]), ("*", ["times", "multiplied by"]), ("/", ["divided by"])]


def _calculate(rng: random.Random) -> ToolTurn:
    if rng.random() < 0.15:
        percent, base = rng.choice([5, 10, 15, 20, 25, 30, 50, 75]), rng.randint(2, 400) * 4
        value = base * percent / 100
        request = rng.choice(["What is {p}% of {n}?", "Calculate {p} percent of {n}.",
                              "How much is {p}% of {n}?"]).format(p=percent, n=base)
        expression = f"{base} * {percent} / 100"
        said = f"{percent}% of {base}"
    else:
        symbol, words = rng.choice(OPERATIONS)
        a, b = rng.randint(2, 999), rng.randint(2, 99)
        if symbol == "/":
            a = b * rng.randint(2, 60)
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[symbol]
        word = rng.choice(words)
        expression = f"{a} {symbol} {b}"
        request = rng.choice([
            "What is {a} {w} {b}?", "Calculate {a} {s} {b}", "Can you work out {a}{s}{b} for me?",
            "How much is {a} {w} {b}?", "I need the result of {a} {s} {b}.", "{a} {s} {b} = ?",
            "Quick math: what's {a} {w} {b}?",
        ]).format(a=a, b=b, w=word, s=symbol)
        said = f"{a} {word} {b}"
    result = {"result": value}
    answer = rng.choice(["{said} is {v}.", "The result is {v}.", "That comes to {v}.", "{said} equals {v}."]).format(
        said=said, v=number_text(value))
    return ToolTurn(request, {"expression": expression}, result, answer[0].upper() + answer[1:])


UNITS = [("kilometers", "miles", lambda x: x * 0.621371), ("miles", "kilometers", lambda x: x * 1.609344),
         ("kilograms", "pounds", lambda x: x * 2.20462), ("pounds", "kilograms", lambda x: x * 0.453592),
         ("meters", "feet", lambda x: x * 3.28084), ("feet", "meters", lambda x: x * 0.3048),
         ("liters", "gallons", lambda x: x * 0.264172), ("inches", "centimeters", lambda x: x * 2.54),
         ("celsius", "fahrenheit", lambda x: x * 9 / 5 + 32), ("fahrenheit", "celsius", lambda x: (x - 32) * 5 / 9)]


def _convert_units(rng: random.Random) -> ToolTurn:
    source, target, convert = rng.choice(UNITS)
    value = rng.choice([rng.randint(1, 300), rng.randint(1, 40) * 5, round(rng.uniform(0.5, 50), 1)])
    converted = round(convert(value), 2)
    request = rng.choice(["How many {t} is {v} {f}?", "Convert {v} {f} to {t}.", "What's {v} {f} in {t}?",
                          "{v} {f} to {t}, please.", "Can you convert {v} {f} into {t}?"]).format(
        v=number_text(value), f=source, t=target)
    result = {"value": converted, "unit": target}
    answer = rng.choice(["{v} {f} is about {c} {t}.", "That's {c} {t}.", "{v} {f} equals roughly {c} {t}."]).format(
        v=number_text(value), f=source, c=number_text(converted), t=target)
    return ToolTurn(request, {"value": value, "from_unit": source, "to_unit": target}, result, answer)


SEARCH_TOPICS = [
    ("the tallest mountain in the world", "Mount Everest", "Mount Everest is the highest mountain above sea level, "
     "at 8,849 metres."),
    ("who painted the Mona Lisa", "Mona Lisa - Encyclopedia", "The Mona Lisa was painted by Leonardo da Vinci in the "
     "early 1500s."),
    ("how long do cats sleep", "Cat sleep facts", "Adult cats sleep between 12 and 16 hours a day."),
    ("the speed of light", "Speed of light", "Light travels at about 299,792 kilometres per second in a vacuum."),
    ("when the first moon landing was", "Apollo 11", "Apollo 11 landed on the Moon on July 20, 1969."),
    ("the largest ocean", "Pacific Ocean", "The Pacific is the largest and deepest of Earth's oceans."),
    ("how to boil an egg", "Boiling eggs", "Place the egg in boiling water for 7 minutes for a firm yolk."),
    ("the population of Canada", "Canada population", "Canada has a population of about 40 million people."),
    ("who wrote Pride and Prejudice", "Pride and Prejudice", "Pride and Prejudice is an 1813 novel by Jane Austen."),
    ("the boiling point of water", "Boiling point", "Water boils at 100 degrees Celsius at sea level."),
    ("the longest river in Africa", "Nile", "The Nile, about 6,650 km long, is the longest river in Africa."),
    ("how many bones are in the human body", "Human skeleton", "An adult human body has 206 bones."),
    ("good houseplants for beginners", "Easy houseplants", "Snake plants, pothos and spider plants are easy to keep."),
    ("the inventor of the telephone", "Telephone history", "Alexander Graham Bell was granted the first telephone "
     "patent in 1876."),
]


def _search(rng: random.Random) -> ToolTurn:
    topic, title, snippet = rng.choice(SEARCH_TOPICS)
    request = rng.choice(["Search the web for {q}.", "Can you look up {q}?", "Find me information about {q}.",
                          "Please search online: {q}", "Look up {q} for me."]).format(q=topic)
    result = {"results": [{"title": title, "snippet": snippet}]}
    answer = rng.choice(["Here's what I found: {s}", "According to the search results: {s}", "{s}"]).format(s=snippet)
    return ToolTurn(request, {"query": topic}, result, answer)


TASKS = ["call mom", "buy milk", "water the plants", "take my medicine", "submit the report", "walk the dog",
         "book a dentist appointment", "pay the electricity bill", "pick up the kids", "stretch", "check the oven"]
TIMES = ["7:00 AM", "8:30 PM", "9:15 AM", "noon", "6:00 PM", "tomorrow at 9:00 AM", "5:45 PM", "10:00 PM"]


def _reminder(rng: random.Random) -> ToolTurn:
    task, time = rng.choice(TASKS), rng.choice(TIMES)
    request = rng.choice(["Remind me to {task} at {time}.", "Set a reminder for {time}: {task}.",
                          "Can you remind me to {task} at {time}?", "Please set a reminder to {task}, {time}.",
                          "Don't let me forget to {task} at {time}."]).format(task=task, time=time)
    result = {"status": "scheduled", "reminder_id": rng.randint(100, 999), "time": time}
    answer = rng.choice(["Done! I'll remind you to {task} at {time}.", "Your reminder to {task} is set for {time}.",
                         "Reminder set: {task}, {time}."]).format(task=task, time=time)
    turn = ToolTurn(request, {"message": task, "time": time}, result, answer)
    if rng.random() < 0.2:
        turn.vague_request = f"Can you remind me to {task}?"
        turn.missing_question = rng.choice(["Sure! What time should I remind you?", "Of course. When?"])
        turn.missing_reply = rng.choice(["At {time}.", "{time}", "{time}, please."]).format(time=time)
    return turn


RATES_TO_USD = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "JPY": 0.0067, "CAD": 0.73, "AUD": 0.66, "CHF": 1.12,
                "INR": 0.012}


def _currency(rng: random.Random) -> ToolTurn:
    source, target = rng.sample(sorted(RATES_TO_USD), 2)
    amount = rng.choice([rng.randint(1, 50) * 10, rng.randint(5, 2000)])
    converted = round(amount * RATES_TO_USD[source] / RATES_TO_USD[target], 2)
    request = rng.choice(["How much is {a} {f} in {t}?", "Convert {a} {f} to {t}.",
                          "I have {a} {f}. How many {t} is that?", "What's {a} {f} worth in {t}?"]).format(
        a=amount, f=source, t=target)
    result = {"converted_amount": converted, "from_currency": source, "to_currency": target}
    answer = rng.choice(["{a} {f} is about {c} {t}.", "That's roughly {c} {t}.",
                         "{a} {f} converts to {c} {t}."]).format(a=amount, f=source, c=number_text(converted),
                                                                  t=target)
    return ToolTurn(request, {"amount": amount, "from_currency": source, "to_currency": target}, result, answer)


def _time(rng: random.Random) -> ToolTurn:
    city = rng.choice(CITIES)
    clock = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
    request = rng.choice(["What time is it in {c}?", "Tell me the current time in {c}.",
                          "Do you know what time it is in {c} now?", "Current time in {c}?"]).format(c=city)
    answer = rng.choice(["It's {t} in {c} right now.", "The local time in {c} is {t}."]).format(t=clock, c=city)
    return ToolTurn(request, {"city": city}, {"city": city, "time": clock}, answer)


COMPANIES = {"Apple": "AAPL", "Microsoft": "MSFT", "Alphabet": "GOOGL", "Amazon": "AMZN", "Tesla": "TSLA",
             "Nvidia": "NVDA", "Netflix": "NFLX", "IBM": "IBM"}


def _stock(rng: random.Random) -> ToolTurn:
    company = rng.choice(sorted(COMPANIES))
    symbol = COMPANIES[company]
    price = round(rng.uniform(20, 900), 2)
    request = rng.choice(["What's the stock price of {c}?", "How is {s} trading today?",
                          "Check the current price of {c} shares.", "Give me the latest {s} quote."]).format(
        c=company, s=symbol)
    answer = rng.choice(["{c} ({s}) is trading at ${p}.", "The latest price for {s} is ${p}."]).format(
        c=company, s=symbol, p=f"{price:.2f}")
    return ToolTurn(request, {"symbol": symbol}, {"symbol": symbol, "price": price, "currency": "USD"}, answer)


PEOPLE = ["alice@example.com", "bob@example.com", "team@example.org", "sam.lee@example.net", "hr@example.com"]
EMAILS = [("Meeting moved", "the meeting is moved to 3 PM"), ("Running late", "I will be 10 minutes late"),
          ("Lunch tomorrow", "are you free for lunch tomorrow"), ("Report ready", "the report is ready for review"),
          ("Thank you", "thank you for your help this week")]


def _email(rng: random.Random) -> ToolTurn:
    to = rng.choice(PEOPLE)
    subject, body = rng.choice(EMAILS)
    request = rng.choice(["Send an email to {to} with the subject '{s}' saying {b}.",
                          "Email {to}: subject \"{s}\", message: {b}.",
                          "Please write to {to}, subject {s}, and tell them {b}."]).format(to=to, s=subject, b=body)
    body_text = body[0].upper() + body[1:] + "."
    answer = rng.choice(["Your email to {to} has been sent.", "Done, I sent \"{s}\" to {to}."]).format(to=to, s=subject)
    return ToolTurn(request, {"to": to, "subject": subject, "body": body_text}, {"status": "sent"}, answer)


SCENARIOS: dict[str, Callable[[random.Random], ToolTurn]] = {
    "get_weather": _weather, "calculate": _calculate, "convert_units": _convert_units, "search_web": _search,
    "set_reminder": _reminder, "convert_currency": _currency, "get_current_time": _time,
    "get_stock_price": _stock, "send_email": _email,
}

SMALL_TALK = [("Hi there!", "Hello! How can I help you today?"),
              ("Hello", "Hi! What can I do for you?"),
              ("How are you?", "I'm doing well, thanks for asking! How can I help?"),
              ("Good morning!", "Good morning! What can I help you with?"),
              ("Who are you?", "I'm a helpful assistant. Ask me anything, and I'll do my best to help."),
              ("Tell me a joke.", "Why did the scarecrow win an award? Because he was outstanding in his field!")]
FACTS = [("What is the capital of France?", "The capital of France is Paris."),
         ("How many days are in a week?", "There are seven days in a week."),
         ("What color is the sky on a clear day?", "On a clear day the sky is blue."),
         ("What do bees make?", "Bees make honey, and they also produce beeswax."),
         ("How many legs does a spider have?", "A spider has eight legs."),
         ("What is the opposite of hot?", "The opposite of hot is cold."),
         ("Which planet is closest to the sun?", "Mercury is the planet closest to the sun."),
         ("What is H2O?", "H2O is the chemical formula for water: two hydrogen atoms and one oxygen atom."),
         ("Give me a synonym for happy.", "A synonym for happy is joyful."),
         ("Write a haiku about rain.", "Soft rain on the roof,\nthe garden drinks in silence,\npuddles hold the sky.")]
ACTIONS = [("Can you order a pizza for me?", "order food"), ("Please book me a flight to Rome.", "book flights"),
           ("Can you turn off the lights in my kitchen?", "control devices in your home"),
           ("Call a taxi for me, please.", "call a taxi"), ("Can you play some music?", "play music"),
           ("Please buy me a new phone charger.", "make purchases")]
THANKS = [("Thanks!", "You're welcome!"), ("Thank you so much.", "Happy to help! Anything else?"),
          ("Great, thanks.", "You're welcome. Let me know if you need anything else.")]


def _capability_list(tools: list[str]) -> str:
    phrases = [CAPABILITIES[name] for name in tools]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _plain_turn(rng: random.Random, offered: list[str]) -> list[Message]:
    """A request no offered tool fits, answered in plain text."""
    kind = rng.random()
    if kind < 0.3:
        question, answer = rng.choice(SMALL_TALK)
    elif kind < 0.7 or not offered:
        question, answer = rng.choice(FACTS)
    else:
        question, action = rng.choice(ACTIONS)
        answer = (f"I'm sorry, but I can't {action}. I can help with {_capability_list(offered)}, "
                  "if that is useful.")
    return exchange(question, answer)


def _tool_turns(rng: random.Random, name: str) -> list[Message]:
    turn = SCENARIOS[name](rng)
    messages: list[Message] = []
    if turn.missing_question and turn.vague_request and turn.missing_reply:
        messages += [*exchange(turn.vague_request, turn.missing_question), say("user", turn.missing_reply)]
    else:
        messages.append(say("user", turn.request))
    messages += [call(name, turn.arguments), say("tool", json.dumps(turn.result, ensure_ascii=False)),
                 say("assistant", turn.answer)]
    return messages


def make_conversation(rng: random.Random) -> Conversation:
    names = sorted(TOOLS)
    offered = rng.sample(names, rng.choice([1, 1, 2, 2, 3]))
    messages: list[Message] = []
    if rng.random() < 0.4:
        messages.append(say("system", rng.choice(SYSTEM_PROMPTS)))
    if rng.random() < 0.25:
        if rng.random() < 0.15:
            offered = []
        messages += _plain_turn(rng, offered)
        if offered and rng.random() < 0.3:
            messages += _tool_turns(rng, rng.choice(offered))
    else:
        messages += _tool_turns(rng, offered[0])
        follow = rng.random()
        if follow < 0.25:
            question, answer = rng.choice(THANKS)
            messages += exchange(question, answer)
        elif follow < 0.45:
            messages += _tool_turns(rng, rng.choice(offered))
        elif follow < 0.55:
            messages += _plain_turn(rng, offered)
    rng.shuffle(offered)
    return Conversation(messages, [TOOLS[name] for name in offered] or None)


def generate_conversations(count: int, seed: int = 0) -> Iterator[Conversation]:
    rng = random.Random(f"synthetic-tools/{seed}")
    for _ in range(count):
        yield make_conversation(rng)
