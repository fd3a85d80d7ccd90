"""The ChatML + tools format of `chat/format.py`, as a Jinja chat template for transformers and llama.cpp.

This is the one place the format is written a second time, because other tools can only run Jinja.
`tests/interop/test_hf_dir.py` renders conversations with both and requires identical strings, so the
two cannot drift apart. Every literal is emitted from an expression tag and every statement tag trims
the whitespace around it, so the template's own layout never leaks into the output. Tool call arguments
given as a JSON string (the OpenAI wire format) are written as given, which matches our renderer when
the string is compact `json.dumps` output; absent, empty or null arguments are written `{}`, as there.
"""

CHAT_TEMPLATE = """\
{%- set ns = namespace(system=none, first=0) -%}
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set ns.system = messages[0]['content'] if messages[0]['content'] else '' -%}
    {%- set ns.first = 1 -%}
{%- endif -%}
{%- if ns.system is not none or tools -%}
    {{- '<|im_start|>system\\n' -}}
    {%- if ns.system -%}
        {{- ns.system -}}
        {%- if tools -%}{{- '\\n' -}}{%- endif -%}
    {%- endif -%}
    {%- if tools -%}
        {{- '<tools>' -}}
        {%- for tool in tools -%}
            {{- '\\n' -}}
            {%- if tool['type'] == 'function' and tool['function'] is mapping -%}
                {{- tool | tojson -}}
            {%- else -%}
                {{- {'type': 'function', 'function': tool} | tojson -}}
            {%- endif -%}
        {%- endfor -%}
        {{- '\\n</tools>' -}}
    {%- endif -%}
    {{- '<|im_end|>\\n' -}}
{%- endif -%}
{%- for message in messages[ns.first:] -%}
    {%- set content = message['content'] if message['content'] else '' -%}
    {%- if message['role'] == 'user' -%}
        {{- '<|im_start|>user\\n' ~ content ~ '<|im_end|>\\n' -}}
    {%- elif message['role'] == 'assistant' -%}
        {{- '<|im_start|>assistant\\n' ~ content -}}
        {%- if message['tool_calls'] -%}
            {%- for tool_call in message['tool_calls'] -%}
                {%- set call = tool_call['function'] if tool_call['function'] is mapping else tool_call -%}
                {%- if content or not loop.first -%}{{- '\\n' -}}{%- endif -%}
                {{- '<tool_call>\\n{"name": ' ~ (call['name'] | tojson) ~ ', "arguments": ' -}}
                {%- if call['arguments'] is string -%}
                    {{- call['arguments'] if call['arguments'] | trim else '{}' -}}
                {%- elif call['arguments'] is mapping -%}
                    {{- call['arguments'] | tojson -}}
                {%- else -%}
                    {{- '{}' -}}
                {%- endif -%}
                {{- '}\\n</tool_call>' -}}
            {%- endfor -%}
        {%- endif -%}
        {{- '<|im_end|>\\n' -}}
    {%- elif message['role'] == 'tool' -%}
        {{- '<|im_start|>tool\\n<tool_response>\\n' ~ content ~ '\\n</tool_response><|im_end|>\\n' -}}
    {%- else -%}
        {{- raise_exception('unsupported role ' ~ message['role'] ~ ': system first, then user/assistant/tool') -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\\n' -}}
{%- endif -%}
"""
