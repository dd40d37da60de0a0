"""Agent rows shared by the tokenisation and batching tests (importable as `agent_rows`: tests/ is on the path)."""

# A ChatML template that supports tools, written for this test: the schemas in a system turn, each call as
# <call>NAME ARGS-JSON</call>, tool results as the `tool` role.
TOOLS_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools:\n{% for t in tools %}"
    "{{ t | tojson }}\n{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content %}{{ m.content }}{% endif %}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<call>{{ c.function.name }} {{ c.function.arguments | tojson }}"
    "</call>{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CALC = {"type": "function", "function": {"name": "calculator", "parameters": {
    "type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}


def call(cid, expr):
    return {"id": cid, "type": "function", "function": {"name": "calculator",
                                                        "arguments": f'{{"expression": "{expr}"}}'}}


# Three assistant turns: a call, a second call, the answer. The prompt holds the first turn and its result.
PROMPT = [{"role": "user", "content": "What is (2+3)*4?"},
          {"role": "assistant", "content": "", "tool_calls": [call("c1", "2+3")]},
          {"role": "tool", "tool_call_id": "c1", "content": "5"}]
CHOSEN = [{"role": "assistant", "content": "", "tool_calls": [call("c2", "5*4")]},
          {"role": "tool", "tool_call_id": "c2", "content": "20"},
          {"role": "assistant", "content": "It is 20."}]
REJECTED = [{"role": "assistant", "content": "It is 14."}]
ROW = {"prompt": PROMPT, "chosen": CHOSEN, "rejected": REJECTED, "tools": [CALC]}
